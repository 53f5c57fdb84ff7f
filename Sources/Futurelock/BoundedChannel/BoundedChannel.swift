// A bounded, multi-producer, multi-consumer FIFO channel with tokio-mpsc semantics, whose reserved
// send slots are owned objects recorded in the ledger.
//
// Slots. A channel of capacity N has N slots. A slot is in exactly one of three states: free, holding
// a buffered message, or reserved by an outstanding `SendPermit`. So `capacity` bounds buffered
// messages *plus* reservations: a task that reserves a slot and sits on it blocks a sender just as a
// full buffer does. That is what makes the channel a futurelock ingredient (futurelock forms F5 and F6,
// reproducers `reserve-send` and `pool-actor`): with capacity 1, a permit held by a future its task no
// longer drives stops every sender, forever.
//
// Fairness. Senders (`send` and `reserve` share one queue) are served strictly in arrival order, and
// so are receivers (in a queue of their own). The fast paths never barge: a send or a reserve only
// succeeds without queueing when a slot is free *and* no sender queues ahead of it. When a slot frees
// up — a receive took a message out, a permit was released, dropped or spent on a closed channel — it
// is handed to the head sender inside the same critical section, so no newcomer can see it free:
//   - a queued `send` has its message put into the buffer (or, if a receiver is waiting, straight
//     into that receiver's hands, which leaves the slot free for the next queued sender) and is
//     resumed with success: by the time it runs again its message is already in the channel;
//   - a queued `reserve` is recorded as the slot's holder and resumed with a `SendPermit`.
// Symmetrically, a message that arrives while receivers wait goes to the head receiver directly and
// never touches the buffer. Hence two invariants: senders only queue while no slot is free, and
// receivers only queue while nothing is buffered.
//
// Cancellation. Every waiter registers a cancellation handler before it suspends; the handler and the
// enqueue both take the channel's lock, and the enqueue reads the cancellation flag under that lock,
// so a cancellation can never slip between "checked" and "queued". Then:
//   - a send waiter that still queues is removed and throws `CancellationError`; its message was never
//     taken. If the hand-off won the race, the message is already in the channel, and the send
//     *returns normally*: a message is never both delivered and reported as not sent.
//   - a reserve waiter that still queues is removed and throws. If it was already handed a slot, it
//     wakes, sees the cancellation, releases the slot — which hands it to the next sender — and
//     throws. A cancelled reserve never returns a permit and never leaks a slot.
//   - a receive waiter that still queues is removed and throws. If it was already handed a message,
//     the message is *returned* despite the cancellation: the message left the buffer, and throwing
//     would lose it. The caller sees the cancellation at its next suspension point.
// The fast paths do not look at cancellation at all: a cancelled task can still send into a free slot
// or take a buffered message; it only throws where it would have to wait.
//
// Close. `close()` is final and idempotent. Afterwards `send`, `reserve`, their `try`/timeout forms
// and `SendPermit.send` throw `FuturelockError.channelClosed`, and the message is not taken (a permit's
// slot is returned). Senders and reservers queued at the moment of closing are woken with the same
// error; their messages never enter the channel. Messages already buffered stay receivable; receivers
// get `nil` once the buffer is drained — queued receivers at once, since receivers only queue when the
// buffer is empty and nothing can arrive after a close.
//
// Ownership. A `SendPermit` is used exactly once: `send(_:)` or `release()`. A second use is ignored
// and reported to the ledger as a double release; a permit dropped unused is released by its
// deinitialiser and reported as a leak with the site that reserved it. `claim()` records that another
// task now owns it.
//
// Ledger. Only things that last are recorded: a reservation (a holding of kind `sendSlot`, stamped at
// `reserve`) and a wait (`send`, `reserve`, `receive`, with its queue position). A `send` or `receive`
// that does not wait holds nothing afterwards and records nothing, unless event history is on. With
// `Ledger.disabled` no stamp is ever taken.
//
// Locking and speed. One `Mutex` per channel guards its state machine; each operation takes it once.
// Continuations are resumed, and problems reported, only after it is released. The buffer is a ring
// (`Deque`) that is reused, so a message costs no allocation of its own, and so are the waiter queues
// (no hashing per wait). The type is generic and used from other modules, so the whole send, reserve
// and receive path — fast paths, waits, hand-offs and the state machine behind them — is `@inlinable`
// (it specialises in the caller's module, with no generic metadata looked up at run time) and
// `nonisolated(nonsending)` (it runs on the caller's executor instead of hopping to the global one).
// The waits are `@inline(never)` so that the fast paths' async frames stay small.

import DequeModule
import Synchronization

/// A bounded FIFO channel for many senders and many receivers, with FIFO-fair slot hand-off and
/// recorded reservations. See the file header for the rules.
///
/// ```swift
/// let requests = try BoundedChannel<Request>(name: "pool-requests", capacity: 1)
/// try await requests.send(request)                 // waits for a slot
/// while let request = try await requests.receive() { … }
/// ```
public final class BoundedChannel<Element: Sendable>: Sendable, HoldingTransferring {
    /// The name used in dumps and errors.
    public let name: String
    /// How many slots the channel has: buffered messages plus reserved slots never exceed it.
    public let capacity: Int
    /// The ledger that records this channel's reservations and waiters.
    public let ledger: Ledger
    /// This channel's id in the ledger.
    public let id: ResourceID

    @usableFromInline let state: Lock<StateMachine>
    /// Whether event history is kept, so the inlined fast paths can skip it with one branch.
    @usableFromInline let recordsHistory: Bool
    /// The messages are permits, send slots or leases: sending one records it in transit, receiving
    /// one records the receiver as its owner (so a hand-off through the channel needs no `handOff()`).
    @usableFromInline let carriesHoldings: Bool
    let history: EventHistory?
    @usableFromInline let waiterSerial = Atomic<UInt64>(0)
    /// Producer handles alive (``Sender``): the last one closes the channel.
    let senders = Atomic<Int>(0)

    /// Creates a channel.
    ///
    /// - Parameters:
    ///   - name: A name a person recognises in a dump, e.g. `"pool-requests"`.
    ///   - capacity: How many messages can be buffered or reserved at once; at least 1.
    ///   - ledger: Where reservations and waits are recorded (defaults to the process-wide ledger).
    /// - Throws: ``FuturelockError/invalidCapacity(resource:value:)`` when `capacity < 1`.
    public init(name: String, capacity: Int, ledger: Ledger = .shared) throws(FuturelockError) {
        guard capacity >= 1 else { throw .invalidCapacity(resource: name, value: capacity) }
        self.name = name
        self.capacity = capacity
        self.ledger = ledger
        self.state = Lock(StateMachine(capacity: capacity, runtimeParentOffset: ledger.runtime.parentOffset))
        self.id = ledger.nextResourceID()
        self.history = EventHistory(ledger: ledger, resource: id)
        self.recordsHistory = history != nil
        self.carriesHoldings = ledger.isEnabled && Element.self is any RecordedHolding.Type
        ledger.register(self, id: id)
    }

    deinit { ledger.unregister(id) }

    // MARK: - State (hints: each may change before you act on it)

    /// Whether ``close(fileID:line:function:)`` has been called.
    public var isClosed: Bool { state.withLock { $0.closed } }

    /// Messages buffered right now.
    public var bufferedCount: Int { state.withLock { $0.buffer.count } }

    /// Slots neither buffered nor reserved right now.
    public var availableSlots: Int { state.withLock { $0.available } }

    /// Slots reserved by outstanding ``SendPermit``s right now.
    public var reservedCount: Int { state.withLock { $0.held } }

    /// Tasks waiting in `send` or `reserve` right now.
    public var waitingSenderCount: Int { state.withLock { $0.senders.count } }

    /// Tasks waiting in `receive` right now.
    public var waitingReceiverCount: Int { state.withLock { $0.receivers.count } }

    /// Tasks waiting right now, senders and receivers together.
    public var waitingCount: Int { state.withLock { $0.senders.count + $0.receivers.count } }

    // MARK: - Sending

    /// Sends a message, waiting for a slot if none is free; first come, first served.
    ///
    /// When the call returns, the message is in the channel (buffered or already received). A send
    /// that waited was handed its slot by a receive or a release, and its message was put into the
    /// channel at that moment.
    ///
    /// - Throws: ``FuturelockError/channelClosed(channel:)`` if the channel is or becomes closed before
    ///   the message is taken; `CancellationError` if the task is cancelled while waiting. In both cases
    ///   the message was not sent. A cancellation that arrives after the hand-off does not throw: the
    ///   message was delivered.
    @inlinable
    nonisolated(nonsending)
    public func send(_ value: Element, fileID: StaticString = #fileID, line: UInt = #line,
                     function: StaticString = #function) async throws {
        if carriesHoldings { noteSending(value, fileID: fileID, line: line, function: function) }
        switch state.withLock({ $0.trySend(value) }) {
        case .buffered:
            break
        case .delivered(let receiver, let value):
            deliver(value, to: receiver)
        case .closed:
            if carriesHoldings { noteClaimed(value, fileID: fileID, line: line, function: function) }
            throw FuturelockError.channelClosed(channel: name)
        case .full:
            return try await sendWaiting(value, fileID: fileID, line: line, function: function)
        }
        if recordsHistory { recordEvent(.send, fileID: fileID, line: line, function: function) }
    }

    /// Sends a message if a slot is free and no sender queues ahead; never waits.
    ///
    /// - Returns: `true` if the message was sent, `false` if the channel is full (the message was not
    ///   taken).
    /// - Throws: ``FuturelockError/channelClosed(channel:)`` if the channel is closed.
    @inlinable
    public func trySend(_ value: Element, fileID: StaticString = #fileID, line: UInt = #line,
                        function: StaticString = #function) throws(FuturelockError) -> Bool {
        if carriesHoldings { noteSending(value, fileID: fileID, line: line, function: function) }
        switch state.withLock({ $0.trySend(value) }) {
        case .buffered:
            break
        case .delivered(let receiver, let value):
            deliver(value, to: receiver)
        case .closed:
            if carriesHoldings { noteClaimed(value, fileID: fileID, line: line, function: function) }
            throw .channelClosed(channel: name)
        case .full:
            if carriesHoldings { noteClaimed(value, fileID: fileID, line: line, function: function) }
            return false
        }
        if recordsHistory { recordEvent(.send, fileID: fileID, line: line, function: function) }
        return true
    }

    /// Sends a message, waiting at most `timeout` for a slot.
    ///
    /// The wait races a timer futurelock-safely: if the slot is handed over just as the timer fires,
    /// the message is sent and the call returns normally.
    ///
    /// - Throws: ``FuturelockError/timedOut(resource:after:)`` (the message was not sent),
    ///   ``FuturelockError/invalidTimeout(resource:timeout:)`` for a negative timeout,
    ///   ``FuturelockError/channelClosed(channel:)``, or `CancellationError`.
    public func send(_ value: Element, timeout: Duration, fileID: StaticString = #fileID,
                     line: UInt = #line, function: StaticString = #function) async throws {
        do {
            try await TimeoutRace.acquire(
                resource: name, timeout: timeout,
                immediately: { try trySend(value, fileID: fileID, line: line, function: function) ? () : nil },
                waiting: { try await self.send(value, fileID: fileID, line: line, function: function) })
        } catch {
            // Not sent: the race's child gave a holding in the message back to itself; the caller keeps it.
            if carriesHoldings { noteClaimed(value, fileID: fileID, line: line, function: function) }
            throw error
        }
    }

    // MARK: - Reserving

    /// Reserves a slot, waiting if none is free; first come, first served, in the same queue as `send`.
    ///
    /// The slot is held — and recorded in the ledger as owned by the calling task — until the permit
    /// is used with ``SendPermit/send(_:fileID:line:function:)`` (which never waits) or given back with
    /// ``SendPermit/release(fileID:line:function:)``. Holding a reservation blocks senders exactly as a
    /// buffered message does.
    ///
    /// - Throws: ``FuturelockError/channelClosed(channel:)`` or `CancellationError`. A slot handed over
    ///   concurrently with the cancellation is passed on to the next sender, never kept.
    @inlinable
    nonisolated(nonsending)
    public func reserve(fileID: StaticString = #fileID, line: UInt = #line,
                        function: StaticString = #function) async throws -> SendPermit<Element> {
        let stamp = ledger.stamp(fileID: fileID, line: line, function: function)
        switch state.withLock({ $0.tryReserve(stamp) }) {
        case .granted(let slot):
            if recordsHistory { recordGrant(stamp) }
            return sendPermit(slot: slot)
        case .closed:
            throw FuturelockError.channelClosed(channel: name)
        case .full:
            return try await reserveWaiting(stamp)
        }
    }

    /// Reserves a slot if one is free and no sender queues ahead; never waits.
    ///
    /// - Returns: The permit, or `nil` if the channel is full.
    /// - Throws: ``FuturelockError/channelClosed(channel:)`` if the channel is closed.
    @inlinable
    public func tryReserve(fileID: StaticString = #fileID, line: UInt = #line,
                           function: StaticString = #function) throws(FuturelockError) -> SendPermit<Element>? {
        let stamp = ledger.stamp(fileID: fileID, line: line, function: function)
        switch state.withLock({ $0.tryReserve(stamp) }) {
        case .granted(let slot):
            if recordsHistory { recordGrant(stamp) }
            return sendPermit(slot: slot)
        case .closed:
            throw .channelClosed(channel: name)
        case .full:
            return nil
        }
    }

    /// Reserves a slot, waiting at most `timeout`.
    ///
    /// The wait races a timer futurelock-safely: a slot handed over just as the timer fires is
    /// returned, not stranded. The permit is claimed for the calling task (the wait itself runs in a
    /// child task).
    ///
    /// - Throws: ``FuturelockError/timedOut(resource:after:)`` (nothing is held),
    ///   ``FuturelockError/invalidTimeout(resource:timeout:)`` for a negative timeout,
    ///   ``FuturelockError/channelClosed(channel:)``, or `CancellationError`.
    public func reserve(timeout: Duration, fileID: StaticString = #fileID, line: UInt = #line,
                        function: StaticString = #function) async throws -> SendPermit<Element> {
        try await TimeoutRace.acquire(
            resource: name, timeout: timeout,
            immediately: { try tryReserve(fileID: fileID, line: line, function: function) },
            waiting: { try await self.reserve(fileID: fileID, line: line, function: function) },
            claim: { $0.claim(fileID: fileID, line: line, function: function) })
    }

    // MARK: - Receiving

    /// Receives the next message, waiting if none is buffered; receivers are served in arrival order.
    ///
    /// Taking a message frees its slot, which goes straight to the head queued sender, if any.
    ///
    /// - Returns: The next message, or `nil` once the channel is closed and every buffered message has
    ///   been received.
    /// - Throws: `CancellationError` if the task is cancelled while waiting. If a message was handed
    ///   to this receiver before the cancellation took effect, the message is returned instead, so it
    ///   is never lost.
    @inlinable
    nonisolated(nonsending)
    public func receive(fileID: StaticString = #fileID, line: UInt = #line,
                        function: StaticString = #function) async throws -> Element? {
        let value: Element
        switch state.withLock({ $0.tryReceive() }) {
        case .message(let message):
            value = message
        case .messageHandingOff(let message, let wakeups):
            resume(wakeups)
            value = message
        case .finished:
            return nil
        case .empty:
            return try await receiveWaiting(fileID: fileID, line: line, function: function)
        }
        if recordsHistory { recordEvent(.receive, fileID: fileID, line: line, function: function) }
        if carriesHoldings { noteClaimed(value, fileID: fileID, line: line, function: function) }
        return value
    }

    /// A permit for the reserved `slot`, its address recorded with the reservation.
    @inlinable
    func sendPermit(slot: Int32) -> SendPermit<Element> {
        let permit = SendPermit(channel: self, slot: slot)
        if slot >= 0 { noteObject(permit, slot: slot) }
        return permit
    }

    @usableFromInline
    func noteObject(_ permit: SendPermit<Element>, slot: Int32) {
        let address = objectAddress(permit)
        state.withLock { $0.noteObject(address, slot: slot) }
    }

    /// Records, for a message that is a holding, that it is on its way to a receiver.
    @usableFromInline
    func noteSending(_ value: Element, fileID: StaticString, line: UInt, function: StaticString) {
        (value as? any RecordedHolding)?.handOff(fileID: fileID, line: line, function: function)
    }

    /// Records, for a message that is a holding, that the calling task owns it: the receiver, or the
    /// sender of a message that was not sent.
    @usableFromInline
    func noteClaimed(_ value: Element, fileID: StaticString, line: UInt, function: StaticString) {
        (value as? any RecordedHolding)?.claim(fileID: fileID, line: line, function: function)
    }

    /// What ``tryReceive(fileID:line:function:)`` found.
    public enum TryReceiveResult: Sendable {
        /// The next message.
        case message(Element)
        /// Nothing is buffered right now; the channel is open.
        case empty
        /// The channel is closed and drained: there will be no more messages.
        case finished
    }

    /// Receives the next message if one is buffered; never waits.
    @inlinable
    public func tryReceive(fileID: StaticString = #fileID, line: UInt = #line,
                           function: StaticString = #function) -> TryReceiveResult {
        let value: Element
        switch state.withLock({ $0.tryReceive() }) {
        case .message(let message):
            value = message
        case .messageHandingOff(let message, let wakeups):
            resume(wakeups)
            value = message
        case .finished:
            return .finished
        case .empty:
            return .empty
        }
        if recordsHistory { recordEvent(.receive, fileID: fileID, line: line, function: function) }
        if carriesHoldings { noteClaimed(value, fileID: fileID, line: line, function: function) }
        return .message(value)
    }

    // MARK: - Closing

    /// Closes the channel: no new message or reservation is accepted. Calling it again does nothing.
    ///
    /// Queued senders and reservers throw ``FuturelockError/channelClosed(channel:)`` and their
    /// messages are not sent. A ``SendPermit`` reserved before the close can still send: its slot
    /// was guaranteed. Buffered messages can still be received, and receivers get `nil` only once
    /// the buffer is drained *and* every outstanding permit has been used or given back (dropped
    /// included) — as tokio's `Receiver::close` does.
    public func close(fileID: StaticString = #fileID, line: UInt = #line, function: StaticString = #function) {
        guard let action = state.withLock({ $0.close() }) else { return }
        if recordsHistory { recordEvent(.close, fileID: fileID, line: line, function: function) }
        let error = FuturelockError.channelClosed(channel: name)
        for sender in action.senders {
            switch sender {
            case .send(_, let continuation, let stamp):
                record(.waitEnd, stamp)
                continuation.resume(throwing: error)
            case .reserve(let continuation, let stamp):
                record(.waitEnd, stamp)
                continuation.resume(throwing: error)
            }
        }
        for receiver in action.receivers {
            record(.waitEnd, receiver.stamp)
            receiver.continuation.resume(returning: nil)
        }
    }

    /// The next waiter id (unique per channel, shared by senders and receivers).
    @inlinable
    func nextWaiterID() -> UInt64 {
        waiterSerial.wrappingAdd(1, ordering: .relaxed).newValue
    }
}
