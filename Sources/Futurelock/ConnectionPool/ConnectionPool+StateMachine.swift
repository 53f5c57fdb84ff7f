import DequeModule

extension ConnectionPool {
    /// The pool's bookkeeping as a value type. Every event returns what the caller must do after it
    /// has left the lock — resume a waiter, run the factory, close a connection — so no transition
    /// suspends, resumes or calls user code, and each one can be driven directly by a test.
    ///
    /// Capacity accounting: `open` counts every connection that exists (idle, leased, or being
    /// closed) and `creating` counts factory calls in flight; `open + creating` never exceeds
    /// `capacity`. A connection being closed keeps its unit of capacity until its close callback has
    /// returned, so the server never sees more than `capacity` connections at once.
    ///
    /// The invariant that makes the pool fair: while anyone waits, there is no idle connection and no
    /// unused capacity. Every event that frees something (a release, a failed or abandoned creation,
    /// a finished close) offers it to the head waiter first.
    struct StateMachine {
        typealias Continuation = UnsafeContinuation<Grant, any Error>

        /// What a waiter is woken with.
        enum Grant {
            /// A connection, already recorded as held by the waiter (`slot` in the holdings).
            case connection(Connection, Int32)
            /// The right to run the factory: a unit of capacity reserved for this waiter.
            case create
        }

        struct Waiter {
            var continuation: Continuation
            var stamp: OwnerStamp?
        }

        let capacity: Int
        private(set) var idle: [Connection] = []
        /// Connections that exist: idle, leased, or being closed.
        private(set) var open = 0
        /// Factory calls in flight (each holds a unit of capacity).
        private(set) var creating = 0
        /// Connections whose close callback has been started and not finished (part of `open`).
        private(set) var closing = 0
        private(set) var waiters = WaiterQueue<Waiter>()
        private(set) var holdings: HoldingTable
        /// Leased connections when the ledger is off (the table counts them when it is on).
        private(set) var untrackedHeld = 0
        private(set) var isShutdown = false

        /// `runtimeParentOffset`: how holdings read their tasks' ancestry (the ledger's runtime layout;
        /// 0 when it does not read the runtime).
        init(capacity: Int, runtimeParentOffset: Int = 0) {
            self.capacity = capacity
            self.holdings = HoldingTable(parentOffset: runtimeParentOffset)
        }

        /// Slot value meaning "leased, not recorded" (ledger off).
        static var untrackedSlot: Int32 { -1 }

        var held: Int { holdings.count + untrackedHeld }
        /// Units of capacity nobody uses: a checkout could create a connection right now.
        var creatable: Int { isShutdown ? 0 : capacity - open - creating }
        /// What a checkout could get without waiting (idle connections plus unused capacity).
        var available: Int { idle.count + creatable }

        /// Records a lease for `stamp`'s task (the running task unless `taskAddress` says otherwise).
        private mutating func grant(_ stamp: OwnerStamp?,
                                    task taskAddress: @autoclosure () -> UInt = currentTaskAddress(),
                                    checked: Bool = false) -> Int32 {
            if let stamp { return holdings.insert(stamp, taskAddress: taskAddress(), checked: checked) }
            untrackedHeld += 1
            return Self.untrackedSlot
        }

        private mutating func ungrant(_ slot: Int32) -> HoldingTable.Entry? {
            if slot == Self.untrackedSlot {
                untrackedHeld -= 1
                return nil
            }
            return holdings.remove(slot)
        }

        private func checkInvariants() {
            assert(open + creating <= capacity, "BUG DETECTED: pool has more connections than its capacity")
            assert(waiters.isEmpty || (idle.isEmpty && creatable == 0),
                   "BUG DETECTED: a waiter queues while a connection or capacity is free")
        }

        // MARK: checkout

        enum CheckoutAction {
            /// An idle connection, now held under `slot`.
            case leased(Connection, Int32)
            /// A unit of capacity was reserved: run the factory.
            case create
            /// Nothing free, or others already queue: wait in line.
            case mustWait
            /// The pool is shut down.
            case shutDown
        }

        /// The fast path. Takes an idle connection or reserves capacity, but only when nobody queues,
        /// so a newcomer never barges past a waiter.
        mutating func checkout(_ stamp: OwnerStamp?) -> CheckoutAction {
            if isShutdown { return .shutDown }
            guard waiters.isEmpty else { return .mustWait }
            if let connection = idle.popLast() {
                return .leased(connection, grant(stamp))
            }
            if creatable > 0 {
                creating += 1
                return .create
            }
            return .mustWait
        }

        /// An idle connection only: never reserves capacity (the factory would suspend).
        mutating func tryCheckout(_ stamp: OwnerStamp?) -> (Connection, Int32)? {
            guard !isShutdown, waiters.isEmpty, let connection = idle.popLast() else { return nil }
            return (connection, grant(stamp))
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

        mutating func enqueue(id: UInt64, _ continuation: Continuation, stamp: OwnerStamp?,
                              isCancelled: Bool) -> EnqueueAction {
            if isShutdown { return .resumeShutDown(continuation) }
            if isCancelled { return .resumeCancelled(continuation) }
            switch checkout(stamp) {
            case .leased(let connection, let slot):
                return .resume(continuation, .connection(connection, slot))
            case .create:
                return .resume(continuation, .create)
            case .shutDown:
                return .resumeShutDown(continuation)
            case .mustWait:
                waiters.append(id, Waiter(continuation: continuation, stamp: stamp))
                checkInvariants()
                return .suspended
            }
        }

        /// A queued waiter's task was cancelled: remove it. `nil` means it was already handed a
        /// connection or a creation right (it passes that on when it wakes) or already failed.
        mutating func cancel(id: UInt64) -> Continuation? {
            waiters.remove(id)?.continuation
        }

        // MARK: creation

        enum CreationStartAction {
            /// Go ahead and run the factory.
            case proceed
            /// The pool shut down while the right was on its way; the capacity was given back.
            case shutDown
            /// The waiter was cancelled after it got the right; the right went to `next`, if anyone.
            case cancelled(next: Continuation?)
        }

        /// A waiter that was handed the right to create checks, before it calls the factory, that
        /// the pool still runs and that it still wants a connection.
        mutating func startCreation(isCancelled: Bool) -> CreationStartAction {
            if isShutdown {
                creating -= 1
                return .shutDown
            }
            if isCancelled { return .cancelled(next: abandonCreation()) }
            return .proceed
        }

        /// A reserved unit of capacity is not going to be used (the factory failed, or the creator
        /// gave up before calling it). It goes to the head waiter, who will run the factory itself,
        /// or back to unused capacity. Returns the waiter to resume with ``Grant/create``.
        mutating func abandonCreation() -> Continuation? {
            precondition(creating > 0, "BUG DETECTED: a creation ended that was never started")
            creating -= 1
            guard !isShutdown, let head = waiters.popFirstIfAny() else {
                checkInvariants()
                return nil
            }
            creating += 1
            return head.continuation
        }

        enum CreationAction {
            /// The creator holds the new connection under `slot`.
            case leased(Int32)
            /// The creator was cancelled while the factory ran: the connection joined the pool and
            /// went to this waiter (with its new slot), or stayed idle when `handOff` is `nil`.
            case keptForOthers(handOff: (Continuation, Int32, OwnerStamp?)?)
            /// The pool shut down while the factory ran: close the new connection.
            case close(Connection)
        }

        /// The factory returned a connection.
        mutating func creationSucceeded(_ connection: Connection, stamp: OwnerStamp?,
                                        isCancelled: Bool) -> CreationAction {
            precondition(creating > 0, "BUG DETECTED: a creation ended that was never started")
            creating -= 1
            open += 1
            if isShutdown {
                closing += 1
                return .close(connection)
            }
            if isCancelled {
                if let head = waiters.popFirstIfAny() {
                    return .keptForOthers(handOff: (head.continuation,
                                                    grant(head.stamp, task: taskAddress(of: head.continuation), checked: true), head.stamp))
                }
                idle.append(connection)
                checkInvariants()
                return .keptForOthers(handOff: nil)
            }
            checkInvariants()
            return .leased(grant(stamp))
        }

        // MARK: release

        enum ReleaseAction {
            /// The connection is idle in the pool.
            case idled
            /// The connection was handed to the head waiter (FIFO), recorded under its new slot.
            case handOff(Continuation, Grant, OwnerStamp?)
            /// Close the connection, then report ``closeFinished()``.
            case close(Connection)
        }

        /// A lease came back healthy: straight to the first waiter if there is one, so a newcomer on
        /// the fast path can never take it first; closed if the pool has been shut down.
        mutating func release(slot: Int32, connection: Connection) -> ReleaseAction {
            _ = ungrant(slot)
            if isShutdown {
                closing += 1
                return .close(connection)
            }
            if let head = waiters.popFirstIfAny() {
                return .handOff(head.continuation,
                                .connection(connection, grant(head.stamp, task: taskAddress(of: head.continuation), checked: true)),
                                head.stamp)
            }
            idle.append(connection)
            checkInvariants()
            return .idled
        }

        /// A lease came back broken: the connection must be closed; its capacity is freed only once
        /// the close has finished (``closeFinished()``).
        mutating func releaseBroken(slot: Int32) {
            _ = ungrant(slot)
            closing += 1
        }

        /// The close callback of a connection has returned: its unit of capacity is free. The head
        /// waiter, if any, gets the right to create a replacement.
        mutating func closeFinished() -> Continuation? {
            precondition(closing > 0 && open > 0, "BUG DETECTED: a close finished that was never started")
            closing -= 1
            open -= 1
            guard !isShutdown, let head = waiters.popFirstIfAny() else {
                checkInvariants()
                return nil
            }
            creating += 1
            return head.continuation
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
            /// Idle connections to close (each then reports ``closeFinished()``).
            var close: [Connection]
            /// Waiters to fail with `poolShutdown`.
            var fail: [Continuation]
        }

        /// Stops the pool. `nil` when it was already shut down.
        mutating func shutdown() -> ShutdownAction? {
            guard !isShutdown else { return nil }
            isShutdown = true
            let toClose = idle
            idle.removeAll()
            closing += toClose.count
            let toFail = waiters.removeAll().map(\.continuation)
            return ShutdownAction(close: toClose, fail: toFail)
        }
    }
}
