import DequeModule

extension ConnectionPool {
    /// The pool's bookkeeping as a value type. Every event returns what the caller must do after it
    /// has left the lock — resume waiters, run the factory, close a connection — so no transition
    /// suspends, resumes or calls user code, and each one can be driven directly by a test. Time is
    /// passed in (`now`), never read here.
    ///
    /// Capacity accounting: `open` counts every connection that exists — idle, leased, waiting to be
    /// closed (`toClose`) or being closed (`closing`) — and `creating` counts factory calls in flight;
    /// `open + creating` never exceeds `capacity`. A connection keeps its unit of capacity until its
    /// close callback has returned, so the server never sees more than `capacity` connections at once.
    ///
    /// Closing is always done by a task that can wait for it, never by a task started for the purpose:
    /// a connection that must be closed waits in `toClose` until a checkout that needs its unit of
    /// capacity takes it (`Grant.replace`: close it, then create), or ``ConnectionPool/run()`` or
    /// ``ConnectionPool/shutdown(gracePeriod:fileID:line:function:)`` closes it.
    ///
    /// The invariant that makes the pool fair: while anyone waits, there is no idle connection, no unit
    /// of capacity a creation could use, and no connection waiting to be closed — unless the attempt
    /// limit is what stops its replacement. Every event that
    /// frees something offers it to the head waiter first (``serveWaiters(now:)``).
    struct StateMachine {
        typealias Continuation = UnsafeContinuation<Grant, any Error>
        typealias Instant = ContinuousClock.Instant

        /// A connection handed to a checkout: recorded as held under `slot`, tracked as lease `id`.
        struct Handed {
            var connection: Connection
            var slot: Int32
            var id: UInt64
            /// How long it had been idle before it was handed out (zero when it came straight from
            /// another lease or from the factory).
            var idleFor: Duration
        }

        /// What a waiter is woken with.
        enum Grant {
            /// A connection.
            case connection(Handed)
            /// The right to run the factory: a unit of capacity reserved for this waiter. Not before
            /// `notBefore` (back-off after failed attempts).
            case create(notBefore: Instant?)
            /// The unit of capacity of a connection that must be closed: close it, then create.
            case replace(Connection, notBefore: Instant?)
        }

        /// A waiter to resume with its grant, once the lock is released.
        typealias Wake = (continuation: Continuation, grant: Grant, stamp: OwnerStamp?)

        struct Waiter {
            var continuation: Continuation
            var stamp: OwnerStamp?
        }

        struct Idle {
            var connection: Connection
            var created: Instant
            var since: Instant
        }

        let capacity: Int
        let configuration: Configuration
        /// Idle connections, the most recently used last (checkouts take it: the others age out).
        private(set) var idle: [Idle] = []
        /// Connections checked out, by lease id, with their creation time.
        private(set) var leased: [UInt64: (connection: Connection, created: Instant)] = [:]
        /// Connections that must be closed, each still holding its unit of capacity.
        private(set) var toClose: Deque<Connection> = []
        /// Connections that exist: idle, leased, waiting to be closed, or being closed.
        private(set) var open = 0
        /// Factory calls in flight, and creation rights handed out (each holds a unit of capacity).
        private(set) var creating = 0
        /// Close callbacks started and not returned (part of `open`).
        private(set) var closing = 0
        /// Checkouts closing a connection in order to replace it (part of `closing`): each counts as a
        /// connection attempt already, so replacements never exceed the attempt limit either.
        private(set) var replacing = 0
        private(set) var waiters = WaiterQueue<Waiter>()
        private(set) var holdings: HoldingTable
        private(set) var isShutdown = false
        /// Consecutive failed connection attempts, and when the next may start.
        private(set) var consecutiveFailures = 0
        private(set) var retryAt: Instant?
        private(set) var statistics = Statistics()
        private var nextLeaseID: UInt64 = 0

        /// `runtimeParentOffset`: how holdings read their tasks' ancestry (the ledger's runtime layout;
        /// 0 when it does not read the runtime).
        init(capacity: Int, configuration: Configuration = .init(), runtimeParentOffset: Int = 0) {
            self.capacity = capacity
            self.configuration = configuration
            self.holdings = HoldingTable(parentOffset: runtimeParentOffset)
        }

        /// Slot value meaning "leased, not recorded" (ledger off).
        static var untrackedSlot: Int32 { -1 }

        /// Connections checked out.
        var held: Int { leased.count }
        /// Units of capacity a new factory call could use right now.
        var creatable: Int {
            if isShutdown { return 0 }
            return max(0, min(capacity - open - creating, attemptsLeft))
        }
        /// Connection attempts that may still start (factory calls and replacements in flight count).
        private var attemptsLeft: Int { configuration.maximumConcurrentConnectionAttempts - creating - replacing }
        /// What a checkout could get without waiting (idle connections, unused capacity, and units of
        /// connections waiting to be closed).
        var available: Int { isShutdown ? 0 : idle.count + toClose.count + max(0, capacity - open - creating) }
        /// Whether every connection the pool opened has been closed and nothing is being created.
        var isDrained: Bool { open == 0 && creating == 0 }
        /// Whether no connection waits to be closed.
        var toCloseIsEmpty: Bool { toClose.isEmpty }

        private mutating func grant(_ connection: Connection, created: Instant, idleFor: Duration, _ stamp: OwnerStamp?,
                                    task taskAddress: @autoclosure () -> UInt = currentTaskAddress(),
                                    checked: Bool = false) -> Handed {
            nextLeaseID &+= 1
            leased[nextLeaseID] = (connection, created)
            let slot = stamp.map { holdings.insert($0, taskAddress: taskAddress(), checked: checked) } ?? Self.untrackedSlot
            return Handed(connection: connection, slot: slot, id: nextLeaseID, idleFor: idleFor)
        }

        private func checkInvariants() {
            assert(open + creating <= capacity, "BUG DETECTED: pool has more connections than its capacity")
            assert(open == idle.count + leased.count + toClose.count + closing,
                   "BUG DETECTED: pool lost count of its connections")
            assert(waiters.isEmpty || (idle.isEmpty && creatable == 0 && (toClose.isEmpty || attemptsLeft <= 0)),
                   "BUG DETECTED: a waiter queues while a connection or capacity is free")
        }

        private func expired(created: Instant, now: Instant) -> Bool {
            guard let lifetime = configuration.maximumLifetime else { return false }
            return created.duration(to: now) >= lifetime
        }

        /// When a creation may start (`nil`: now).
        private func notBefore(_ now: Instant) -> Instant? {
            guard let retryAt, retryAt > now else { return nil }
            return retryAt
        }

        // MARK: checkout

        enum CheckoutAction {
            /// An idle connection.
            case leased(Handed)
            /// A unit of capacity was reserved: run the factory (not before `notBefore`).
            case create(notBefore: Instant?)
            /// Close this connection (its unit is now yours), then run the factory.
            case replace(Connection, notBefore: Instant?)
            /// Nothing free, or others already queue: wait in line.
            case mustWait
            /// The pool is shut down.
            case shutDown
        }

        /// Takes what is free for one checkout: an idle connection (one past its lifetime is put
        /// aside to be closed), else unused capacity, else the unit of a connection waiting to be
        /// closed. `nil` when nothing is.
        private mutating func take(_ stamp: OwnerStamp?, now: Instant,
                                   task taskAddress: @autoclosure () -> UInt = currentTaskAddress(),
                                   checked: Bool = false) -> Grant? {
            if let entry = takeIdle(now: now) {
                return .connection(grant(entry.connection, created: entry.created, idleFor: entry.since.duration(to: now),
                                         stamp, task: taskAddress(), checked: checked))
            }
            if creatable > 0 {
                creating += 1
                return .create(notBefore: notBefore(now))
            }
            if attemptsLeft > 0, let connection = toClose.popFirst() {
                closing += 1
                replacing += 1
                return .replace(connection, notBefore: notBefore(now))
            }
            return nil
        }

        /// The fast path: only when nobody queues, so a newcomer never barges past a waiter.
        mutating func checkout(_ stamp: OwnerStamp?, now: Instant) -> CheckoutAction {
            if isShutdown { return .shutDown }
            guard waiters.isEmpty else { return .mustWait }
            switch take(stamp, now: now) {
            case .connection(let handed)?: return .leased(handed)
            case .create(let notBefore)?: return .create(notBefore: notBefore)
            case .replace(let connection, let notBefore)?: return .replace(connection, notBefore: notBefore)
            case nil: return .mustWait
            }
        }

        /// An idle connection only: never reserves capacity (the factory would suspend), and never one
        /// that has rested `checkAfter` or longer (its health check would suspend).
        mutating func tryCheckout(_ stamp: OwnerStamp?, now: Instant, checkAfter: Duration? = nil) -> Handed? {
            guard !isShutdown, waiters.isEmpty,
                  let entry = takeIdle(now: now, unlessRestedFor: checkAfter) else { return nil }
            return grant(entry.connection, created: entry.created, idleFor: entry.since.duration(to: now), stamp)
        }

        /// The most recently used idle connection; those past their lifetime on the way are set aside
        /// to be closed. `nil` when none is left — or when the next one has rested `unlessRestedFor`
        /// or longer (it is then left in place).
        private mutating func takeIdle(now: Instant, unlessRestedFor limit: Duration? = nil) -> Idle? {
            while let entry = idle.last {
                if expired(created: entry.created, now: now) {
                    idle.removeLast()
                    toClose.append(entry.connection)
                    continue
                }
                if let limit, entry.since.duration(to: now) >= limit { return nil }
                return idle.removeLast()
            }
            return nil
        }

        enum EnqueueAction {
            /// Something became free between the fast path and the enqueue: resume at once with it.
            case resume(Continuation, Grant)
            /// The task was cancelled before it could queue.
            case resumeCancelled(Continuation)
            /// The pool was shut down before the waiter could queue.
            case resumeShutDown(Continuation)
            /// Queued; a release, a freed unit of capacity, a cancel or a shutdown will resume it.
            case suspended
        }

        mutating func enqueue(id: UInt64, _ continuation: Continuation, stamp: OwnerStamp?, now: Instant,
                              isCancelled: Bool) -> EnqueueAction {
            if isShutdown { return .resumeShutDown(continuation) }
            if isCancelled { return .resumeCancelled(continuation) }
            switch checkout(stamp, now: now) {
            case .leased(let handed): return .resume(continuation, .connection(handed))
            case .create(let notBefore): return .resume(continuation, .create(notBefore: notBefore))
            case .replace(let connection, let notBefore): return .resume(continuation, .replace(connection, notBefore: notBefore))
            case .shutDown: return .resumeShutDown(continuation)
            case .mustWait:
                waiters.append(id, Waiter(continuation: continuation, stamp: stamp))
                checkInvariants()
                return .suspended
            }
        }

        /// A queued waiter's task was cancelled: remove it. `nil` means it was already handed a
        /// grant (it passes that on when it wakes) or already failed.
        mutating func cancel(id: UInt64) -> Continuation? {
            waiters.remove(id)?.continuation
        }

        /// Offers whatever is free to the waiters, in order.
        private mutating func serveWaiters(now: Instant) -> [Wake] {
            var wakes: [Wake] = []
            while !isShutdown, let head = waiters.first,
                  let grant = take(head.stamp, now: now, task: taskAddress(of: head.continuation), checked: true) {
                _ = waiters.popFirstPayload()
                wakes.append((head.continuation, grant, head.stamp))
            }
            checkInvariants()
            return wakes
        }

        // MARK: creation

        enum CreationStartAction {
            /// Go ahead and run the factory.
            case proceed
            /// The pool shut down while the right was on its way (or during the back-off); the
            /// capacity was given back.
            case shutDown
            /// The creator was cancelled before it called the factory; the right went to the waiters.
            case cancelled([Wake])
        }

        /// A checkout holding a creation right checks, just before it calls the factory, that the
        /// pool still runs and that it still wants a connection.
        mutating func startCreation(isCancelled: Bool, now: Instant) -> CreationStartAction {
            if isShutdown {
                creating -= 1
                return .shutDown
            }
            if isCancelled { return .cancelled(abandonCreation(now: now)) }
            statistics.connectionAttempts += 1
            return .proceed
        }

        /// A reserved unit of capacity is not going to be used (the creator gave up before calling the
        /// factory). It goes to the waiters, or back to unused capacity.
        mutating func abandonCreation(now: Instant) -> [Wake] {
            precondition(creating > 0, "BUG DETECTED: a creation ended that was never started")
            creating -= 1
            return serveWaiters(now: now)
        }

        /// The factory threw: back off before the next attempt (`jitter` in -1...1 scales the
        /// configured jitter), and give the unit to the waiters — whose attempts wait for the back-off.
        mutating func creationFailed(now: Instant, jitter: Double) -> [Wake] {
            precondition(creating > 0, "BUG DETECTED: a creation ended that was never started")
            creating -= 1
            statistics.failedAttempts += 1
            consecutiveFailures += 1
            let delay = configuration.backoff.delay(afterFailures: consecutiveFailures)
            retryAt = now.advanced(by: delay * (1 + configuration.backoff.jitter * max(-1, min(1, jitter))))
            return serveWaiters(now: now)
        }

        enum CreationAction {
            /// The creator holds the new connection. Its attempt has ended, so another may start: the
            /// waiters it lets in are to be woken.
            case leased(Handed, [Wake])
            /// The creator was cancelled while the factory ran: the connection joined the pool and
            /// went to the waiters, or stayed idle.
            case keptForOthers([Wake])
            /// The pool shut down while the factory ran: close the new connection.
            case close(Connection)
        }

        /// An attempt made a connection: it counts as open and the back-off is over. `false` when the
        /// pool has shut down meanwhile: the connection is then being closed (the caller closes it).
        private mutating func connectionOpened() -> Bool {
            precondition(creating > 0, "BUG DETECTED: a creation ended that was never started")
            creating -= 1
            open += 1
            consecutiveFailures = 0
            retryAt = nil
            guard !isShutdown else {
                closing += 1
                return false
            }
            return true
        }

        /// The factory returned a connection.
        mutating func creationSucceeded(_ connection: Connection, stamp: OwnerStamp?, now: Instant,
                                        isCancelled: Bool) -> CreationAction {
            guard connectionOpened() else { return .close(connection) }
            if isCancelled {
                idle.append(Idle(connection: connection, created: now, since: now))
                return .keptForOthers(serveWaiters(now: now))
            }
            let handed = grant(connection, created: now, idleFor: .zero, stamp)
            return .leased(handed, serveWaiters(now: now))
        }

        /// ``ConnectionPool/run()`` opens a connection to reach ``Configuration/minimumConnections``:
        /// whether it may (nobody waits, the pool is below its minimum, and an attempt may start now).
        mutating func reserveWarmup(now: Instant) -> Bool {
            guard !isShutdown, waiters.isEmpty, open + creating < configuration.minimumConnections,
                  creatable > 0, notBefore(now) == nil else { return false }
            creating += 1
            statistics.connectionAttempts += 1
            return true
        }

        /// A warm-up connection was made: idle, or straight to a waiter that arrived meanwhile.
        mutating func warmupSucceeded(_ connection: Connection, now: Instant) -> (close: Connection?, wakes: [Wake]) {
            guard connectionOpened() else { return (connection, []) }
            idle.append(Idle(connection: connection, created: now, since: now))
            return (nil, serveWaiters(now: now))
        }

        // MARK: release

        enum ReleaseAction {
            /// The connection is idle in the pool, or went to waiters.
            case returned([Wake])
            /// The lease was not outstanding any more (its connection was closed when a shutdown ran
            /// out of time): nothing to do.
            case revoked
        }

        /// A lease came back healthy: straight to the first waiter if there is one, so a newcomer on
        /// the fast path can never take it first; set aside to be closed if it is past its lifetime
        /// or the pool has been shut down.
        mutating func release(slot: Int32, lease id: UInt64, now: Instant) -> ReleaseAction {
            guard let entry = leased.removeValue(forKey: id) else { return .revoked }
            if slot != Self.untrackedSlot { holdings.discard(slot) }
            if isShutdown || expired(created: entry.created, now: now) {
                toClose.append(entry.connection)
                return .returned(serveWaiters(now: now))
            }
            if let head = waiters.popFirstIfAny() {
                let handed = grant(entry.connection, created: entry.created, idleFor: .zero, head.stamp,
                                   task: taskAddress(of: head.continuation), checked: true)
                return .returned([(head.continuation, .connection(handed), head.stamp)])
            }
            idle.append(Idle(connection: entry.connection, created: entry.created, since: now))
            checkInvariants()
            return .returned([])
        }

        /// A lease came back broken (or failed its health check): the connection waits to be
        /// closed, keeping its capacity until then — the head waiter gets it as a right to replace.
        mutating func releaseBroken(slot: Int32, lease id: UInt64, now: Instant) -> ReleaseAction {
            guard let entry = leased.removeValue(forKey: id) else { return .revoked }
            if slot != Self.untrackedSlot { holdings.discard(slot) }
            toClose.append(entry.connection)
            return .returned(serveWaiters(now: now))
        }

        /// A handed-out idle connection failed its health check.
        mutating func failedHealthCheck(slot: Int32, lease id: UInt64, now: Instant) -> ReleaseAction {
            guard leased[id] != nil else { return .revoked }
            statistics.failedHealthChecks += 1
            return releaseBroken(slot: slot, lease: id, now: now)
        }

        /// Whether lease `id` is still outstanding (not returned, not revoked by a shutdown).
        func isLeased(_ id: UInt64) -> Bool { leased[id] != nil }

        /// Connections waiting to be closed, for a task that will close them (``closeFinished(now:keepRight:)``
        /// for each).
        mutating func takeToClose() -> [Connection] {
            let taken = Array(toClose)
            toClose.removeAll()
            closing += taken.count
            return taken
        }

        /// Idle connections that ``ConnectionPool/run()`` should close now: past their lifetime, or
        /// idle longer than the idle timeout while more than the minimum are open.
        mutating func takeExpiredIdle(now: Instant) -> [Connection] {
            var expiredNow: [Connection] = []
            // Connections that will stay open: not already on their way out.
            let staying = open - closing - toClose.count
            var index = 0
            while index < idle.count {
                let entry = idle[index]
                let idleTooLong = configuration.idleTimeout.map { entry.since.duration(to: now) >= $0 } ?? false
                if expired(created: entry.created, now: now)
                    || (idleTooLong && staying - expiredNow.count > configuration.minimumConnections) {
                    expiredNow.append(entry.connection)
                    idle.remove(at: index)
                } else {
                    index += 1
                }
            }
            closing += expiredNow.count
            return expiredNow
        }

        /// A close callback has returned: its unit of capacity is free. With `keepRight`, the task
        /// that closed it keeps the unit as a creation right (it closed it to replace it); otherwise
        /// it goes to the waiters.
        mutating func closeFinished(now: Instant, keepRight: Bool = false) -> [Wake] {
            precondition(closing > 0 && open > 0, "BUG DETECTED: a close finished that was never started")
            closing -= 1
            open -= 1
            statistics.connectionsClosed += 1
            if keepRight {
                // The replacement's attempt starts now. Even after a shutdown: the closer's
                // `startCreation` gives the unit back then.
                precondition(replacing > 0, "BUG DETECTED: a replacement ended that was never started")
                replacing -= 1
                creating += 1
                return []
            }
            return serveWaiters(now: now)
        }

        /// The holding record of a lease (for reports about it).
        func holding(_ slot: Int32) -> HoldingTable.Entry? {
            holdings[slot]
        }

        /// Records the address of the `Lease` object of `slot`.
        mutating func noteObject(_ address: UInt, slot: Int32) {
            holdings.setObject(slot, address)
        }

        /// Records that `task` owns the lease now; returns the previous owner when it changed.
        mutating func transfer(slot: Int32, to task: TaskID, node: ScopeNode?) -> TaskID? {
            holdings.transfer(slot, to: task, node: node)
        }

        // MARK: shutdown

        struct ShutdownAction {
            /// Waiters to fail with `poolShutdown`.
            var fail: [Continuation]
        }

        /// Stops the pool: idle connections are set aside to be closed, waiters fail. `nil` when it
        /// was already shut down.
        mutating func shutdown() -> ShutdownAction? {
            guard !isShutdown else { return nil }
            isShutdown = true
            toClose.append(contentsOf: idle.map(\.connection))
            idle.removeAll()
            let toFail = waiters.removeAll().map(\.continuation)
            return ShutdownAction(fail: toFail)
        }

        /// The shutdown's grace period is over: the connections still leased are taken back to be
        /// closed now. Their leases' later returns are ignored.
        mutating func revokeLeases() -> [Connection] {
            let revoked = leased.values.map(\.connection)
            for slot in holdingsSlots() { holdings.discard(slot) }
            leased.removeAll()
            closing += revoked.count
            statistics.leasesRevoked += revoked.count
            return revoked
        }

        private func holdingsSlots() -> [Int32] {
            var slots: [Int32] = []
            for index in 0..<holdings.storage.used where holdings.storage.entries[index].isLive {
                slots.append(Int32(index))
            }
            return slots
        }
    }
}
