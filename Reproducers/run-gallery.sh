#!/usr/bin/env bash
# The main job: builds the `futurelock` tool and runs the reproducer gallery under the watchdog,
# printing the real dumps of every futurelock form (see Docs/Reproducers).
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
pkg-config --exists libdw 2>/dev/null || need+=(libdw-dev pkg-config)
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "error: ${need[*]} missing and not running as root; install them with apt-get" >&2
        exit 1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

swift build --product futurelock
exec "$(swift build --show-bin-path)/futurelock" reproduce all "$@"
