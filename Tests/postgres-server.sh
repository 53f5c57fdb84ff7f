# Sourced by Tests/run-tests.sh: a throw-away PostgreSQL server for the FuturelockPostgres tests, on
# loopback, in a temporary data directory, stopped when the test command exits (also on failure).
# Exports FUTURELOCK_PG_HOST, FUTURELOCK_PG_PORT, FUTURELOCK_PG_USER and, for tests that stop and
# start the server, FUTURELOCK_PG_CTL (a command: `$FUTURELOCK_PG_CTL stop|start`).

postgres_bin() {
    ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1
}

start_postgres() {
    local bin
    bin=$(postgres_bin)
    if [ -z "$bin" ]; then
        echo "== installing postgresql"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
        bin=$(postgres_bin)
    fi
    # The server refuses to run as root: it runs as the `postgres` user the package created.
    local run=(runuser -u postgres --)
    [ "$(id -u)" -eq 0 ] || run=()
    FUTURELOCK_PG_DIR=$(mktemp -d /tmp/futurelock-pg.XXXXXX)
    chmod 755 "$FUTURELOCK_PG_DIR"
    [ "$(id -u)" -eq 0 ] && chown postgres "$FUTURELOCK_PG_DIR"
    FUTURELOCK_PG_PORT=$(( 20000 + RANDOM % 20000 ))
    "${run[@]}" "$bin/initdb" -D "$FUTURELOCK_PG_DIR/data" -A trust -U futurelock >/dev/null
    FUTURELOCK_PG_CTL="${run[*]} $bin/pg_ctl -D $FUTURELOCK_PG_DIR/data -l $FUTURELOCK_PG_DIR/log -w -o '-p $FUTURELOCK_PG_PORT -k $FUTURELOCK_PG_DIR -c listen_addresses=127.0.0.1'"
    eval "$FUTURELOCK_PG_CTL start" >/dev/null
    export FUTURELOCK_PG_HOST=127.0.0.1 FUTURELOCK_PG_PORT FUTURELOCK_PG_USER=futurelock FUTURELOCK_PG_CTL FUTURELOCK_PG_DIR
    echo "== PostgreSQL $("$bin/postgres" --version | awk '{print $3}') on 127.0.0.1:$FUTURELOCK_PG_PORT ($FUTURELOCK_PG_DIR)"
}

stop_postgres() {
    [ -n "${FUTURELOCK_PG_CTL:-}" ] || return 0
    eval "$FUTURELOCK_PG_CTL stop -m immediate" >/dev/null 2>&1 || true
    rm -rf "$FUTURELOCK_PG_DIR"
}
