import Futurelock

/// N4 — a permit passed from one child task to its sibling.
///
/// In a task group, one child acquires a permit and passes it to a sibling through a stream, then
/// finishes with nothing to return; the sibling uses the permit for a while and releases it. The
/// parent meanwhile acquires the same permit and waits. The child that acquired has finished, but the
/// runtime shows its result is empty — the permit is not parked there — so nothing is reported.
struct SiblingHandOff: NearMiss {
    let name = "sibling-hand-off"
    let form = "N4"
    let summary = "a child passes its permit to a sibling and finishes; the parent waits for the sibling"

    func run(ledger: Ledger) async throws {
        let lock = try Semaphore(name: "index-lock", permits: 1, ledger: ledger)
        let (passed, continuation) = AsyncStream.makeStream(of: Permit.self)
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                continuation.yield(try await lock.acquire())
                continuation.finish()
            }
            group.addTask {
                for await permit in passed {
                    try await Task.sleep(for: slowStep)
                    permit.release()
                }
            }
            while lock.availablePermits > 0 { try await Task.yieldUnlessCancelled() }
            try await lock.acquire().release()
            try await group.waitForAll()
        }
    }
}
