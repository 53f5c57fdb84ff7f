import DequeModule

extension BoundedChannel {
    /// The channel's logic as a value type. Every event returns what the caller must do after it has
    /// left the lock — resume a sender, a reserver or a receiver — so nothing here suspends, resumes
    /// or records, and every transition can be driven directly by a test.
    ///
    /// Invariants (checked in debug builds by ``checkInvariants()``):
    /// - `available + buffer.count + held == capacity`: a slot is free, holds a buffered message, or
    ///   is reserved by an outstanding ``SendPermit``.
    /// - senders queue only while no slot is free (`!senders.isEmpty ⇒ available == 0`): a freed slot
    ///   always goes to the head sender at once, so a slot can never sit free behind a queue.
    /// - receivers queue only while nothing is buffered (`!receivers.isEmpty ⇒ buffer.isEmpty`): a
    ///   message that arrives while a receiver waits goes to the head receiver instead of the buffer.
    /// - once closed, no sender queues; receivers queue only while reservations are outstanding
    ///   (`closed && !receivers.isEmpty ⇒ held > 0`): a `SendPermit` reserved before the close can
    ///   still send, so the channel is finished only when the buffer is drained *and* every
    ///   reservation has been used or given back (tokio's rule).
    ///
    /// Every transition of a send, a reserve or a receive — fast path, queueing and hand-off — is
    /// `@inlinable`, so a client module specialises it for its element type and no generic metadata
    /// is looked up at run time on those paths. Only the rare transitions (close, ownership transfer)
    /// and the ledger's own tables are reached through non-inlined calls.
    @usableFromInline
    struct StateMachine {
        @usableFromInline typealias SendContinuation = UnsafeContinuation<Void, any Error>
        @usableFromInline typealias ReserveContinuation = UnsafeContinuation<Int32, any Error>
        @usableFromInline typealias ReceiveContinuation = UnsafeContinuation<Element?, any Error>

        /// A queued `send` or `reserve`. A `send` waiter carries its message, which enters the channel
        /// only when the waiter is handed a slot.
        @usableFromInline
        enum SenderWaiter {
            case send(Element, SendContinuation, OwnerStamp?)
            case reserve(ReserveContinuation, OwnerStamp?)
        }

        /// A queued `receive`.
        @usableFromInline
        struct ReceiverWaiter {
            @usableFromInline var continuation: ReceiveContinuation
            @usableFromInline var stamp: OwnerStamp?

            @usableFromInline
            init(continuation: ReceiveContinuation, stamp: OwnerStamp?) {
                self.continuation = continuation
                self.stamp = stamp
            }
        }

        /// A waiter to resume once the lock is released.
        @usableFromInline
        enum Wakeup {
            /// A queued `send` was handed a slot: its message is in the channel; resume it with success.
            case sendAccepted(SendContinuation, OwnerStamp?)
            /// A queued `reserve` was handed a slot, recorded under `slot`.
            case reserveGranted(ReserveContinuation, Int32, OwnerStamp?)
            /// A queued `receive` was handed a message.
            case received(ReceiveContinuation, Element, OwnerStamp?)
            /// A queued `receive` on a closed channel whose last reservation was just used or given
            /// back: there will be no more messages; resume it with `nil`.
            case finished(ReceiveContinuation, OwnerStamp?)
        }

        /// The waiters one event woke. Usually zero or one, so the first is stored inline and only
        /// the rare cascade (a freed slot passing through several send waiters straight to waiting
        /// receivers) spills into an array.
        @usableFromInline
        struct Wakeups {
            @usableFromInline var first: Wakeup?
            @usableFromInline var rest: [Wakeup] = []

            @inlinable init() { first = nil }

            @inlinable var isEmpty: Bool { first == nil }

            @inlinable
            mutating func append(_ wakeup: Wakeup) {
                if first == nil { first = wakeup } else { rest.append(wakeup) }
            }
        }

        @usableFromInline let capacity: Int
        /// Slots neither buffered nor reserved.
        @usableFromInline var available: Int
        @usableFromInline var buffer: Deque<Element>
        @usableFromInline var closed = false
        @usableFromInline var senders = WaiterQueue<SenderWaiter>()
        @usableFromInline var receivers = WaiterQueue<ReceiverWaiter>()
        /// Outstanding reservations when the ledger is on.
        @usableFromInline var holdings: HoldingTable
        /// Outstanding reservations when the ledger is off.
        @usableFromInline var untrackedHeld = 0

        /// Slot value meaning "reserved, not recorded" (ledger off).
        @usableFromInline static var untrackedSlot: Int32 { -1 }

        /// `runtimeParentOffset`: how holdings read their tasks' ancestry (the ledger's runtime layout;
        /// 0 when it does not read the runtime).
        init(capacity: Int, runtimeParentOffset: Int = 0) {
            self.capacity = capacity
            self.holdings = HoldingTable(parentOffset: runtimeParentOffset)
            self.available = capacity
            // Small channels get their whole buffer up front; large ones grow as they fill.
            self.buffer = Deque(minimumCapacity: Swift.min(capacity, 256))
        }

        /// Slots reserved by outstanding send permits.
        @usableFromInline var held: Int { holdings.count + untrackedHeld }

        /// Debug-only check of the invariants listed on the type.
        func checkInvariants() {
            assert(available >= 0 && available + buffer.count + held == capacity,
                   "BUG DETECTED: channel slots do not add up (\(available) free + \(buffer.count) buffered + \(held) reserved ≠ \(capacity))")
            assert(senders.isEmpty || available == 0, "BUG DETECTED: a sender queues while a slot is free")
            assert(receivers.isEmpty || buffer.isEmpty, "BUG DETECTED: a receiver queues while a message is buffered")
            assert(!closed || senders.isEmpty, "BUG DETECTED: a sender queues on a closed channel")
            assert(!closed || receivers.isEmpty || held > 0,
                   "BUG DETECTED: a receiver queues on a closed channel with no reservation outstanding")
        }

        // MARK: - Sending

        @usableFromInline
        enum SendAttempt {
            /// The message is in the buffer.
            case buffered
            /// A receiver was waiting: the message goes straight to it (resume it after unlocking);
            /// no slot is used.
            case delivered(ReceiverWaiter, Element)
            /// No free slot, or senders queue ahead: the caller must wait (or give up).
            case full
            /// The channel is closed; the message was not taken.
            case closed
        }

        /// The non-waiting send: succeeds only with a free slot and nobody queued ahead (no barging).
        @inlinable
        mutating func trySend(_ value: Element) -> SendAttempt {
            if closed { return .closed }
            guard available > 0, senders.isEmpty else { return .full }
            if receivers.isEmpty {
                buffer.append(value)
                available -= 1
                return .buffered
            }
            return .delivered(receivers.popFirstPayload(), value)
        }

        @usableFromInline
        enum EnqueueSendAction {
            /// Queued; a hand-off, a cancellation or `close` will resume it.
            case suspended
            /// A slot freed up before the waiter could queue: the message is in; resume with success
            /// (and resume the receiver it was delivered to, if any).
            case resumeAccepted(SendContinuation, ReceiverWaiter?, Element?)
            /// The channel is closed; the message was not taken.
            case resumeClosed(SendContinuation)
            /// The task was cancelled before it could queue; the message was not taken.
            case resumeCancelled(SendContinuation)
        }

        /// The waiting send, under the lock: retries the fast path, then queues unless the task is
        /// cancelled. `isCancelled` is only evaluated (under the lock) when the sender has to queue.
        @inlinable
        mutating func enqueueSend(id: UInt64, _ value: Element, _ continuation: SendContinuation,
                                  stamp: OwnerStamp?, isCancelled: @autoclosure () -> Bool) -> EnqueueSendAction {
            switch trySend(value) {
            case .closed:
                return .resumeClosed(continuation)
            case .buffered:
                return .resumeAccepted(continuation, nil, nil)
            case .delivered(let receiver, let value):
                return .resumeAccepted(continuation, receiver, value)
            case .full:
                if isCancelled() { return .resumeCancelled(continuation) }
                senders.append(id, .send(value, continuation, stamp))
                return .suspended
            }
        }

        // MARK: - Reserving

        @usableFromInline
        enum ReserveAttempt {
            case granted(Int32)
            case full
            case closed
        }

        /// The non-waiting reserve: a slot if one is free and no sender queues ahead.
        @inlinable
        mutating func tryReserve(_ stamp: OwnerStamp?) -> ReserveAttempt {
            if closed { return .closed }
            guard available > 0, senders.isEmpty else { return .full }
            available -= 1
            return .granted(recordReservation(stamp))
        }

        /// Records a reservation for `stamp`'s task (the running task unless `taskAddress` says otherwise).
        @inlinable
        mutating func recordReservation(_ stamp: OwnerStamp?,
                                        task taskAddress: @autoclosure () -> UInt = currentTaskAddress(),
                                        checked: Bool = false) -> Int32 {
            if let stamp { return holdings.insert(stamp, taskAddress: taskAddress(), checked: checked) }
            untrackedHeld += 1
            return Self.untrackedSlot
        }

        @inlinable
        mutating func removeReservation(_ slot: Int32) {
            if slot == Self.untrackedSlot {
                untrackedHeld -= 1
            } else {
                holdings.remove(slot)
            }
        }

        @usableFromInline
        enum EnqueueReserveAction {
            case suspended
            case resumeGranted(ReserveContinuation, Int32)
            case resumeClosed(ReserveContinuation)
            case resumeCancelled(ReserveContinuation)
        }

        @inlinable
        mutating func enqueueReserve(id: UInt64, _ continuation: ReserveContinuation, stamp: OwnerStamp?,
                                     isCancelled: @autoclosure () -> Bool) -> EnqueueReserveAction {
            switch tryReserve(stamp) {
            case .closed:
                return .resumeClosed(continuation)
            case .granted(let slot):
                return .resumeGranted(continuation, slot)
            case .full:
                if isCancelled() { return .resumeCancelled(continuation) }
                senders.append(id, .reserve(continuation, stamp))
                return .suspended
            }
        }

        // MARK: - Using a reservation

        @usableFromInline
        enum ReservedSendAction {
            /// The reserved slot now holds the message.
            case buffered
            /// A receiver was waiting: the message goes to it, and the slot, now free, was handed on.
            case delivered(ReceiverWaiter, Element, Wakeups)
        }

        /// Sends on a reserved slot. Never waits: the slot is already the sender's — also after the
        /// channel was closed, which only stops *new* sends and reservations.
        @inlinable
        mutating func sendReserved(slot: Int32, _ value: Element, by sender: TaskID = .none) -> ReservedSendAction {
            if sender != .none { holdings.noteRelease(slot, by: sender) }
            removeReservation(slot)
            if receivers.isEmpty {
                buffer.append(value)
                return .buffered
            }
            let receiver = receivers.popFirstPayload()
            var wakeups = slotFreed()
            finishIfDrained(&wakeups)
            return .delivered(receiver, value, wakeups)
        }

        /// Gives a reserved slot back unused (explicit release, dropped permit, cancelled reserver).
        @inlinable
        mutating func releaseReserved(slot: Int32, by releaser: TaskID = .none) -> Wakeups {
            if releaser != .none { holdings.noteRelease(slot, by: releaser) }
            removeReservation(slot)
            var wakeups = slotFreed()
            finishIfDrained(&wakeups)
            return wakeups
        }

        /// On a closed channel, once nothing is buffered or reserved, nothing can arrive any more:
        /// every queued receiver gets `nil`.
        @inlinable
        mutating func finishIfDrained(_ wakeups: inout Wakeups) {
            guard closed, held == 0, buffer.isEmpty else { return }
            while let receiver = receivers.popFirstIfAny() {
                wakeups.append(.finished(receiver.continuation, receiver.stamp))
            }
        }

        /// Records the address of the `SendPermit` object of `slot`.
        mutating func noteObject(_ address: UInt, slot: Int32) {
            holdings.setObject(slot, address)
        }

        /// Records that `task` (in `node`) now owns the reservation; returns the previous owner if it moved.
        mutating func transfer(slot: Int32, to task: TaskID, node: ScopeNode?) -> TaskID? {
            holdings.transfer(slot, to: task, node: node)
        }

        // MARK: - Receiving

        @usableFromInline
        enum ReceiveAttempt {
            /// The next message; its slot is free again and nobody was waiting for it.
            case message(Element)
            /// The next message; its slot was handed to queued senders, who must be resumed.
            case messageHandingOff(Element, Wakeups)
            /// Closed and drained: there will never be another message.
            case finished
            /// Nothing buffered yet.
            case empty
        }

        /// The non-waiting receive. Nothing is buffered while receivers queue, so taking a buffered
        /// message never jumps a queued receiver.
        @inlinable
        mutating func tryReceive() -> ReceiveAttempt {
            if let value = buffer.popFirst() {
                if senders.isEmpty {
                    available += 1
                    return .message(value)
                }
                return .messageHandingOff(value, slotFreed())
            }
            // Closed and drained: finished once no reservation could still send.
            return closed && held == 0 ? .finished : .empty
        }

        @usableFromInline
        enum EnqueueReceiveAction {
            case suspended
            case resume(ReceiveContinuation, Element?, Wakeups)
            case resumeCancelled(ReceiveContinuation)
        }

        @inlinable
        mutating func enqueueReceive(id: UInt64, _ continuation: ReceiveContinuation, stamp: OwnerStamp?,
                                     isCancelled: @autoclosure () -> Bool) -> EnqueueReceiveAction {
            switch tryReceive() {
            case .message(let value):
                return .resume(continuation, value, Wakeups())
            case .messageHandingOff(let value, let wakeups):
                return .resume(continuation, value, wakeups)
            case .finished:
                return .resume(continuation, nil, Wakeups())
            case .empty:
                if isCancelled() { return .resumeCancelled(continuation) }
                receivers.append(id, ReceiverWaiter(continuation: continuation, stamp: stamp))
                return .suspended
            }
        }

        // MARK: - Hand-off

        /// A slot became free: give it to queued senders, head first, before anyone else can see it.
        ///
        /// A `reserve` waiter takes the slot. A `send` waiter's message goes into the buffer (taking
        /// the slot) — or, when a receiver waits, straight to that receiver, which leaves the slot
        /// free for the next queued sender; hence the loop.
        @inlinable
        mutating func slotFreed() -> Wakeups {
            available += 1
            var wakeups = Wakeups()
            while available > 0, let waiter = senders.popFirstIfAny() {
                switch waiter {
                case .send(let value, let continuation, let stamp):
                    if let receiver = receivers.popFirstIfAny() {
                        wakeups.append(.received(receiver.continuation, value, receiver.stamp))
                    } else {
                        buffer.append(value)
                        available -= 1
                    }
                    wakeups.append(.sendAccepted(continuation, stamp))
                case .reserve(let continuation, let stamp):
                    available -= 1
                    wakeups.append(.reserveGranted(continuation,
                                                   recordReservation(stamp, task: taskAddress(of: continuation), checked: true), stamp))
                }
            }
            return wakeups
        }

        // MARK: - Closing

        struct CloseAction {
            /// Queued senders and reservers: fail them with `channelClosed` (their messages were never taken).
            var senders: [SenderWaiter]
            /// Queued receivers, when no reservation is outstanding: the buffer is empty and nothing can
            /// arrive any more; resume them with nil. (With reservations outstanding they keep waiting:
            /// a permit can still send.)
            var receivers: [ReceiverWaiter]
        }

        /// Closes the channel; `nil` if it was already closed.
        mutating func close() -> CloseAction? {
            guard !closed else { return nil }
            closed = true
            return CloseAction(senders: senders.removeAll(), receivers: held == 0 ? receivers.removeAll() : [])
        }

        // MARK: - Cancelling

        /// A queued sender's task was cancelled: remove it if it still queues. `nil` means it was
        /// handed a slot (or failed by `close`) already and will be resumed by that.
        @inlinable
        mutating func cancelSender(id: UInt64) -> SenderWaiter? {
            senders.remove(id)
        }

        /// A queued receiver's task was cancelled: remove it if it still queues. `nil` means it was
        /// handed a message (or `nil` by `close`) already; that result stands.
        @inlinable
        mutating func cancelReceiver(id: UInt64) -> ReceiverWaiter? {
            receivers.remove(id)
        }
    }
}
