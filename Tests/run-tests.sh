#!/usr/bin/env bash
# Runs every test of the project on a fresh Debian machine: installs what the tests need (libdw for
# symbolication, Graphviz for SVG rendering), builds, and runs the whole suite (Swift Testing).
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
echo "== running tests"
# A hung test fails the run instead of eating the CI budget.
timeout 1800 swift test --skip-build
