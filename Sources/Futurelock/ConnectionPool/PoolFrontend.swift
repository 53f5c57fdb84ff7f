// The incident's architecture as an option: clients reach the pool through a bounded request channel
// served by one loop, instead of calling the pool directly.
//
// Shape. A client puts a `CheckoutRequest` — a reply slot plus the client's call site — into a
// `BoundedChannel` (capacity 1 by default, as in the incident) and waits on the reply slot. `run()`
// receives requests one by one; each is served by `ConnectionPool.checkout` (an idle connection
// inline, anything that must wait or create in a child task of the loop, so one slow request does not
// stall the loop), and the lease is put into the reply slot. The client then claims the lease, so the
// ledger shows the client — not the loop — as the holder, stamped with the client's call site.
//
// Why offer it at all. Many services are built this way (an actor owning the pool, fed by a channel),
// and it is exactly futurelock form F6 (reproducer `pool-actor`): the channel's one slot is a second
// resource in front of the pool. A client that reserves the slot (`requests.reserve()`) and then stops
// driving that work — the losing arm of a race — starves every other client while the loop sits idle
// on an empty channel. Because the channel and the pool both record into the same ledger, the watchdog
// sees the slot's holder and the pile of senders behind it. Prefer calling `ConnectionPool` directly
// when you can.
//
// Replies and cancellation. A reply slot is filled exactly once. A client cancelled while its request
// is still queued in the channel throws `CancellationError` and its request never reaches the loop.
// A client cancelled after its request was taken abandons its reply slot and throws; when the loop
// fills an abandoned slot, it releases the lease back to the pool at once. So a lease is never lost
// between the loop and a client that went away. (The loop's own checkout for that request is not
// interrupted; it keeps its place in the pool's queue and gives the connection straight back.)
//
// Shutdown. `shutdown()` closes the request channel (queued and later clients get
// `FuturelockError.poolShutdown`), then shuts the pool down. `run()` returns once the channel is
// drained; requests it takes after the pool shut down fail with `poolShutdown`. If `run()` ends
// early (its task is cancelled), it closes the channel the same way and fails the requests still
// buffered, so no client waits for a loop that is gone.

import Synchronization

/// A ``ConnectionPool`` served through a bounded request channel by one loop: the pool-actor
/// architecture of the incident, kept observable. See the file header for the rules.
///
/// ```swift
/// let frontend = try PoolFrontend(pool: pool)           // capacity-1 request channel
/// group.addTask { await frontend.run() }                // the loop
/// let lease = try await frontend.checkout()             // from any client task
/// defer { lease.release() }
/// ```
public final class PoolFrontend<Connection: Sendable>: Sendable {
    /// A lease on one of the pool's connections.
    public typealias Lease = ConnectionPool<Connection>.Lease

    /// The pool the loop serves requests from.
    public let pool: ConnectionPool<Connection>
    /// The request channel clients send to and the loop receives from. Exposed so a client can
    /// `reserve()` a slot first and then use ``checkout(using:fileID:line:function:)`` — the
    /// reserve-then-send pattern of the incident.
    public let requests: BoundedChannel<CheckoutRequest>

    /// Creates a frontend for `pool` with a request channel of `requestCapacity` slots, recorded in
    /// the pool's ledger.
    ///
    /// - Throws: ``FuturelockError/invalidCapacity(resource:value:)`` when `requestCapacity < 1`.
    public init(pool: ConnectionPool<Connection>, requestCapacity: Int = 1) throws(FuturelockError) {
        self.pool = pool
        self.requests = try BoundedChannel(name: "\(pool.name).requests", capacity: requestCapacity,
                                           ledger: pool.ledger)
    }

    /// One checkout request: where the client's reply goes, and where the client asked.
    public struct CheckoutRequest: Sendable {
        let reply: CheckoutReply
        let fileID: StaticString
        let line: UInt
        let function: StaticString
    }

    // MARK: - The loop

    /// Serves requests until the request channel is closed and drained (by ``shutdown()``), or until
    /// the calling task is cancelled. Run it exactly once, in a task that lives as long as the pool
    /// is used; without it, clients wait for ever.
    public func run() async {
        await withDiscardingTaskGroup { group in
            while true {
                let next: CheckoutRequest?
                do {
                    next = try await requests.receive()
                } catch {
                    break  // cancelled
                }
                guard let request = next else { break }  // closed and drained
                if let lease = pool.tryCheckout(fileID: request.fileID, line: request.line,
                                                function: request.function) {
                    lease.handOff()
                    request.reply.fulfill(.success(lease))
                    continue
                }
                group.addTask {
                    do {
                        let lease = try await self.pool.checkout(
                            fileID: request.fileID, line: request.line, function: request.function)
                        lease.handOff()
                        request.reply.fulfill(.success(lease))
                    } catch {
                        request.reply.fulfill(.failure(error))
                    }
                }
            }
        }
        // Nobody serves the channel any more: make sure nobody waits on it.
        requests.close()
        while case .message(let request) = requests.tryReceive() {
            request.reply.fulfill(.failure(FuturelockError.poolShutdown(pool: pool.name)))
        }
    }

    // MARK: - Clients

    /// Asks the loop for a connection and waits for it.
    ///
    /// - Returns: A lease owned by the calling task (the ledger records it as claimed from the loop).
    /// - Throws: What ``ConnectionPool/checkout(fileID:line:function:)`` throws for the loop (the
    ///   factory's error, ``FuturelockError/poolShutdown(pool:)``), `poolShutdown` when the request
    ///   channel is closed, or `CancellationError`.
    public func checkout(fileID: StaticString = #fileID, line: UInt = #line,
                         function: StaticString = #function) async throws -> Lease {
        let reply = CheckoutReply()
        let request = CheckoutRequest(reply: reply, fileID: fileID, line: line, function: function)
        do {
            try await requests.send(request, fileID: fileID, line: line, function: function)
        } catch FuturelockError.channelClosed {
            throw FuturelockError.poolShutdown(pool: pool.name)
        }
        return try await awaitReply(reply, fileID: fileID, line: line, function: function)
    }

    /// Sends the request through a slot the caller reserved earlier with `requests.reserve()`, then
    /// waits for the connection. This is the reserve-then-send client of the incident: between the
    /// reserve and this call, the caller's permit blocks every other client.
    ///
    /// - Throws: As ``checkout(fileID:line:function:)``; ``FuturelockError/alreadyReleased(resource:)``
    ///   if the permit was already used.
    public func checkout(using permit: SendPermit<CheckoutRequest>, fileID: StaticString = #fileID,
                         line: UInt = #line, function: StaticString = #function) async throws -> Lease {
        let reply = CheckoutReply()
        do {
            try permit.send(CheckoutRequest(reply: reply, fileID: fileID, line: line, function: function),
                            fileID: fileID, line: line, function: function)
        } catch .channelClosed {
            throw FuturelockError.poolShutdown(pool: pool.name)
        }
        return try await awaitReply(reply, fileID: fileID, line: line, function: function)
    }

    /// Like ``checkout(fileID:line:function:)``, but gives up after `timeout`.
    ///
    /// - Throws: ``FuturelockError/timedOut(resource:after:)`` (nothing is held; a lease that arrives
    ///   later goes back to the pool), ``FuturelockError/invalidTimeout(resource:timeout:)`` for a
    ///   negative timeout, or what ``checkout(fileID:line:function:)`` throws.
    public func checkout(timeout: Duration, fileID: StaticString = #fileID, line: UInt = #line,
                         function: StaticString = #function) async throws -> Lease {
        try await TimeoutRace.acquire(
            resource: pool.name, timeout: timeout,
            immediately: { nil },
            waiting: { try await self.checkout(fileID: fileID, line: line, function: function) },
            claim: { $0.claim(fileID: fileID, line: line, function: function) })
    }

    /// Closes the request channel, then shuts the pool down, waiting up to `gracePeriod` for leases
    /// still out (see ``ConnectionPool/shutdown(gracePeriod:fileID:line:function:)``). Calling it again
    /// waits for the same end.
    public func shutdown(gracePeriod: Duration = .seconds(30), fileID: StaticString = #fileID, line: UInt = #line,
                         function: StaticString = #function) async {
        requests.close(fileID: fileID, line: line, function: function)
        await pool.shutdown(gracePeriod: gracePeriod, fileID: fileID, line: line, function: function)
    }

    private func awaitReply(_ reply: CheckoutReply, fileID: StaticString, line: UInt,
                            function: StaticString) async throws -> Lease {
        let lease = try await reply.wait()
        lease.claim(fileID: fileID, line: line, function: function)
        return lease
    }
}

extension PoolFrontend {
    /// The one-shot slot the loop puts a client's lease (or error) into.
    final class CheckoutReply: Sendable {
        typealias Continuation = UnsafeContinuation<Lease, any Error>

        private enum State {
            /// Nobody waits yet and nothing arrived.
            case empty
            /// The client waits.
            case waiting(Continuation)
            /// The loop answered before the client waited.
            case answered(Result<Lease, any Error>)
            /// The client went away; a lease that arrives goes back to the pool.
            case abandoned
            /// The answer was delivered.
            case done
        }

        private enum Delivery { case resume(Continuation), giveBack, none }
        private enum Next { case suspend, resume(Result<Lease, any Error>) }

        private let state = Lock<State>(.empty)

        /// Delivers the loop's answer (exactly once per request).
        func fulfill(_ result: Result<Lease, any Error>) {
            let delivery = state.withLock { state -> Delivery in
                switch state {
                case .empty:
                    state = .answered(result)
                    return .none
                case .waiting(let continuation):
                    state = .done
                    return .resume(continuation)
                case .abandoned:
                    state = .done
                    return .giveBack
                case .answered, .done:
                    preconditionFailure("BUG DETECTED: a checkout request was answered twice")
                }
            }
            switch delivery {
            case .resume(let continuation): continuation.resume(with: result)
            case .giveBack: if case .success(let lease) = result { lease.release() }
            case .none: break
            }
        }

        /// Waits for the answer. Cancellation abandons the slot (the lease, if one comes, is
        /// released by ``fulfill(_:)``) and throws `CancellationError`.
        func wait() async throws -> Lease {
            defer { ThreadSanitizer.acquireAfterResume() }  // the waiter's side of the hand-off (Support/ThreadSanitizer.swift)
            return try await withTaskCancellationHandler {
                try await withUnsafeThrowingContinuation { (continuation: Continuation) in
                    let next = state.withLock { state -> Next in
                        switch state {
                        case .empty:
                            if Task.isCancelled {
                                state = .abandoned
                                return .resume(.failure(CancellationError()))
                            }
                            state = .waiting(continuation)
                            return .suspend
                        case .answered(let result):
                            state = .done
                            return .resume(result)
                        case .abandoned:
                            return .resume(.failure(CancellationError()))
                        case .waiting, .done:
                            preconditionFailure("BUG DETECTED: a checkout reply was awaited twice")
                        }
                    }
                    if case .resume(let result) = next { continuation.resume(with: result) }
                }
            } onCancel: {
                let continuation = state.withLock { state -> Continuation? in
                    switch state {
                    case .empty:
                        state = .abandoned
                        return nil
                    case .waiting(let continuation):
                        state = .abandoned
                        return continuation
                    case .answered, .abandoned, .done:
                        return nil
                    }
                }
                continuation?.resume(throwing: CancellationError())
            }
        }
    }
}
