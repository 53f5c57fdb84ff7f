import Futurelock

/// N5 — a running child holds a permit for a while.
///
/// A task-group child acquires the permit and works with it; its parent, meanwhile, acquires the same
/// permit and waits. The runtime shows the child still running (suspended in its work, not finished),
/// so it will release: a wait, not a lock.
struct RunningChild: NearMiss {
    let name = "running-child"
    let form = "N5"
    let summary = "a task-group child holds a permit while it works; its parent waits for it"

    func run(ledger: Ledger) async throws {
        let lock = try Semaphore(name: "cache-lock", permits: 1, ledger: ledger)
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                let permit = try await lock.acquire()
                try await Task.sleep(for: slowStep)          // the child's work
                permit.release()
            }
            while lock.availablePermits > 0 { try await Task.yieldUnlessCancelled() }
            try await lock.acquire().release()
            try await group.waitForAll()
        }
    }
}
