// A bounded, FIFO-fair pool of real connections, made lazily by an async factory, whose leases are
// owned objects recorded in the ledger.
//
// Capacity. At most `capacity` connections exist at once, counting those being created (a factory
// call in flight reserves its unit of capacity before it starts) and those being closed (a connection
// keeps its unit until its close callback has returned). So the server behind the pool never sees
// more than `capacity` connections from it, even while broken ones are being torn down.
//
// Fairness. Checkouts are served strictly in arrival order. The fast path (`tryCheckout`, and the
// first step of `checkout`) takes an idle connection or reserves unused capacity only when nobody
// queues. Whatever becomes free while someone queues goes to the head waiter inside the critical
// section that dequeues it: a released connection is handed over (the hand-off), and a freed unit of
// capacity — a failed factory call, a broken connection whose close has finished, a creator that gave
// up — becomes the head waiter's *right to create*. A newcomer can therefore never take what a waiter
// was next in line for, and while anyone waits there is neither an idle connection nor unused
// capacity.
//
// Creation. The factory never runs under the lock. The checkout that reserved the capacity (on the
// fast path, or as a waiter handed the right to create) runs the factory itself, in its own task. If
// the factory throws, that checkout throws the factory's error — the error reaches the caller whose
// connection it was — and the unit of capacity is freed at once: to the head waiter as a right to
// create (it then calls the factory itself, so a second failure reaches *it*), or back to unused
// capacity. Failures never shrink the pool: after any number of them it can still open `capacity`
// connections. A successful creation belongs to the creator, even when others queue (it waited for
// that capacity like anyone else).
//
// Cancellation. A waiter registers a cancellation handler before it suspends. Cancelled while still
// queued, it is removed and `checkout` throws `CancellationError`. Cancelled after it was handed a
// connection, it wakes, sees the cancellation and releases the connection — to the next waiter or the
// idle set; handed a right to create, it passes the right on the same way, without calling the
// factory. If the task is cancelled while its own factory call is in flight, the factory is not
// interrupted by the pool (it runs in the cancelled task, so it sees the cancellation and may stop on
// its own, which counts as a failure); when it returns a connection anyway, that connection joins the
// pool — to the head waiter, or idle — and `checkout` throws `CancellationError`. A cancelled
// checkout never returns a lease and never loses or duplicates a connection or a unit of capacity.
//
// Ownership. A `Lease` is returned exactly once: `release()` (healthy), `returnBroken()` (close it and
// free the capacity), or the end of `withConnection`. A second return is ignored and reported to the
// ledger as a double release. A lease dropped without being returned is released by its
// deinitialiser and reported with the site that checked it out. When another task reads the lease's
// connection, claims it, or returns it, the ledger records the move of ownership.
//
// Shutdown. `shutdown()` is idempotent. It fails every waiter with `FuturelockError.poolShutdown`,
// closes the idle connections (awaiting their close callbacks), and makes every later checkout throw
// `poolShutdown`. Leases still out stay usable; each one's connection is closed when it is returned.
// A factory call in flight finishes, its connection is closed, and its checkout throws `poolShutdown`.
//
// Locking. One `Mutex` per pool guards its state machine. Continuations are resumed, the factory and
// the close callback called, and problems reported only after the lock is released. Close callbacks
// of connections returned by synchronous calls (`release`, `returnBroken`, a dropped lease) run in a
// new task, since those calls cannot wait.

import Synchronization

/// A bounded, FIFO-fair pool of connections made on demand, with owned, recorded leases.
/// See the file header for the rules.
public final class ConnectionPool<Connection: Sendable>: Sendable, HoldingTransferring {
    /// The name used in dumps and errors.
    public let name: String
    /// The most connections that exist at once (including those being created or closed).
    public let capacity: Int
    /// The ledger that records this pool's leases and waiters.
    public let ledger: Ledger
    /// This pool's id in the ledger.
    public let id: ResourceID

    let state: Mutex<StateMachine>
    private let factory: @Sendable () async throws -> Connection
    private let closeConnection: @Sendable (Connection) async -> Void
    private let waiterSerial = Atomic<UInt64>(0)
    private let history: EventHistory?

    /// Creates a pool. No connection is made until a checkout needs one.
    ///
    /// - Parameters:
    ///   - name: A name a person recognises in a dump, e.g. `"postgres-primary"`.
    ///   - capacity: The most connections that exist at once; at least 1.
    ///   - ledger: Where leases and waits are recorded (defaults to the process-wide ledger).
    ///   - factory: Opens a connection. Runs outside the pool's lock, in the task of the checkout
    ///     that needs the connection; what it throws is thrown by that checkout.
    ///   - close: Closes a connection that is broken, or that is returned or idle after shutdown.
    /// - Throws: ``FuturelockError/invalidCapacity(resource:value:)`` when `capacity < 1`.
    public init(name: String, capacity: Int, ledger: Ledger = .shared,
                factory: @escaping @Sendable () async throws -> Connection,
                close: @escaping @Sendable (Connection) async -> Void = { _ in }) throws(FuturelockError) {
        guard capacity >= 1 else { throw .invalidCapacity(resource: name, value: capacity) }
        self.name = name
        self.capacity = capacity
        self.ledger = ledger
        self.factory = factory
        self.closeConnection = close
        self.state = Mutex(StateMachine(capacity: capacity, runtimeParentOffset: ledger.runtime.parentOffset))
        self.id = ledger.nextResourceID()
        self.history = EventHistory(ledger: ledger, resource: id)
        ledger.register(self, id: id)
    }

    deinit {
        ledger.unregister(id)
        // Without a shutdown, idle connections would be dropped unclosed. Leases keep the pool alive,
        // so by now every connection that exists is idle (or was abandoned mid-creation).
        let idle = state.withLock { $0.shutdown()?.close ?? [] }
        if !idle.isEmpty {
            let close = closeConnection
            Task { for connection in idle { await close(connection) } }
        }
    }

    // MARK: - Inspection (hints: they may change before you act on them)

    /// Tasks waiting for a connection right now.
    public var waitingCount: Int { state.withLock { $0.waiters.count } }
    /// Idle connections right now.
    public var idleCount: Int { state.withLock { $0.idle.count } }
    /// Connections checked out right now.
    public var leasedCount: Int { state.withLock { $0.held } }
    /// Connections that exist right now: idle, leased, or being closed.
    public var openCount: Int { state.withLock { $0.open } }
    /// Factory calls in flight right now.
    public var creatingCount: Int { state.withLock { $0.creating } }
    /// Whether ``shutdown()`` has been called.
    public var isShutdown: Bool { state.withLock { $0.isShutdown } }

    // MARK: - Checking out

    /// Waits for a connection, first come, first served, creating one if the pool has room.
    ///
    /// - Returns: A lease on the connection, owned by the calling task until it is returned.
    /// - Throws: What the factory threw, when this checkout had to create the connection and the
    ///   factory failed; ``FuturelockError/poolShutdown(pool:)``; or `CancellationError` if the task
    ///   is cancelled before the connection is handed over (a connection or creation right granted
    ///   concurrently with the cancellation is passed on to the next waiter, never kept).
    public func checkout(fileID: StaticString = #fileID, line: UInt = #line,
                         function: StaticString = #function) async throws -> Lease {
        try await checkout(stamped: ledger.stamp(fileID: fileID, line: line, function: function))
    }

    private func checkout(stamped stamp: OwnerStamp?) async throws -> Lease {
        switch state.withLock({ $0.checkout(stamp) }) {
        case .leased(let connection, let slot):
            record(.grant, stamp)
            return lease(connection, slot: slot, owner: stamp?.task)
        case .create:
            return try await create(stamp)
        case .shutDown:
            throw FuturelockError.poolShutdown(pool: name)
        case .mustWait:
            return try await checkoutSlow(stamp)
        }
    }

    private func checkoutSlow(_ stamp: OwnerStamp?) async throws -> Lease {
        // Taken before locking, as the channel does, so ids reach the queue in (nearly) increasing
        // order: the queue keeps waiters in id order and finds a cancelled one by binary search.
        let waiterID = waiterSerial.wrappingAdd(1, ordering: .relaxed).newValue
        record(.waitStart, stamp)
        let grant: StateMachine.Grant
        do {
            grant = try await withTaskCancellationHandler {
                try await withUnsafeThrowingContinuation { (continuation: StateMachine.Continuation) in
                    let action = state.withLock {
                        $0.enqueue(id: waiterID, continuation, stamp: stamp, isCancelled: Task.isCancelled)
                    }
                    switch action {
                    case .suspended: break
                    case .resume(let continuation, let grant): continuation.resume(returning: grant)
                    case .resumeCancelled(let continuation): continuation.resume(throwing: CancellationError())
                    case .resumeShutDown(let continuation):
                        continuation.resume(throwing: FuturelockError.poolShutdown(pool: name))
                    }
                }
            } onCancel: {
                if let continuation = state.withLock({ $0.cancel(id: waiterID) }) {
                    continuation.resume(throwing: CancellationError())
                }
            }
        } catch {
            record(.cancelled, stamp)
            throw error
        }
        switch grant {
        case .connection(let connection, let slot):
            let lease = lease(connection, slot: slot, owner: stamp?.task)
            if Task.isCancelled {
                // Handed over, but the caller has stopped wanting it: pass it on.
                lease.release()
                record(.cancelled, stamp)
                throw CancellationError()
            }
            record(.waitEnd, stamp)
            return lease
        case .create:
            switch state.withLock({ $0.startCreation(isCancelled: Task.isCancelled) }) {
            case .proceed:
                record(.waitEnd, stamp)
                return try await create(stamp)
            case .shutDown:
                throw FuturelockError.poolShutdown(pool: name)
            case .cancelled(let next):
                next?.resume(returning: .create)
                record(.cancelled, stamp)
                throw CancellationError()
            }
        }
    }

    /// Runs the factory for a checkout that holds a reserved unit of capacity.
    private func create(_ stamp: OwnerStamp?) async throws -> Lease {
        let connection: Connection
        do {
            connection = try await factory()
        } catch {
            // The capacity goes to the head waiter as a right to create, or back to the pool.
            state.withLock { $0.abandonCreation() }?.resume(returning: .create)
            throw error
        }
        let cancelled = Task.isCancelled
        switch state.withLock({ $0.creationSucceeded(connection, stamp: stamp, isCancelled: cancelled) }) {
        case .leased(let slot):
            record(.grant, stamp)
            return lease(connection, slot: slot, owner: stamp?.task)
        case .keptForOthers(let handOff):
            if let (continuation, slot, waiter) = handOff {
                record(.handoff, waiter)
                continuation.resume(returning: .connection(connection, slot))
            }
            record(.cancelled, stamp)
            throw CancellationError()
        case .close(let connection):
            await close(connection, stamp)
            throw FuturelockError.poolShutdown(pool: name)
        }
    }

    /// Takes an idle connection if there is one and nobody is waiting; never suspends and never
    /// creates a connection.
    public func tryCheckout(fileID: StaticString = #fileID, line: UInt = #line,
                            function: StaticString = #function) -> Lease? {
        let stamp = ledger.stamp(fileID: fileID, line: line, function: function)
        guard let (connection, slot) = state.withLock({ $0.tryCheckout(stamp) }) else { return nil }
        record(.grant, stamp)
        return lease(connection, slot: slot, owner: stamp?.task)
    }

    /// Waits for a connection, but gives up after `timeout`.
    ///
    /// The wait runs in a child task raced against a timer; a connection granted just as the timer
    /// fires is still returned (never parked in the abandoned child), and the lease is claimed by the
    /// calling task before it is returned.
    ///
    /// - Throws: ``FuturelockError/timedOut(resource:after:)`` (nothing is held),
    ///   ``FuturelockError/invalidTimeout(resource:timeout:)`` for a negative timeout, the factory's
    ///   error, ``FuturelockError/poolShutdown(pool:)``, or `CancellationError`.
    public func checkout(timeout: Duration, fileID: StaticString = #fileID, line: UInt = #line,
                         function: StaticString = #function) async throws -> Lease {
        try await TimeoutRace.acquire(
            resource: name, timeout: timeout,
            immediately: { tryCheckout(fileID: fileID, line: line, function: function) },
            waiting: { try await self.checkout(fileID: fileID, line: line, function: function) },
            claim: { $0.claim(fileID: fileID, line: line, function: function) })
    }

    /// Runs `body` with a checked-out connection and returns it to the pool however `body` ends.
    ///
    /// If `body` returns, or throws any error, the connection is released back to the pool as
    /// healthy — an error from your own logic says nothing about the connection. To say the
    /// connection itself is broken, throw ``BrokenConnection``: the connection is then closed, its
    /// capacity freed, and the ``BrokenConnection/cause`` is rethrown.
    public func withConnection<Result>(
        fileID: StaticString = #fileID, line: UInt = #line, function: StaticString = #function,
        isolation: isolated (any Actor)? = #isolation,
        _ body: (Connection) async throws -> Result
    ) async throws -> Result {
        // The lease never reaches `body` (only its connection does), so only the end of this call
        // can return it: the ledger marks the holding pinned.
        var stamp = ledger.stamp(fileID: fileID, line: line, function: function)
        stamp?.isPinned = true
        let lease = try await checkout(stamped: stamp)
        let result: Result
        do {
            result = try await body(lease.heldConnection)
        } catch let broken as BrokenConnection {
            lease.returnBroken(fileID: fileID, line: line, function: function)
            throw broken.cause
        } catch {
            lease.release(fileID: fileID, line: line, function: function)
            throw error
        }
        lease.release(fileID: fileID, line: line, function: function)
        return result
    }

    // MARK: - Shutdown

    /// Shuts the pool down: waiters fail with ``FuturelockError/poolShutdown(pool:)``, idle
    /// connections are closed (this call waits for their close callbacks), and later checkouts throw
    /// `poolShutdown`. Leases still out stay usable; their connections are closed when returned.
    /// Calling it again does nothing.
    public func shutdown(fileID: StaticString = #fileID, line: UInt = #line,
                         function: StaticString = #function) async {
        guard let action = state.withLock({ $0.shutdown() }) else { return }
        let stamp = ledger.stamp(fileID: fileID, line: line, function: function)
        record(.close, stamp)
        for continuation in action.fail {
            continuation.resume(throwing: FuturelockError.poolShutdown(pool: name))
        }
        for connection in action.close {
            await close(connection, stamp)
        }
    }

    // MARK: - Returning (called by Lease)

    func release(slot: Int32, connection: Connection, fileID: StaticString, line: UInt,
                 function: StaticString) {
        let releaser = stampIfTracked(slot, fileID: fileID, line: line, function: function)
        let (action, moved) = state.withLock { machine -> (StateMachine.ReleaseAction, Bool) in
            let moved = releaser.map { machine.transfer(slot: slot, to: $0.task, node: $0.node) != nil } ?? false
            return (machine.release(slot: slot, connection: connection), moved)
        }
        if moved { record(.transfer, releaser) }
        record(.release, releaser)
        perform(action, releaser)
    }

    func returnBroken(slot: Int32, connection: Connection, fileID: StaticString, line: UInt,
                      function: StaticString) {
        let releaser = stampIfTracked(slot, fileID: fileID, line: line, function: function)
        let moved = state.withLock { machine -> Bool in
            let moved = releaser.map { machine.transfer(slot: slot, to: $0.task, node: $0.node) != nil } ?? false
            machine.releaseBroken(slot: slot)
            return moved
        }
        if moved { record(.transfer, releaser) }
        record(.release, releaser)
        closeInBackground(connection, releaser)
    }

    /// A lease on `connection`, its address recorded with the holding of `slot`.
    private func lease(_ connection: Connection, slot: Int32, owner: TaskID?) -> Lease {
        let lease = Lease(pool: self, connection: connection, slot: slot, owner: owner)
        if slot != StateMachine.untrackedSlot {
            let address = objectAddress(lease)
            state.withLock { $0.noteObject(address, slot: slot) }
        }
        return lease
    }

    func transferHolding(slot: Int32, to task: TaskID, node: ScopeNode?) -> Bool {
        state.withLock { $0.transfer(slot: slot, to: task, node: node) } != nil
    }

    func reportDoubleRelease(slot: Int32, fileID: StaticString, line: UInt, function: StaticString) {
        ledger.reportDoubleRelease(resource: id, name: name, kind: .connection, fileID: fileID, line: line,
                                   function: function)
    }

    func releaseDropped(slot: Int32, connection: Connection) {
        let (entry, action) = state.withLock { machine in
            (machine.holding(slot), machine.release(slot: slot, connection: connection))
        }
        perform(action, nil)
        ledger.reportDropped(resource: id, name: name, kind: .connection, entry: entry)
    }

    // MARK: - Helpers

    private func stampIfTracked(_ slot: Int32, fileID: StaticString, line: UInt,
                                function: StaticString) -> OwnerStamp? {
        guard ledger.isEnabled, slot != StateMachine.untrackedSlot else { return nil }
        return ledger.stamp(fileID: fileID, line: line, function: function)
    }

    private func perform(_ action: StateMachine.ReleaseAction, _ stamp: OwnerStamp?) {
        switch action {
        case .idled:
            break
        case .handOff(let continuation, let grant, let waiter):
            record(.handoff, waiter)
            continuation.resume(returning: grant)
        case .close(let connection):
            closeInBackground(connection, stamp)
        }
    }

    /// Closes a connection, then frees its unit of capacity (to the head waiter as a right to create).
    private func close(_ connection: Connection, _ stamp: OwnerStamp?) async {
        await closeConnection(connection)
        record(.close, stamp)
        state.withLock { $0.closeFinished() }?.resume(returning: .create)
    }

    private func closeInBackground(_ connection: Connection, _ stamp: OwnerStamp?) {
        Task { await self.close(connection, stamp) }
    }

    @inline(__always)
    func record(_ kind: LedgerEvent.Kind, _ stamp: OwnerStamp?) {
        history?.record(kind, stamp)
    }
}

/// Thrown from the body of ``ConnectionPool/withConnection(fileID:line:function:isolation:_:)`` to
/// say the connection itself is broken: the pool closes it instead of reusing it, and rethrows
/// ``cause``.
public struct BrokenConnection: Error {
    /// The error that showed the connection is broken; this is what `withConnection` rethrows.
    public var cause: any Error

    /// Wraps the error that showed the connection is broken.
    public init(_ cause: any Error) { self.cause = cause }
}

extension ConnectionPool: LedgerTracked {
    func oldestWait() -> MonotonicInstant? {
        state.withLock { $0.waiters.first?.stamp?.time }
    }

    func contribute(to builder: inout SnapshotBuilder) {
        state.withLock { machine in
            builder.add(ResourceRecord(
                id: id, kind: .pool, name: name, capacity: capacity, available: machine.available,
                held: machine.held, waiting: machine.waiters.count, closed: machine.isShutdown))
            machine.holdings.forEach { entry in
                builder.addHolding(entry, resource: id, kind: .connection,
                                   handsOff: machine.holdings.handsOff(entry.stamp.site))
            }
            machine.waiters.forEachInOrder { position, _, waiter in
                if let stamp = waiter.stamp {
                    builder.addWait(resource: id, kind: .checkout, stamp: stamp,
                                    taskAddress: taskAddress(of: waiter.continuation), position: position)
                }
            }
        }
        if let history { builder.addEvents(history.events) }
    }
}
