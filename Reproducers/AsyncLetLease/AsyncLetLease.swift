import Futurelock

/// F2 — an `async let` lease that is never awaited.
///
/// A profile loader starts prefetching the avatar with `async let`, which checks out the only
/// connection of the pool and finishes. The loader then checks out a connection for the profile row
/// itself — and waits behind the lease that sits, unawaited, in its own `async let`.
///
/// Fixed: await the `async let` (and use or release its lease) before checking out again.
struct AsyncLetLease: Reproducer {
    let name = "async-let-lease"
    let form = "F2"
    let summary = "an unawaited `async let` holds the pool's lease; the parent checks out again"
    let expectedKind = Finding.Kind.futurelock
    let expectedCertainty = Finding.Certainty.certain
    let culpritFile = "AsyncLetLease.swift"

    func run(fixed: Bool, ledger: Ledger) async throws {
        let pool = try ConnectionPool<FakeConnection>(name: "postgres", capacity: 1, ledger: ledger,
                                                      factory: { FakeConnection() })
        let prefetched = Signal()
        try await TaskTree.scope("load-profile") {
            async let avatar = TaskTree.child("prefetch-avatar") {
                let lease = try await pool.checkout()
                prefetched.fire()
                return lease
            }
            await prefetched.wait()              // the loader does other work meanwhile
            if fixed {
                try await avatar.take().release()
            }
            let lease = try await pool.checkout()
            lease.release()
            if !fixed { try await avatar.take().release() }
        }
        await pool.shutdown()
    }
}

/// A stand-in for a database connection: what the pool hands out.
final class FakeConnection: Sendable {
    init() {}
}
