#!/usr/bin/env bash
# Runs every test of the project on a fresh Debian machine: installs what the tests need (libdw for
# symbolication, Graphviz for SVG rendering, PostgreSQL for the FuturelockPostgres tests), builds, and
# runs the whole suite (Swift Testing).
# This is the README's test command, and .ci/run calls it verbatim.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
pkg-config --exists libdw 2>/dev/null || need+=(libdw-dev pkg-config)
command -v dot >/dev/null 2>&1 || need+=(graphviz)
if [ ${#need[@]} -gt 0 ]; then
    echo "== installing ${need[*]}"
    if [ "$(id -u)" -ne 0 ]; then
        echo "error: ${need[*]} missing and not running as root; install them with apt-get" >&2
        exit 1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

echo "== building (debug, with tests)"
swift build --build-tests
# A real PostgreSQL server on loopback for the FuturelockPostgres tests (installed if missing),
# stopped when this script ends, whether the tests pass or fail.
source Tests/postgres-server.sh
trap stop_postgres EXIT
start_postgres
echo "== running tests"
# A hung test fails the run instead of eating the CI budget.
timeout 1800 swift test --skip-build

# ThreadSanitizer pass: the library's tests (stress and model tests included), the reproducer gallery
# and the service-lifecycle tests again, built with the sanitizer in a build directory of their own
# (.build/debug is left alone). Any race fails the run. Tests/tsan-suppressions.txt may list reports
# that are not races, each with the reason. Not run under the sanitizer: the symbolication tests
# (they check exact inlining and line tables, which the instrumentation changes) and the CLI tests
# (they start the CLI as a child process, whose reports would surface only as an exit status).
# One test at a time: the sanitizer slows everything several times over, and the tests bounded by
# wall-clock time (the gallery's timeouts, outage recovery) need the cores to themselves; each test
# still runs its own concurrent tasks.
echo "== building tests under ThreadSanitizer (.build/tsan)"
swift build --build-tests --sanitize=thread --scratch-path .build/tsan
echo "== running tests under ThreadSanitizer"
tsan_targets='FuturelockTests|FuturelockReproducersTests|FuturelockServiceLifecycleTests'
tsan_log=.build/tsan/tsan-tests.log
TSAN_OPTIONS="halt_on_error=1 suppressions=$PWD/Tests/tsan-suppressions.txt" \
    timeout 1800 swift test --skip-build --no-parallel --sanitize=thread --scratch-path .build/tsan \
    --filter "^($tsan_targets)\." 2>&1 | tee "$tsan_log"
tsan_ran=$(sed -n 's/.*Test run with \([0-9][0-9]*\) tests\{0,1\} in .*/\1/p' "$tsan_log" | tail -n 1)
echo "== ThreadSanitizer: ${tsan_ran:-?} tests ran under TSan (${tsan_targets//|/, }), no race reported"
