import DequeModule

extension Semaphore {
    /// The semaphore's logic as a value type: every event returns what the caller must do once it
    /// has left the lock (resume a continuation, report a problem). Nothing here suspends, resumes or
    /// logs, so every transition can be tested directly.
    struct StateMachine {
        typealias Continuation = UnsafeContinuation<Int32, any Error>

        struct Waiter {
            var continuation: Continuation
            var stamp: OwnerStamp?
        }

        let capacity: Int
        private(set) var available: Int
        private(set) var waiters = WaiterQueue<Waiter>()
        private(set) var holdings: HoldingTable
        /// Outstanding permits when the ledger is off (the table counts them when it is on).
        private(set) var untrackedHeld = 0
        /// Closed: no permit is granted any more (held ones can still be released).
        private(set) var closed = false

        /// `runtimeParentOffset`: how holdings read their tasks' ancestry (the ledger's runtime layout;
        /// 0 when it does not read the runtime).
        init(capacity: Int, runtimeParentOffset: Int = 0) {
            self.capacity = capacity
            self.holdings = HoldingTable(parentOffset: runtimeParentOffset)
            self.available = capacity
        }

        var held: Int { holdings.count + untrackedHeld }

        /// Slot value meaning "granted, not recorded" (ledger off).
        static let untrackedSlot: Int32 = -1

        /// Records a permit for `stamp`'s task (the running task unless `taskAddress` says otherwise).
        private mutating func grant(_ stamp: consuming OwnerStamp?,
                                    task taskAddress: @autoclosure () -> UInt = currentTaskAddress(),
                                    checked: Bool = false) -> Int32 {
            if let stamp { return holdings.insert(stamp, taskAddress: taskAddress(), checked: checked) }
            untrackedHeld += 1
            return Self.untrackedSlot
        }

        // MARK: acquire

        /// Fast path: a permit if one is free, nobody queues (no barging past waiters) and the
        /// semaphore is open.
        mutating func tryAcquire(_ stamp: consuming OwnerStamp?) -> Int32? {
            guard available > 0, waiters.isEmpty, !closed else { return nil }
            available -= 1
            return grant(stamp)
        }

        enum EnqueueAction {
            /// A permit became free between the fast path and the enqueue: resume at once with it.
            case resumeGranted(Continuation, Int32)
            /// The task was cancelled before it could queue.
            case resumeCancelled(Continuation)
            /// The semaphore is closed.
            case resumeClosed(Continuation)
            /// Queued; the continuation will be resumed by a release, a cancel or nothing else.
            case suspended
        }

        mutating func enqueue(id: UInt64, _ continuation: Continuation, stamp: OwnerStamp?,
                              isCancelled: Bool) -> EnqueueAction {
            if closed { return .resumeClosed(continuation) }
            if isCancelled { return .resumeCancelled(continuation) }
            if let slot = tryAcquire(stamp) { return .resumeGranted(continuation, slot) }
            waiters.append(id, Waiter(continuation: continuation, stamp: stamp))
            return .suspended
        }

        // MARK: release

        enum ReleaseAction {
            /// The permit went back to the pool of free permits.
            case none
            /// The permit was handed to the head waiter (FIFO): resume it with its new slot.
            case handOff(Continuation, Int32, OwnerStamp?)
        }

        /// Returns one permit: straight to the first waiter if there is one, so a newcomer on the
        /// fast path can never take it first.
        mutating func release(slot: Int32) -> ReleaseAction {
            if slot == Self.untrackedSlot {
                untrackedHeld -= 1
            } else {
                holdings.discard(slot)
            }
            if let waiter = waiters.popFirstIfAny() {
                return .handOff(waiter.continuation, grant(waiter.stamp, task: taskAddress(of: waiter.continuation), checked: true),
                                waiter.stamp)
            }
            available += 1
            assert(available <= capacity, "BUG DETECTED: semaphore has more free permits than its capacity")
            return .none
        }

        /// Notes that `task` releases the permit in `slot` (see ``HoldingTable/noteRelease(_:by:)``).
        mutating func noteRelease(slot: Int32, by task: TaskID) {
            holdings.noteRelease(slot, by: task)
        }

        /// Records the address of the `Permit` object of `slot`.
        mutating func noteObject(_ address: UInt, slot: Int32) {
            holdings.setObject(slot, address)
        }

        /// Records that the current task owns the permit now.
        mutating func transfer(slot: Int32, to task: TaskID, node: ScopeNode?) -> TaskID? {
            holdings.transfer(slot, to: task, node: node)
        }

        // MARK: close

        /// Closes the semaphore; returns the waiters to fail, or `nil` if it was closed already.
        mutating func close() -> [Continuation]? {
            guard !closed else { return nil }
            closed = true
            return waiters.removeAll().map(\.continuation)
        }

        // MARK: cancel

        /// A waiter's task was cancelled: if it still queues, remove it and resume it with an error.
        /// If it is no longer queued it was handed a permit already; the waiter itself will notice
        /// the cancellation after it wakes and pass the permit on.
        mutating func cancel(id: UInt64) -> Continuation? {
            waiters.remove(id)?.continuation
        }
    }
}
