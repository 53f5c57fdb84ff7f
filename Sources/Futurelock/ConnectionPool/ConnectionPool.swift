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
// Maintenance. A connection past `maximumLifetime` is closed instead of being handed out or put back
// idle. With a health check, an idle connection that has rested at least `healthCheckAfterIdle` is
// checked, in the checkout's own task, before it is handed out; one that fails is closed and the
// checkout carries on as if it had not been there. `run()`, the pool's maintenance loop (run it in
// the service's task group or under service-lifecycle), closes idle connections beyond
// `minimumConnections` after `idleTimeout`, closes expired and broken ones, and opens the minimum.
// The pool works without it; it then only shrinks when checkouts meet expired connections.
//
// Connection attempts. At most `maximumConcurrentConnectionAttempts` factory calls run at once. After
// a failed attempt the next one waits an exponential back-off (with jitter); the waiting is done by the
// checkout that will make the attempt, in its own task, and a success resets it. So a database outage
// costs a handful of attempts per back-off period, not one per request, and every checkout that does
// try gets the factory's error itself.
//
// Closing. No close runs in a task made for the purpose. A connection that must be closed (broken,
// expired, returned after shutdown) keeps its unit of capacity and waits until a task that can wait
// closes it: the next checkout that needs that unit (it closes, then creates a replacement — or, if
// others queue, the head waiter does), `run()`, or `shutdown()`.
//
// Shutdown. `shutdown(gracePeriod:)` is idempotent. It fails every waiter with
// `FuturelockError.poolShutdown` and makes every later checkout throw it; it closes the idle
// connections, then waits for the leases still out, closing each connection as it comes back. When
// the grace period runs out it closes the connections still leased (their leases' later returns are
// ignored, and counted in `statistics.leasesRevoked`). It returns only once every connection the pool
// opened has been closed — including one a factory call in flight returns after the shutdown (its
// checkout closes it and throws `poolShutdown`). A second call waits for the same end.
//
// Locking. One `Mutex` per pool guards its state machine. Continuations are resumed, the factory, the
// health check and the close callback called, and problems reported only after the lock is released.

import Synchronization

/// A bounded, FIFO-fair pool of connections made on demand, with owned, recorded leases.
/// See the file header for the rules.
public final class ConnectionPool<Connection: Sendable>: Sendable, HoldingTransferring {
    /// The name used in dumps and errors.
    public let name: String
    /// The most connections that exist at once (including those being created or closed).
    public let capacity: Int
    /// Idle timeout, lifetime, health checks, connection attempts and back-off.
    public let configuration: Configuration
    /// The ledger that records this pool's leases and waiters.
    public let ledger: Ledger
    /// This pool's id in the ledger.
    public let id: ResourceID

    let state: Lock<StateMachine>
    private let factory: @Sendable () async throws -> Connection
    private let closeConnection: @Sendable (Connection) async -> Void
    private let healthCheck: (@Sendable (Connection) async -> Bool)?
    private let waiterSerial = Atomic<UInt64>(0)
    private let history: EventHistory?
    /// Tasks suspended until something happens (see ``wait(in:cancellable:unless:)``).
    private let bells = Lock<Bells>(Bells())
    /// The waiting tasks, one list per event that rings it.
    private struct Bells {
        typealias Waiters = [UInt64: UnsafeContinuation<Void, Never>]
        /// Shutdowns waiting for a lease to come back, a creation to end or a close to finish.
        var drain: Waiters = [:]
        /// Checkouts sleeping out a back-off, woken when a shutdown starts.
        var shutdown: Waiters = [:]
    }
    /// Set once a shutdown starts: only then do events ring the drain bell.
    private let shuttingDown = Atomic<Bool>(false)

    /// Creates a pool. No connection is made until a checkout (or ``run()``, for
    /// ``Configuration/minimumConnections``) needs one.
    ///
    /// - Parameters:
    ///   - name: A name a person recognises in a dump, e.g. `"postgres-primary"`.
    ///   - capacity: The most connections that exist at once; at least 1.
    ///   - configuration: Idle timeout, lifetime, health checks, attempts and back-off; the defaults
    ///     suit most services.
    ///   - ledger: Where leases and waits are recorded (defaults to the process-wide ledger).
    ///   - factory: Opens a connection. Runs outside the pool's lock, in the task of the checkout
    ///     that needs the connection; what it throws is thrown by that checkout. Give it a connect
    ///     timeout of its own: the pool never interrupts it.
    ///   - close: Closes a connection that is broken, expired, or returned or idle after shutdown.
    ///   - healthCheck: Tells whether an idle connection still works (e.g. a `SELECT 1`); `nil`
    ///     checks nothing. See ``Configuration/healthCheckAfterIdle``.
    /// - Throws: ``FuturelockError/invalidCapacity(resource:value:)`` when `capacity < 1`;
    ///   ``FuturelockError/invalidConfiguration(resource:reason:)`` for a configuration that cannot work.
    public init(name: String, capacity: Int, configuration: Configuration = .init(), ledger: Ledger = .shared,
                factory: @escaping @Sendable () async throws -> Connection,
                close: @escaping @Sendable (Connection) async -> Void = { _ in },
                healthCheck: (@Sendable (Connection) async -> Bool)? = nil) throws(FuturelockError) {
        guard capacity >= 1 else { throw .invalidCapacity(resource: name, value: capacity) }
        if let problem = configuration.problem(capacity: capacity) {
            throw .invalidConfiguration(resource: name, reason: problem)
        }
        self.name = name
        self.capacity = capacity
        self.configuration = configuration
        self.ledger = ledger
        self.factory = factory
        self.closeConnection = close
        self.healthCheck = healthCheck
        self.state = Lock(StateMachine(capacity: capacity, configuration: configuration,
                                        runtimeParentOffset: ledger.runtime.parentOffset))
        self.id = ledger.nextResourceID()
        self.history = EventHistory(ledger: ledger, resource: id)
        ledger.register(self, id: id)
    }

    deinit {
        ledger.unregister(id)
        // Leases keep the pool alive, so by now every connection left is idle or waiting to be closed.
        // Nobody can wait for a close any more: the one place the pool closes in a task of its own.
        let left = state.withLock { machine -> [Connection] in
            _ = machine.shutdown()
            return machine.takeToClose()
        }
        if !left.isEmpty {
            ledger.logger.warning(
                "pool '\(name)' was deinitialised with \(left.count) open connection(s); they are closed in the background. Call `await pool.shutdown()` before dropping a pool, so closing them is awaited.")
            let close = closeConnection
            Task { for connection in left { await close(connection) } }
        }
    }

    // MARK: - Inspection (hints: they may change before you act on them)

    /// Tasks waiting for a connection right now.
    public var waitingCount: Int { state.withLock { $0.waiters.count } }
    /// Idle connections right now.
    public var idleCount: Int { state.withLock { $0.idle.count } }
    /// Connections checked out right now.
    public var leasedCount: Int { state.withLock { $0.held } }
    /// Connections that exist right now: idle, leased, waiting to be closed, or being closed.
    public var openCount: Int { state.withLock { $0.open } }
    /// Factory calls in flight (or about to start) right now.
    public var creatingCount: Int { state.withLock { $0.creating } }
    /// Whether ``shutdown(gracePeriod:fileID:line:function:)`` has been called.
    public var isShutdown: Bool { state.withLock { $0.isShutdown } }
    /// Counts since the pool was created: connection attempts, failures, closes.
    public var statistics: Statistics { state.withLock { $0.statistics } }

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
        while true {
            switch state.withLock({ $0.checkout(stamp, now: .now) }) {
            case .leased(let handed):
                record(.grant, stamp)
                if let lease = try await deliver(handed, stamp) { return lease }
            case .create(let notBefore):
                return try await create(stamp, notBefore: notBefore)
            case .replace(let connection, let notBefore):
                await close(connection, stamp, keepRight: true)
                return try await create(stamp, notBefore: notBefore)
            case .shutDown:
                throw FuturelockError.poolShutdown(pool: name)
            case .mustWait:
                if let lease = try await checkoutSlow(stamp) { return lease }
            }
        }
    }

    /// A checkout that waits in line. `nil`: the idle connection it was handed failed its health
    /// check; the caller starts over.
    private func checkoutSlow(_ stamp: OwnerStamp?) async throws -> Lease? {
        // Taken before locking, as the channel does, so ids reach the queue in (nearly) increasing
        // order: the queue keeps waiters in id order and finds a cancelled one by binary search.
        let waiterID = waiterSerial.wrappingAdd(1, ordering: .relaxed).newValue
        record(.waitStart, stamp)
        let grant: StateMachine.Grant
        do {
            defer { ThreadSanitizer.acquireAfterResume() }  // the waiter's side of the hand-off (Support/ThreadSanitizer.swift)
            grant = try await withTaskCancellationHandler {
                try await withUnsafeThrowingContinuation { (continuation: StateMachine.Continuation) in
                    let action = state.withLock {
                        $0.enqueue(id: waiterID, continuation, stamp: stamp, now: .now, isCancelled: Task.isCancelled)
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
            record(error is CancellationError ? .cancelled : .waitEnd, stamp)
            throw error
        }
        switch grant {
        case .connection(let handed):
            if Task.isCancelled {
                // Handed over, but the caller has stopped wanting it: pass it on.
                lease(handed, owner: stamp?.task).release()
                record(.cancelled, stamp)
                throw CancellationError()
            }
            record(.waitEnd, stamp)
            return try await deliver(handed, stamp)
        case .create(let notBefore):
            record(.waitEnd, stamp)
            return try await create(stamp, notBefore: notBefore)
        case .replace(let connection, let notBefore):
            record(.waitEnd, stamp)
            await close(connection, stamp, keepRight: true)
            return try await create(stamp, notBefore: notBefore)
        }
    }

    /// Makes the lease of a handed-out connection, after the health check if it rested long enough.
    /// `nil` when it failed the check (it is closed, or left for the waiters to replace).
    private func deliver(_ handed: StateMachine.Handed, _ stamp: OwnerStamp?) async throws -> Lease? {
        // `idleFor` is zero for a connection straight from another lease or the factory: not checked.
        guard let healthCheck, handed.idleFor > .zero, handed.idleFor >= configuration.healthCheckAfterIdle else {
            return lease(handed, owner: stamp?.task)
        }
        let healthy = await healthCheck(handed.connection)
        if healthy {
            // A shutdown that ran out of time while the check ran has closed the connection already.
            guard state.withLock({ $0.isLeased(handed.id) }) else { throw FuturelockError.poolShutdown(pool: name) }
            return lease(handed, owner: stamp?.task)
        }
        let action = state.withLock { $0.failedHealthCheck(slot: handed.slot, lease: handed.id, now: .now) }
        guard case .returned = action else { throw FuturelockError.poolShutdown(pool: name) }
        record(.release, stamp)
        perform(action)
        // Closed here, in this task — unless a waiter took its unit to close and replace it.
        await closePending()
        try Task.checkCancellation()
        return nil
    }

    /// Runs the factory for a checkout that holds a reserved unit of capacity — after the back-off,
    /// if attempts have been failing.
    private func create(_ stamp: OwnerStamp?, notBefore: ContinuousClock.Instant?) async throws -> Lease {
        if let notBefore {
            // The back-off is waited for in this task; a cancellation or a shutdown ends it (then
            // `startCreation` passes the right on, or gives the unit back).
            await sleepUnlessShutDown(until: notBefore)
        }
        switch state.withLock({ $0.startCreation(isCancelled: Task.isCancelled, now: .now) }) {
        case .proceed: break
        case .shutDown:
            wakeDrainWaiters()
            throw FuturelockError.poolShutdown(pool: name)
        case .cancelled(let wakes):
            resume(wakes)
            record(.cancelled, stamp)
            throw CancellationError()
        }
        let connection: Connection
        do {
            connection = try await factory()
        } catch {
            // The capacity goes to the head waiter as a right to create (after the back-off), or back
            // to the pool.
            resume(state.withLock { $0.creationFailed(now: .now, jitter: Double.random(in: -1...1)) })
            throw error
        }
        let cancelled = Task.isCancelled
        switch state.withLock({ $0.creationSucceeded(connection, stamp: stamp, now: .now, isCancelled: cancelled) }) {
        case .leased(let handed, let wakes):
            resume(wakes)
            record(.grant, stamp)
            return lease(handed, owner: stamp?.task)
        case .keptForOthers(let wakes):
            resume(wakes)
            record(.cancelled, stamp)
            throw CancellationError()
        case .close(let connection):
            await close(connection, stamp)
            throw FuturelockError.poolShutdown(pool: name)
        }
    }

    /// Takes an idle connection if there is one and nobody is waiting; never suspends and never
    /// creates a connection. With a health check, an idle connection that would need one (it rested
    /// ``Configuration/healthCheckAfterIdle`` or longer) is not taken: `nil` then, and `checkout()`
    /// checks it.
    public func tryCheckout(fileID: StaticString = #fileID, line: UInt = #line,
                            function: StaticString = #function) -> Lease? {
        let stamp = ledger.stamp(fileID: fileID, line: line, function: function)
        let checkAfter = healthCheck == nil ? nil : configuration.healthCheckAfterIdle
        guard let handed = state.withLock({ $0.tryCheckout(stamp, now: .now, checkAfter: checkAfter) }) else { return nil }
        record(.grant, stamp)
        return lease(handed, owner: stamp?.task)
    }

    /// Waits for a connection, but gives up after `timeout`.
    ///
    /// The wait runs in a child task raced against a timer; a connection granted just as the timer
    /// fires is still returned (never parked in the abandoned child), and the lease is claimed by the
    /// calling task before it is returned. The timeout is an upper bound: the factory's error, or
    /// the pool's shutdown, ends the wait at once.
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
            await closePending()
            throw broken.cause
        } catch {
            lease.release(fileID: fileID, line: line, function: function)
            throw error
        }
        lease.release(fileID: fileID, line: line, function: function)
        return result
    }

    // MARK: - Maintenance

    /// The pool's maintenance loop: every ``Configuration/maintenanceInterval`` it closes idle
    /// connections past the idle timeout (beyond the minimum) or their lifetime, closes broken ones
    /// waiting to be closed, and opens connections up to ``Configuration/minimumConnections``
    /// (respecting the back-off). Run it for the pool's lifetime — in the service's task group, or
    /// as a service under service-lifecycle; it returns when its task is cancelled or the pool has
    /// shut down. The pool works without it, but then does not shrink while idle or warm up.
    public func run() async {
        while !Task.isCancelled, !isShutdown {
            await maintain()
            try? await Task.sleep(for: configuration.maintenanceInterval)
        }
    }

    /// One maintenance pass (what ``run()`` does each interval).
    func maintain() async {
        let expired = state.withLock { $0.takeExpiredIdle(now: .now) }
        await closeAll(expired, nil)
        await closePending()
        while state.withLock({ $0.reserveWarmup(now: .now) }) {
            do {
                let connection = try await factory()
                let (close, wakes) = state.withLock { $0.warmupSucceeded(connection, now: .now) }
                resume(wakes)
                if let close { await self.close(close, nil) }
            } catch {
                resume(state.withLock { $0.creationFailed(now: .now, jitter: Double.random(in: -1...1)) })
                break
            }
        }
    }

    /// Closes the connections waiting to be closed, in this task.
    private func closePending() async {
        let pending = state.withLock { $0.takeToClose() }
        await closeAll(pending, nil)
    }

    private func closeAll(_ connections: [Connection], _ stamp: OwnerStamp?) async {
        guard !connections.isEmpty else { return }
        if connections.count == 1 {
            await close(connections[0], stamp)
            return
        }
        await withDiscardingTaskGroup { group in
            for connection in connections {
                group.addTask { await self.close(connection, stamp) }
            }
        }
    }

    // MARK: - Shutdown

    /// Shuts the pool down and returns once every connection it opened has been closed.
    ///
    /// Waiters fail with ``FuturelockError/poolShutdown(pool:)`` at once, and so does every later
    /// checkout. Idle connections are closed. Leases still out stay usable for up to `gracePeriod`;
    /// each one's connection is closed as it comes back. When the grace period is over, the
    /// connections still leased are closed under their users (returning those leases later does
    /// nothing; ``Statistics/leasesRevoked`` counts them). A factory call in flight finishes, its
    /// connection is closed, and its checkout throws `poolShutdown`; shutdown waits for that too — give
    /// your factory a connect timeout. Calling it again (or concurrently) waits for the same end.
    /// If the calling task is cancelled, the grace period ends at once.
    public func shutdown(gracePeriod: Duration = .seconds(30), fileID: StaticString = #fileID, line: UInt = #line,
                         function: StaticString = #function) async {
        let deadline = ContinuousClock.now.advanced(by: max(gracePeriod, .zero))
        let stamp = ledger.stamp(fileID: fileID, line: line, function: function)
        shuttingDown.store(true, ordering: .releasing)
        if let action = state.withLock({ $0.shutdown() }) {
            record(.close, stamp)
            // Back-off sleepers give their creation rights back now instead of sleeping on.
            ring(\.shutdown)
            for continuation in action.fail {
                continuation.resume(throwing: FuturelockError.poolShutdown(pool: name))
            }
        }
        while true {
            await closeAll(state.withLock { $0.takeToClose() }, stamp)
            if state.withLock({ $0.isDrained }) { break }
            if ContinuousClock.now >= deadline || Task.isCancelled {
                let revoked = state.withLock { $0.revokeLeases() }
                if !revoked.isEmpty {
                    ledger.logger.warning(
                        "pool '\(name)': shutdown grace period over; closing \(revoked.count) connection(s) still leased.")
                }
                await closeAll(revoked, stamp)
            }
            if state.withLock({ $0.isDrained }) { break }
            if ContinuousClock.now >= deadline || Task.isCancelled {
                // Nothing is leased any more: only creations in flight are left, and each one's end
                // rings the doorbell. Wait for it without a timer (and without spinning).
                await waitForChange(until: nil)
            } else {
                await waitForChange(until: deadline)
            }
        }
        wakeDrainWaiters()
    }

    /// Waits until a lease comes back, a creation ends or a close finishes — or until `deadline`;
    /// with no deadline, for the change only, whatever the task's cancellation.
    private func waitForChange(until deadline: ContinuousClock.Instant?) async {
        let changed = { @Sendable (cancellable: Bool) async in
            await self.wait(in: \.drain, cancellable: cancellable) { machine in
                !machine.toCloseIsEmpty || machine.isDrained
            }
        }
        guard let deadline else {
            await changed(false)
            return
        }
        await race(until: deadline) { await changed(true) }
    }

    /// Sleeps until `instant`, or until the task is cancelled, or until the pool starts shutting down.
    private func sleepUnlessShutDown(until instant: ContinuousClock.Instant) async {
        await race(until: instant) {
            await self.wait(in: \.shutdown, cancellable: true) { $0.isShutdown }
        }
    }

    /// Runs `wait` against a sleep until `instant`; returns when either ends (the other is cancelled).
    private func race(until instant: ContinuousClock.Instant, _ wait: @escaping @Sendable () async -> Void) async {
        await withTaskGroup(of: Void.self) { group in
            group.addTask { try? await Task.sleep(until: instant, clock: .continuous) }
            group.addTask { await wait() }
            await group.next()
            group.cancelAll()
        }
    }

    /// Suspends at `bell` until it is rung (``ring(_:)``), unless `ready` already holds. `ready`
    /// is checked, and the waiter registered, under the pool's lock, so an event that changes the
    /// state and then rings cannot slip in between. A `cancellable` wait also ends on cancellation.
    private func wait(in bell: WritableKeyPath<Bells, Bells.Waiters> & Sendable, cancellable: Bool,
                      unless ready: @escaping (inout StateMachine) -> Bool) async {
        let ticket = waiterSerial.wrappingAdd(1, ordering: .relaxed).newValue
        await withTaskCancellationHandler {
            await withUnsafeContinuation { (continuation: UnsafeContinuation<Void, Never>) in
                let resumeNow = state.withLock { machine -> Bool in
                    if ready(&machine) || (cancellable && Task.isCancelled) { return true }
                    bells.withLock { $0[keyPath: bell][ticket] = continuation }
                    return false
                }
                if resumeNow { continuation.resume() }
            }
        } onCancel: {
            if cancellable { bells.withLock { $0[keyPath: bell].removeValue(forKey: ticket) }?.resume() }
        }
    }

    /// Resumes every task waiting at `bell`.
    private func ring(_ bell: WritableKeyPath<Bells, Bells.Waiters>) {
        let waiting = bells.withLock { bells -> [UnsafeContinuation<Void, Never>] in
            guard !bells[keyPath: bell].isEmpty else { return [] }
            defer { bells[keyPath: bell].removeAll() }
            return Array(bells[keyPath: bell].values)
        }
        for continuation in waiting { continuation.resume() }
    }

    /// Wakes tasks in `shutdown` waiting for a change.
    private func wakeDrainWaiters() {
        guard shuttingDown.load(ordering: .acquiring) else { return }
        ring(\.drain)
    }

    // MARK: - Returning (called by Lease)

    func release(slot: Int32, lease id: UInt64, fileID: StaticString, line: UInt, function: StaticString) {
        let releaser = stampIfTracked(slot, fileID: fileID, line: line, function: function)
        let (action, moved) = state.withLock { machine -> (StateMachine.ReleaseAction, Bool) in
            let moved = releaser.map { machine.transfer(slot: slot, to: $0.task, node: $0.node) != nil } ?? false
            return (machine.release(slot: slot, lease: id, now: .now), moved)
        }
        if moved { record(.transfer, releaser) }
        record(.release, releaser)
        perform(action)
    }

    func returnBroken(slot: Int32, lease id: UInt64, fileID: StaticString, line: UInt, function: StaticString) {
        let releaser = stampIfTracked(slot, fileID: fileID, line: line, function: function)
        let (action, moved) = state.withLock { machine -> (StateMachine.ReleaseAction, Bool) in
            let moved = releaser.map { machine.transfer(slot: slot, to: $0.task, node: $0.node) != nil } ?? false
            return (machine.releaseBroken(slot: slot, lease: id, now: .now), moved)
        }
        if moved { record(.transfer, releaser) }
        record(.release, releaser)
        perform(action)
    }

    /// A lease on a handed-out connection, its address recorded with the holding of its slot.
    private func lease(_ handed: StateMachine.Handed, owner: TaskID?) -> Lease {
        let lease = Lease(pool: self, connection: handed.connection, slot: handed.slot, id: handed.id, owner: owner)
        if handed.slot != StateMachine.untrackedSlot {
            let address = objectAddress(lease)
            state.withLock { $0.noteObject(address, slot: handed.slot) }
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

    func releaseDropped(slot: Int32, lease leaseID: UInt64) {
        let (entry, action) = state.withLock { machine in
            (machine.holding(slot), machine.release(slot: slot, lease: leaseID, now: .now))
        }
        perform(action)
        if case .returned = action {
            ledger.reportDropped(resource: id, name: name, kind: .connection, entry: entry)
        }
    }

    // MARK: - Helpers

    private func stampIfTracked(_ slot: Int32, fileID: StaticString, line: UInt,
                                function: StaticString) -> OwnerStamp? {
        guard ledger.isEnabled, slot != StateMachine.untrackedSlot else { return nil }
        return ledger.stamp(fileID: fileID, line: line, function: function)
    }

    private func perform(_ action: StateMachine.ReleaseAction) {
        if case .returned(let wakes) = action { resume(wakes) }
    }

    /// Resumes the waiters an event served, and wakes a shutdown waiting for a change.
    private func resume(_ wakes: [StateMachine.Wake]) {
        for wake in wakes {
            if case .connection = wake.grant { record(.handoff, wake.stamp) }
            wake.continuation.resume(returning: wake.grant)
        }
        wakeDrainWaiters()
    }

    /// Closes a connection, then frees its unit of capacity: to the waiters, or — with `keepRight`
    /// — to this task, which closed it to replace it.
    private func close(_ connection: Connection, _ stamp: OwnerStamp?, keepRight: Bool = false) async {
        await closeConnection(connection)
        record(.close, stamp)
        resume(state.withLock { $0.closeFinished(now: .now, keepRight: keepRight) })
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
