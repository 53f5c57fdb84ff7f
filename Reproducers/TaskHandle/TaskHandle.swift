import Futurelock

/// F3 — an unstructured task handle.
///
/// A handler warms a connection in a background `Task {}` and keeps the handle, meaning to await it
/// later. The task checks out the pool's only connection and finishes; its result waits in the
/// handle. The handler checks out a connection itself first — and waits behind the lease its own
/// task's handle is holding.
///
/// A `Task {}` is not a structured child: the runtime does not link it to the handler, and whoever
/// holds its handle could take the result. So the finding is `suspected`, with the evidence that
/// relates the two and the grace period it waited.
///
/// Fixed: await the handle (and use its lease) before checking out again.
struct TaskHandle: Reproducer {
    let name = "task-handle"
    let form = "F3"
    let summary = "a `Task {}` returns a lease in a handle its creator awaits only after checking out again"
    let expectedKind: Finding.Kind? = .futurelock
    let expectedCertainty = Finding.Certainty.suspected
    let culpritFile = "TaskHandle.swift"

    func run(_ code: Code, ledger: Ledger) async throws {
        let pool = try ConnectionPool<FakeConnection>(name: "cache", capacity: 1, ledger: ledger,
                                                      factory: { FakeConnection() })
        if code == .annotated {
            try await TaskTree.scope("handler") { try await handle(pool, fixed: false) }
        } else {
            try await handle(pool, fixed: code == .fixed)
        }
        await pool.shutdown()
    }

    /// The code as written, with only the pool swapped.
    func handle(_ pool: ConnectionPool<FakeConnection>, fixed: Bool) async throws {
        let warmed = Signal()
        let warm = Task {
            let lease = try await pool.checkout()
            warmed.fire()
            return lease
        }
        await warmed.wait()
        if fixed {
            try await warm.value.release()
        }
        let lease = try await pool.checkout()
        lease.release()
        if !fixed { try await warm.value.release() }
    }
}
