// Instruction counts of the permit path, for `valgrind --tool=callgrind`: counts do not move with
// the machine's load, so a regression shows up as a number. Valgrind cannot run a program that has
// started the Swift concurrency runtime's threads on this platform (it crashes in its own code at
// the first worker thread), so this runs the synchronous paths only, on the main thread, with no
// task ever created: `tryAcquire()`+`release()` with the ledger off and on, and the plain design's
// equivalent. One variant runs per process and its loop is one function, so callgrind collects it
// alone (the first iteration, with lazy set-up, runs before the measured call but inside the same
// function, so it is counted: over 100,000 operations it adds well under one instruction per op):
//
//   valgrind --tool=callgrind --callgrind-out-file=cg.out \
//       --toggle-collect='*measuredLoop*' futurelock-icount off|on|plain [OPS]
//
// `Tests/Benchmarks/instruction-counts.sh` runs that and prints instructions per operation.

import Futurelock
import PlainReference
#if canImport(Glibc)
import Glibc
#endif

@inline(never)
func measuredLoopOurs(_ semaphore: Futurelock.Semaphore, _ ops: Int) -> Int {
    var granted = 0
    for _ in 0..<ops {
        if let permit = semaphore.tryAcquire() {
            granted &+= 1
            permit.release()
        }
    }
    return granted
}

@inline(never)
func measuredLoopPlain(_ semaphore: PlainSemaphore, _ ops: Int) -> Int {
    var granted = 0
    for _ in 0..<ops {
        if semaphore.tryAcquire() {
            granted &+= 1
            semaphore.release()
        }
    }
    return granted
}

// Usage: futurelock-icount off|on|plain [OPS]. One variant per run, so the measured loop is the only
// code callgrind collects.
let arguments = Array(CommandLine.arguments.dropFirst())
let variant = arguments.first ?? "off"
let ops = arguments.dropFirst().first.flatMap { Int($0) } ?? 100_000
var granted = 0
switch variant {
case "off", "on":
    let semaphore = try Futurelock.Semaphore(name: "icount-\(variant)", permits: 1, ledger: variant == "on" ? Ledger() : .disabled)
    _ = measuredLoopOurs(semaphore, 1)  // first use outside the measured run: lazy set-up, first allocations
    granted = measuredLoopOurs(semaphore, ops)
case "plain":
    let semaphore = PlainSemaphore(permits: 1)
    _ = measuredLoopPlain(semaphore, 1)
    granted = measuredLoopPlain(semaphore, ops)
default:
    print("usage: futurelock-icount off|on|plain [OPS]")
    exit(2)
}
print("futurelock-icount: \(variant), \(ops) operations, \(granted) permits granted")
