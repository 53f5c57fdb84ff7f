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
            /// Permits asked for (1 unless acquired several at once).
            var count: Int = 1
        }

        /// Permits in total: free plus held. Grows with `addPermits`, shrinks when permits are forgotten.
        private(set) var capacity: Int
        /// Free permits. While waiters queue this can be above 0 only if the head waiter asks for
        /// more than are free (it is never granted past: first come, first served).
        private(set) var available: Int
        private(set) var waiters = WaiterQueue<Waiter>()
        private(set) var holdings: HoldingTable
        /// Permits held right now, recorded or not.
        private(set) var held = 0
        /// Closed: no permit is granted any more (held ones can still be released).
        private(set) var closed = false

        /// `runtimeParentOffset`: how holdings read their tasks' ancestry (the ledger's runtime layout;
        /// 0 when it does not read the runtime).
        init(capacity: Int, runtimeParentOffset: Int = 0) {
            self.capacity = capacity
            self.holdings = HoldingTable(parentOffset: runtimeParentOffset)
            self.available = capacity
        }

        /// Permits the head waiter asks for (0 when nobody waits).
        var headRequest: Int { waiters.first?.count ?? 0 }

        /// Slot value meaning "granted, not recorded" (ledger off).
        static let untrackedSlot: Int32 = -1

        /// Records `count` permits for `stamp`'s task (the running task unless `taskAddress` says otherwise).
        private mutating func grant(_ stamp: consuming OwnerStamp?, count: Int = 1,
                                    task taskAddress: @autoclosure () -> UInt = currentTaskAddress(),
                                    checked: Bool = false) -> Int32 {
            held &+= count
            if let stamp { return holdings.insert(stamp, taskAddress: taskAddress(), checked: checked, units: count) }
            return Self.untrackedSlot
        }

        // MARK: acquire

        /// Fast path: `count` permits if that many are free, nobody queues (no barging past waiters)
        /// and the semaphore is open.
        mutating func tryAcquire(_ stamp: consuming OwnerStamp?, count: Int = 1) -> Int32? {
            guard grantsAtOnce(count) else { return nil }
            available -= count
            return grant(stamp, count: count)
        }

        /// Whether `count` permits can be granted without waiting: they are free, nobody queues (no
        /// barging past waiters) and the semaphore is open.
        @inline(__always)
        private func grantsAtOnce(_ count: Int) -> Bool {
            available >= count && waiters.isEmpty && !closed
        }

        /// ``tryAcquire(_:count:)`` for one permit with the ledger off.
        @inline(__always)
        mutating func tryAcquireUntracked() -> Bool {
            guard grantsAtOnce(1) else { return false }
            available &-= 1
            held &+= 1
            return true
        }

        enum EnqueueAction {
            /// Permits became free between the fast path and the enqueue: resume at once with them.
            case resumeGranted(Continuation, Int32)
            /// The task was cancelled before it could queue.
            case resumeCancelled(Continuation)
            /// The semaphore is closed.
            case resumeClosed(Continuation)
            /// More permits asked for than the semaphore has in all.
            case resumeExceedsCapacity(Continuation, capacity: Int)
            /// Queued; the continuation will be resumed by a release, a cancel, a close, or permits
            /// being forgotten below its request.
            case suspended
        }

        mutating func enqueue(id: UInt64, _ continuation: Continuation, stamp: OwnerStamp?, count: Int = 1,
                              isCancelled: Bool) -> EnqueueAction {
            if closed { return .resumeClosed(continuation) }
            if isCancelled { return .resumeCancelled(continuation) }
            if count > capacity { return .resumeExceedsCapacity(continuation, capacity: capacity) }
            if let slot = tryAcquire(stamp, count: count) { return .resumeGranted(continuation, slot) }
            // A waiter takes its id before it locks, and its id is its place in line: one that reaches
            // the lock after a waiter with a larger id goes ahead of it. If that makes it the head, and
            // its permits are free (the old head asks for more than are free), it is granted now —
            // otherwise it would wait for a release although first in line with its permits free.
            if count <= available, let head = waiters.firstID, id < head {
                available -= count
                return .resumeGranted(continuation, grant(stamp, count: count))
            }
            waiters.append(id, Waiter(continuation: continuation, stamp: stamp, count: count))
            return .suspended
        }

        // MARK: release

        /// A waiter given its permits: resume it with its new slot.
        typealias Grant = (continuation: Continuation, slot: Int32, stamp: OwnerStamp?)

        enum ReleaseAction {
            /// Nobody to wake.
            case none
            /// The permits went to the head waiter (FIFO): resume it with its new slot.
            case handOff(Continuation, Int32, OwnerStamp?)
            /// Several waiters were served at once (several permits came back, or were added).
            case handOffs([Grant])
        }

        /// Returns `count` permits: straight to the waiters at the head of the queue while they fit,
        /// so a newcomer on the fast path can never take them first.
        mutating func release(slot: Int32, count: Int = 1) -> ReleaseAction {
            if slot != Self.untrackedSlot { holdings.discard(slot) }
            held &-= count
            available &+= count
            assert(available + held <= capacity, "BUG DETECTED: semaphore has more permits than its capacity")
            if waiters.isEmpty { return .none }
            return serveWaiters()
        }

        /// Grants permits to the head waiters, in order, while the head's request fits in what is
        /// free. The head blocks everyone behind it, so a large request is never starved by small ones.
        private mutating func serveWaiters() -> ReleaseAction {
            guard !closed, let first = waiters.first, first.count <= available else { return .none }
            let head = waiters.popFirstPayload()
            available &-= head.count
            let slot = grant(head.stamp, count: head.count, task: taskAddress(of: head.continuation), checked: true)
            guard let next = waiters.first, next.count <= available else {
                return .handOff(head.continuation, slot, head.stamp)
            }
            var grants: [Grant] = [(head.continuation, slot, head.stamp)]
            while let waiter = waiters.first, waiter.count <= available {
                let served = waiters.popFirstPayload()
                available &-= served.count
                grants.append((served.continuation,
                               grant(served.stamp, count: served.count, task: taskAddress(of: served.continuation),
                                     checked: true),
                               served.stamp))
            }
            return .handOffs(grants)
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

        // MARK: adding and forgetting permits

        /// Waiters failed because their request no longer fits in the semaphore's capacity.
        typealias Failed = [(continuation: Continuation, requested: Int)]

        /// Adds `count` permits (free at once, so queued waiters may be served).
        mutating func addPermits(_ count: Int) -> ReleaseAction {
            capacity &+= count
            available &+= count
            return serveWaiters()
        }

        /// Removes up to `count` free permits from the semaphore for good; returns how many were
        /// removed, and the waiters whose request no longer fits in what is left.
        mutating func forgetPermits(_ count: Int) -> (forgotten: Int, failed: Failed, served: ReleaseAction) {
            let forgotten = min(count, available)
            available -= forgotten
            capacity -= forgotten
            let failed = failOversizedWaiters()
            return (forgotten, failed, failed.isEmpty ? .none : serveWaiters())
        }

        /// A held permit is forgotten: its `count` permits leave the semaphore instead of coming back.
        mutating func forget(slot: Int32, count: Int) -> (failed: Failed, served: ReleaseAction) {
            if slot != Self.untrackedSlot { holdings.discard(slot) }
            held &-= count
            capacity &-= count
            let failed = failOversizedWaiters()
            return (failed, failed.isEmpty ? .none : serveWaiters())
        }

        /// Removes the waiters asking for more permits than the semaphore now has in all; those left
        /// are still in order, and the new head may fit (the caller serves it next).
        private mutating func failOversizedWaiters() -> Failed {
            var failed: Failed = []
            guard !waiters.isEmpty else { return failed }
            var oversized: [UInt64] = []
            waiters.forEachInOrder { _, id, waiter in
                if waiter.count > capacity { oversized.append(id) }
            }
            for id in oversized {
                if let waiter = waiters.remove(id) { failed.append((waiter.continuation, waiter.count)) }
            }
            return failed
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
        /// If it is no longer queued it was handed its permits already; the waiter itself will notice
        /// the cancellation after it wakes and pass them on. Removing a head that asked for more than
        /// is free may let the waiters behind it fit: those are returned to be resumed.
        mutating func cancel(id: UInt64) -> (Continuation?, ReleaseAction) {
            guard let waiter = waiters.remove(id) else { return (nil, .none) }
            return (waiter.continuation, available > 0 ? serveWaiters() : .none)
        }
    }
}
