// The slow paths: queueing, suspending, being handed a slot or a message, and waking others.
//
// Each wait follows the same protocol, which is what makes cancellation exact:
//   1. register a cancellation handler (`withTaskCancellationHandler`);
//   2. inside the continuation closure, take the lock, retry the fast path, and only if it fails read
//      `Task.isCancelled` and queue — all in one critical section. The handler takes the same lock to
//      remove the waiter, so either the enqueue saw the cancellation flag, or the handler runs after
//      the waiter is queued and finds it. There is no window in which a cancelled waiter stays queued.
//   3. whoever removes a waiter from the queue (hand-off, close, cancel) is the only one to resume it.
//
// Like the fast paths, these are `@inlinable` and `nonisolated(nonsending)`: the channel is generic and
// used from other modules, and an unspecialised wait would look up the metadata of every generic
// type it touches (waiters, wakeups, continuations) on each message — at capacity 1, where nearly
// every send waits, that was a fifth of the time. They are also `@inline(never)`: specialised in the
// client, but kept out of the fast path's async frame, which would otherwise grow to hold the wait's
// state and make every non-waiting send and receive pay to allocate and copy it.

import Synchronization

extension BoundedChannel {
    // MARK: - Send

    @inlinable @inline(never)
    nonisolated(nonsending)
    func sendWaiting(_ value: Element, fileID: StaticString, line: UInt, function: StaticString) async throws {
        let stamp = ledger.stamp(fileID: fileID, line: line, function: function)
        let waiterID = nextWaiterID()
        record(.waitStart, stamp)
        do {
            defer { ThreadSanitizer.acquireAfterResume() }  // the waiter's side of the hand-off (Support/ThreadSanitizer.swift)
            try await withTaskCancellationHandler {
                try await withUnsafeThrowingContinuation { (continuation: StateMachine.SendContinuation) in
                    let action = state.withLock {
                        $0.enqueueSend(id: waiterID, value, continuation, stamp: stamp, isCancelled: Task.isCancelled)
                    }
                    switch action {
                    case .suspended:
                        break
                    case .resumeAccepted(let continuation, let receiver, let delivered):
                        if let receiver, let delivered { deliver(delivered, to: receiver) }
                        continuation.resume()
                    case .resumeClosed(let continuation):
                        continuation.resume(throwing: FuturelockError.channelClosed(channel: name))
                    case .resumeCancelled(let continuation):
                        continuation.resume(throwing: CancellationError())
                    }
                }
            } onCancel: {
                if let waiter = state.withLock({ $0.cancelSender(id: waiterID) }) {
                    Self.fail(waiter, with: CancellationError())
                }
            }
        } catch {
            record(error is CancellationError ? .cancelled : .waitEnd, stamp)
            // Not sent: a holding in the message is still the sender's.
            if carriesHoldings { noteClaimed(value, fileID: fileID, line: line, function: function) }
            throw error
        }
        // Accepted: the message entered the channel when the slot was handed over. A cancellation that
        // arrived after that is deliberately not reported: the message was delivered.
        record(.waitEnd, stamp)
    }

    // MARK: - Reserve

    @inlinable @inline(never)
    nonisolated(nonsending)
    func reserveWaiting(_ stamp: OwnerStamp?) async throws -> SendPermit<Element> {
        let waiterID = nextWaiterID()
        record(.waitStart, stamp)
        let slot: Int32
        do {
            defer { ThreadSanitizer.acquireAfterResume() }  // the waiter's side of the hand-off (Support/ThreadSanitizer.swift)
            slot = try await withTaskCancellationHandler {
                try await withUnsafeThrowingContinuation { (continuation: StateMachine.ReserveContinuation) in
                    let action = state.withLock {
                        $0.enqueueReserve(id: waiterID, continuation, stamp: stamp, isCancelled: Task.isCancelled)
                    }
                    switch action {
                    case .suspended:
                        break
                    case .resumeGranted(let continuation, let slot):
                        continuation.resume(returning: slot)
                    case .resumeClosed(let continuation):
                        continuation.resume(throwing: FuturelockError.channelClosed(channel: name))
                    case .resumeCancelled(let continuation):
                        continuation.resume(throwing: CancellationError())
                    }
                }
            } onCancel: {
                if let waiter = state.withLock({ $0.cancelSender(id: waiterID) }) {
                    Self.fail(waiter, with: CancellationError())
                }
            }
        } catch {
            record(error is CancellationError ? .cancelled : .waitEnd, stamp)
            throw error
        }
        let permit = sendPermit(slot: slot)
        if Task.isCancelled {
            // Handed a slot, then cancelled: pass the slot on rather than give it to a caller that has
            // stopped wanting it (and might never use it — the futurelock shape).
            permit.giveBack()
            record(.cancelled, stamp)
            throw CancellationError()
        }
        record(.waitEnd, stamp)
        return permit
    }

    // MARK: - Receive

    @inlinable @inline(never)
    nonisolated(nonsending)
    func receiveWaiting(fileID: StaticString, line: UInt, function: StaticString) async throws -> Element? {
        let stamp = ledger.stamp(fileID: fileID, line: line, function: function)
        let waiterID = nextWaiterID()
        record(.waitStart, stamp)
        let value: Element?
        do {
            defer { ThreadSanitizer.acquireAfterResume() }  // the waiter's side of the hand-off (Support/ThreadSanitizer.swift)
            value = try await withTaskCancellationHandler {
                try await withUnsafeThrowingContinuation { (continuation: StateMachine.ReceiveContinuation) in
                    let action = state.withLock {
                        $0.enqueueReceive(id: waiterID, continuation, stamp: stamp, isCancelled: Task.isCancelled)
                    }
                    switch action {
                    case .suspended:
                        break
                    case .resume(let continuation, let value, let wakeups):
                        resume(wakeups)
                        continuation.resume(returning: value)
                    case .resumeCancelled(let continuation):
                        continuation.resume(throwing: CancellationError())
                    }
                }
            } onCancel: {
                if let waiter = state.withLock({ $0.cancelReceiver(id: waiterID) }) {
                    waiter.continuation.resume(throwing: CancellationError())
                }
            }
        } catch {
            record(.cancelled, stamp)
            throw error
        }
        // A message handed over before a cancellation took effect is returned, never dropped.
        record(.waitEnd, stamp)
        if carriesHoldings, let value { noteClaimed(value, fileID: fileID, line: line, function: function) }
        return value
    }

    // MARK: - Waking

    /// Resumes the waiters an event woke (after the lock is released).
    @inlinable
    func resume(_ wakeups: StateMachine.Wakeups) {
        guard let first = wakeups.first else { return }
        resume(first)
        for wakeup in wakeups.rest { resume(wakeup) }
    }

    @inlinable
    func resume(_ wakeup: StateMachine.Wakeup) {
        switch wakeup {
        case .sendAccepted(let continuation, let stamp):
            record(.handoff, stamp)
            continuation.resume()
        case .reserveGranted(let continuation, let slot, let stamp):
            record(.handoff, stamp)
            continuation.resume(returning: slot)
        case .received(let continuation, let value, let stamp):
            record(.receive, stamp)
            continuation.resume(returning: value)
        case .finished(let continuation, let stamp):
            record(.waitEnd, stamp)
            continuation.resume(returning: nil)
        }
    }

    /// Hands a message to a receiver that was waiting for one (after the lock is released).
    @inlinable
    func deliver(_ value: Element, to receiver: StateMachine.ReceiverWaiter) {
        record(.receive, receiver.stamp)
        receiver.continuation.resume(returning: value)
    }

    @inlinable
    static func fail(_ waiter: StateMachine.SenderWaiter, with error: any Error) {
        switch waiter {
        case .send(_, let continuation, _): continuation.resume(throwing: error)
        case .reserve(let continuation, _): continuation.resume(throwing: error)
        }
    }
}
