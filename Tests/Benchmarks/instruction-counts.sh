#!/usr/bin/env bash
# Instructions per tryAcquire()+release(): ours with the ledger off and on, and the plain Mutex+Deque
# design, counted by callgrind (repeatable whatever the machine's load). Needs valgrind
# (apt-get install valgrind). Usage: bash Tests/Benchmarks/instruction-counts.sh [OPS]
set -euo pipefail
cd "$(dirname "$0")/../.."
ops=${1:-100000}
swift build -c release --product futurelock-icount >/dev/null
bin="$(swift build -c release --show-bin-path)/futurelock-icount"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for variant in off on plain; do
    valgrind --tool=callgrind --callgrind-out-file="$out/$variant.out" --toggle-collect='*measuredLoop*' \
        "$bin" "$variant" "$ops" >/dev/null 2>"$out/$variant.log"
    total=$(sed -n 's/^summary: *\([0-9]*\).*/\1/p' "$out/$variant.out")
    [ -n "$total" ] || { echo "callgrind failed for $variant:" >&2; cat "$out/$variant.log" >&2; exit 1; }
    echo "$variant $total"
done | awk -v ops="$ops" '
    { name[NR] = $1; per[NR] = $2 / ops }
    END {
        printf "instructions per tryAcquire()+release() (%d operations, callgrind)\n", ops
        label["off"] = "ours, ledger off"; label["on"] = "ours, ledger on"; label["plain"] = "plain Mutex+Deque"
        for (i = 1; i <= NR; i++) printf "    %-20s %8.1f   %.2fx plain\n", label[name[i]], per[i], per[i] / per[3]
    }'
