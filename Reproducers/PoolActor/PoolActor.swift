import Futurelock

/// F6 — the incident: a pool actor fed through a capacity-1 request channel.
///
/// Connections are handed out by a pool task that receives checkout requests from a `BoundedChannel`
/// of capacity 1 and answers each with a lease. One client races "reserve a request slot" against a
/// timeout; the reserve arm wins the slot and finishes with it parked in the group; the timeout wins
/// the race, and the client asks the pool again — queueing behind its own slot. The pool task is alive
/// and idle (the channel is empty), the channel's only slot is owned by a finished child nobody will
/// look at again, and every other client — 10,000 of them here — piles up behind it.
///
/// Fixed: when the timeout wins, cancel and drain the race, releasing the slot, before asking again.
struct PoolActor: Reproducer {
    let name = "pool-actor"
    let form = "F6"
    let summary = "a pool actor behind a capacity-1 request channel; a client's parked slot blocks 10,000 others"
    let expectedKind: Finding.Kind? = .futurelock
    let expectedCertainty = Finding.Certainty.certain
    let culpritFile = "PoolActor.swift"

    /// How many innocent clients queue behind the culprit.
    var innocentClients = 10_000

    /// A checkout request: the pool answers on `reply`.
    struct Request: Sendable {
        let reply: Reply
    }

    /// A single-use answer slot.
    final class Reply: Sendable {
        private let stream: AsyncStream<ConnectionPool<FakeConnection>.Lease>
        private let continuation: AsyncStream<ConnectionPool<FakeConnection>.Lease>.Continuation
        init() {
            (stream, continuation) = AsyncStream.makeStream(of: ConnectionPool<FakeConnection>.Lease.self, bufferingPolicy: .unbounded)
        }
        func deliver(_ lease: ConnectionPool<FakeConnection>.Lease) { continuation.yield(lease); continuation.finish() }
        func wait() async -> ConnectionPool<FakeConnection>.Lease? {
            // The lease crossed tasks through the stream's continuation; tell ThreadSanitizer so.
            for await lease in stream { ThreadSanitizer.acquireAfterResume(); return lease }
            return nil
        }
    }

    enum Arm: Sendable {
        case reserved(SendPermit<Request>)
        case timedOut
    }

    enum TrackedArm: Sendable {
        case reserved(Tracked<SendPermit<Request>>)
        case timedOut
    }

    func run(_ code: Code, ledger: Ledger) async throws {
        let pool = try ConnectionPool<FakeConnection>(name: "postgres", capacity: 4, ledger: ledger,
                                                      factory: { FakeConnection() })
        let requests = try BoundedChannel<Request>(name: "pool-requests", capacity: 1, ledger: ledger)
        let innocents = innocentClients

        try await withThrowingTaskGroup(of: Void.self) { outer in
            // The pool actor: serve requests one at a time.
            outer.addTask {
                // The pool actor: serve requests one at a time; each lease belongs to its client.
                if code == .annotated {
                    try await TaskTree.scope("pool-actor") { try await serve(requests, pool, annotated: true) }
                } else {
                    try await serve(requests, pool, annotated: false)
                }
            }
            outer.addTask {
                try await withThrowingTaskGroup(of: Void.self) { clients in
                    let culpritQueued = Signal()
                    clients.addTask {
                        if code == .annotated {
                            try await TaskTree.scope("client-culprit") {
                                try await self.culpritAnnotated(requests, queued: culpritQueued, innocents: innocents)
                            }
                        } else {
                            try await self.culprit(requests, fixed: code == .fixed, queued: culpritQueued,
                                                   innocents: innocents)
                        }
                    }
                    await culpritQueued.wait()
                    for _ in 0..<innocents {
                        clients.addTask {
                            let reply = Reply()
                            try await requests.send(Request(reply: reply))
                            await reply.wait()?.release()
                        }
                    }
                    try await clients.waitForAll()
                }
                requests.close()
            }
            try await outer.waitForAll()
        }
        await pool.shutdown()
    }

    /// Serves checkout requests one at a time. Annotated, the pool actor marks each lease as handed
    /// off, so the ledger shows it *in transit* until the client takes it.
    func serve(_ requests: BoundedChannel<Request>, _ pool: ConnectionPool<FakeConnection>,
               annotated: Bool) async throws {
        for try await request in requests {
            let lease = try await pool.checkout()
            if annotated { lease.handOff() }
            request.reply.deliver(lease)
        }
    }

    /// The client whose race goes wrong, as written (only the channel swapped).
    func culprit(_ requests: BoundedChannel<Request>, fixed: Bool, queued: Signal, innocents: Int) async throws {
        let raceDecided = Signal()
        try await withThrowingTaskGroup(of: Arm.self) { race in
            race.addTask {
                let slot = try await requests.reserve()
                await raceDecided.wait()                 // …and the timeout fires before it sends
                return .reserved(slot)
            }
            race.addTask {
                while requests.availableSlots > 0 { try await Task.yieldUnlessCancelled() }
                return .timedOut
            }
            let first = try await race.next()
            raceDecided.fire()
            guard case .timedOut = first else { return }
            if fixed {
                race.cancelAll()
                for try await arm in race {
                    if case .reserved(let slot) = arm { slot.release() }
                }
            }
            try await askAgain(requests, fixed: fixed, queued: queued, innocents: innocents)
        }
    }

    /// The same client with its race arm named.
    func culpritAnnotated(_ requests: BoundedChannel<Request>, queued: Signal, innocents: Int) async throws {
        let raceDecided = Signal()
        try await withThrowingTaskGroup(of: TrackedArm.self) { race in
            race.addTask {
                .reserved(try await TaskTree.child("request-connection") {
                    let slot = try await requests.reserve()
                    await raceDecided.wait()
                    return slot
                })
            }
            race.addTask {
                while requests.availableSlots > 0 { try await Task.yieldUnlessCancelled() }
                return .timedOut
            }
            let first = try await race.next()
            raceDecided.fire()
            guard case .timedOut = first else { return }
            try await askAgain(requests, fixed: false, queued: queued, innocents: innocents)
        }
    }

    /// Asks the pool for a connection again, after the race.
    func askAgain(_ requests: BoundedChannel<Request>, fixed: Bool, queued: Signal, innocents: Int) async throws {
        queued.fire()
        if !fixed {
            // The other clients pile up behind the parked slot first, as in the incident (so every
            // run shows the same queue; in the fixed code the slot is free and nobody piles up).
            while requests.waitingSenderCount < innocents { try await Task.yieldUnlessCancelled() }
        }
        let reply = Reply()
        try await requests.send(Request(reply: reply))
        await reply.wait()?.release()
    }
}
