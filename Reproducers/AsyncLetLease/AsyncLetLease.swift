import Futurelock

/// F2 — an `async let` lease that is never awaited.
///
/// A profile loader starts prefetching the avatar with `async let`, which checks out the only
/// connection of the pool and finishes. The loader then checks out a connection for the profile row
/// itself — and waits behind the lease that sits, unawaited, in its own `async let`.
///
/// The runtime shows the `async let` child finished with the lease alone in its result: `certain`.
///
/// Fixed: await the `async let` (and use or release its lease) before checking out again.
struct AsyncLetLease: Reproducer {
    let name = "async-let-lease"
    let form = "F2"
    let summary = "an unawaited `async let` holds the pool's lease; the parent checks out again"
    let expectedKind: Finding.Kind? = .futurelock
    let expectedCertainty = Finding.Certainty.certain
    let culpritFile = "AsyncLetLease.swift"

    func run(_ code: Code, ledger: Ledger) async throws {
        let pool = try ConnectionPool<FakeConnection>(name: "postgres", capacity: 1, ledger: ledger,
                                                      factory: { FakeConnection() })
        if code == .annotated {
            try await annotated(pool)
        } else {
            try await loadProfile(pool, fixed: code == .fixed)
        }
        await pool.shutdown()
    }

    /// The code as written, with only the pool swapped.
    func loadProfile(_ pool: ConnectionPool<FakeConnection>, fixed: Bool) async throws {
        let prefetched = Signal()
        async let avatar = { () async throws -> ConnectionPool<FakeConnection>.Lease in
            let lease = try await pool.checkout()
            prefetched.fire()
            return lease
        }()
        await prefetched.wait()                  // the loader does other work meanwhile
        if fixed {
            try await avatar.release()
        }
        let lease = try await pool.checkout()
        lease.release()
        if !fixed { try await avatar.release() }
    }

    /// The same bug with the loader and the prefetch named.
    func annotated(_ pool: ConnectionPool<FakeConnection>) async throws {
        let prefetched = Signal()
        try await TaskTree.scope("load-profile") {
            async let avatar = TaskTree.child("prefetch-avatar") {
                let lease = try await pool.checkout()
                prefetched.fire()
                return lease
            }
            await prefetched.wait()
            let lease = try await pool.checkout()
            lease.release()
            try await avatar.take().release()
        }
    }
}

/// A stand-in for a database connection: what the pool hands out.
final class FakeConnection: Sendable {
    init() {}
}
