import Synchronization
import Testing
@testable import Futurelock

// Tests drive waiters deterministically: a task started with `executorPreference: ManualExecutor` runs
// only when the test calls `drain()`, so "queued", "handed a slot" and "ran again" are separate,
// observable steps. Nothing here sleeps to synchronise.

/// Polls `condition`, yielding between tries (callers carry a time limit).
private func waitUntil(_ condition: () -> Bool) async {
    while !condition(), !Task.isCancelled { await Task.yield() }
}

private func checkInvariants<Element>(_ channel: BoundedChannel<Element>) {
    channel.state.withLock { $0.checkInvariants() }
}

private func isCancellation<T>(_ result: Result<T, any Error>) -> Bool {
    if case .failure(let error) = result { return error is CancellationError }
    return false
}

private func isClosedError<T>(_ result: Result<T, any Error>, _ name: String) -> Bool {
    if case .failure(let error) = result { return (error as? FuturelockError) == .channelClosed(channel: name) }
    return false
}

// MARK: - The state machine, driven directly

@Suite("BoundedChannel state machine")
struct BoundedChannelStateMachineTests {
    typealias Machine = BoundedChannel<Int>.StateMachine

    @Test func trySend_fillsSlotsThenReportsFull() {
        var machine = Machine(capacity: 2)
        guard case .buffered = machine.trySend(1) else { Issue.record("expected buffered"); return }
        guard case .buffered = machine.trySend(2) else { Issue.record("expected buffered"); return }
        guard case .full = machine.trySend(3) else { Issue.record("expected full"); return }
        #expect(machine.available == 0)
        #expect(Array(machine.buffer) == [1, 2])
        machine.checkInvariants()
    }

    @Test func tryReceive_returnsFIFOAndFreesSlot() {
        var machine = Machine(capacity: 2)
        _ = machine.trySend(1)
        _ = machine.trySend(2)
        guard case .message(1) = machine.tryReceive() else { Issue.record("expected 1"); return }
        #expect(machine.available == 1)
        guard case .message(2) = machine.tryReceive() else { Issue.record("expected 2"); return }
        guard case .empty = machine.tryReceive() else { Issue.record("expected empty"); return }
        #expect(machine.available == 2)
        machine.checkInvariants()
    }

    @Test func tryReserve_holdsSlotUntilSentOrReleased() {
        var machine = Machine(capacity: 1)
        guard case .granted(let slot) = machine.tryReserve(nil) else { Issue.record("expected a slot"); return }
        #expect(slot == Machine.untrackedSlot)
        #expect(machine.held == 1 && machine.available == 0)
        guard case .full = machine.trySend(9) else { Issue.record("a reserved slot must block sends"); return }
        guard case .full = machine.tryReserve(nil) else { Issue.record("expected full"); return }
        guard case .buffered = machine.sendReserved(slot: slot, 7) else { Issue.record("expected buffered"); return }
        #expect(machine.held == 0 && machine.available == 0 && Array(machine.buffer) == [7])
        machine.checkInvariants()

        _ = machine.tryReceive()
        guard case .granted(let second) = machine.tryReserve(nil) else { Issue.record("expected a slot"); return }
        let wakeups = machine.releaseReserved(slot: second)
        #expect(wakeups.isEmpty)
        #expect(machine.held == 0 && machine.available == 1)
        machine.checkInvariants()
    }

    @Test func tryReserve_withLedgerStamp_recordsHolding() {
        let ledger = Ledger()
        var machine = Machine(capacity: 1)
        let stamp = ledger.stamp(fileID: #fileID, line: #line, function: #function)
        guard case .granted(let slot) = machine.tryReserve(stamp) else { Issue.record("expected a slot"); return }
        #expect(slot >= 0)
        #expect(machine.holdings.count == 1)
        #expect(machine.holdings[slot]?.stamp.site.line == stamp?.site.line)
        _ = machine.releaseReserved(slot: slot)
        #expect(machine.holdings.count == 0)
        machine.checkInvariants()
    }

    @Test func close_rejectsNewSendsAndReservesButAPermitStillSendsAndTheBufferDrains() {
        var machine = Machine(capacity: 2)
        _ = machine.trySend(1)
        guard case .granted(let slot) = machine.tryReserve(nil) else { Issue.record("expected a slot"); return }
        let action = machine.close()
        #expect(action != nil && action!.senders.isEmpty && action!.receivers.isEmpty)
        #expect(machine.close() == nil, "closing twice does nothing")
        guard case .closed = machine.trySend(2) else { Issue.record("expected closed"); return }
        guard case .closed = machine.tryReserve(nil) else { Issue.record("expected closed"); return }
        guard case .message(1) = machine.tryReceive() else { Issue.record("buffered message must stay"); return }
        // Drained, but a reservation is outstanding: not finished yet.
        guard case .empty = machine.tryReceive() else { Issue.record("expected empty while a permit is out"); return }
        guard case .buffered = machine.sendReserved(slot: slot, 3) else { Issue.record("a reserved slot still sends"); return }
        #expect(machine.held == 0)
        guard case .message(3) = machine.tryReceive() else { Issue.record("the permit's message"); return }
        guard case .finished = machine.tryReceive() else { Issue.record("expected finished"); return }
        #expect(machine.available == 2)
        machine.checkInvariants()
    }

    @Test(.timeLimit(.minutes(1))) func receive_whenSenderQueues_handsSlotOverSoNewcomerCannotBarge() async throws {
        // A queued sender is handed the slot freed by a receive inside the same transition, so a
        // newcomer on the fast path still finds the channel full. A real continuation is needed to
        // queue; the test resumes it itself from the wakeup the machine returns.
        var machine = Machine(capacity: 1)
        _ = machine.trySend(1)
        var sawNewcomerRejected = false
        try await withUnsafeThrowingContinuation { (continuation: Machine.SendContinuation) in
            switch machine.enqueueSend(id: 1, 2, continuation, stamp: nil, isCancelled: false) {
            case .suspended:
                break
            case .resumeAccepted(let early, _, _), .resumeClosed(let early), .resumeCancelled(let early):
                Issue.record("expected the sender to queue")
                early.resume()
                return
            }
            #expect(machine.senders.count == 1 && machine.available == 0)
            machine.checkInvariants()
            let attempt = machine.tryReceive()
            if case .full = machine.trySend(3) { sawNewcomerRejected = true }
            guard case .messageHandingOff(1, let wakeups) = attempt,
                  case .sendAccepted(let accepted, _)? = wakeups.first, wakeups.rest.isEmpty else {
                Issue.record("expected a hand-off to the queued sender")
                if case .send(_, let queued, _)? = machine.cancelSender(id: 1) { queued.resume() }
                return
            }
            accepted.resume()
        }
        #expect(sawNewcomerRejected)
        #expect(Array(machine.buffer) == [2])
        #expect(machine.senders.isEmpty && machine.available == 0)
        machine.checkInvariants()
    }

    @Test(.timeLimit(.minutes(1))) func cancelSender_whenQueued_removesIt_andWhenHandedOff_findsNothing() async throws {
        var machine = Machine(capacity: 1)
        _ = machine.trySend(1)
        await #expect(throws: CancellationError.self) {
            try await withUnsafeThrowingContinuation { (continuation: Machine.SendContinuation) in
                _ = machine.enqueueSend(id: 7, 2, continuation, stamp: nil, isCancelled: false)
                guard case .send(2, let removed, _)? = machine.cancelSender(id: 7) else {
                    Issue.record("expected the queued sender back")
                    return
                }
                removed.resume(throwing: CancellationError())
            }
        }
        #expect(machine.cancelSender(id: 7) == nil, "already gone")
        #expect(Array(machine.buffer) == [1], "the cancelled message never entered")
        machine.checkInvariants()
    }

    @Test func enqueue_whenAlreadyCancelledAndFull_doesNotQueue() async {
        var machine = Machine(capacity: 1)
        _ = machine.trySend(1)
        var outcome = ""
        await #expect(throws: CancellationError.self) {
            try await withUnsafeThrowingContinuation { (continuation: Machine.SendContinuation) in
                switch machine.enqueueSend(id: 1, 2, continuation, stamp: nil, isCancelled: true) {
                case .resumeCancelled(let c): outcome = "cancelled"; c.resume(throwing: CancellationError())
                case .resumeAccepted(let c, _, _), .resumeClosed(let c): c.resume()
                case .suspended: _ = machine.cancelSender(id: 1); continuation.resume(throwing: CancellationError())
                }
            }
        }
        #expect(outcome == "cancelled" && machine.senders.isEmpty)
    }
}

// MARK: - The channel

@Suite("BoundedChannel")
struct BoundedChannelTests {
    let ledger = Ledger(configuration: .init(eventHistoryPerResource: 64))

    @Test func init_whenCapacityNotPositive_throwsInvalidCapacity() throws {
        #expect(throws: FuturelockError.invalidCapacity(resource: "c", value: 0)) {
            try BoundedChannel<Int>(name: "c", capacity: 0, ledger: ledger)
        }
        #expect(throws: FuturelockError.invalidCapacity(resource: "c", value: -1)) {
            try BoundedChannel<Int>(name: "c", capacity: -1, ledger: ledger)
        }
        let one = try BoundedChannel<Int>(name: "c", capacity: 1, ledger: ledger)
        #expect(one.capacity == 1 && one.availableSlots == 1)
    }

    @Test(.timeLimit(.minutes(1))) func sendReceive_uncontended_isFIFO() async throws {
        let channel = try BoundedChannel<Int>(name: "c", capacity: 4, ledger: ledger)
        for value in 0..<4 { try await channel.send(value) }
        #expect(channel.bufferedCount == 4 && channel.availableSlots == 0)
        #expect(try channel.trySend(99) == false)
        var received: [Int] = []
        for _ in 0..<4 { received.append(try await channel.receive()!) }
        #expect(received == [0, 1, 2, 3])
        #expect(channel.availableSlots == 4)
        guard case .empty = channel.tryReceive() else { Issue.record("expected empty"); return }
        checkInvariants(channel)
    }

    @Test(.timeLimit(.minutes(1))) func capacityOne_reservationBlocksSendsUntilUsed() async throws {
        let channel = try BoundedChannel<String>(name: "one", capacity: 1, ledger: ledger)
        let permit = try #require(try channel.tryReserve())
        #expect(channel.reservedCount == 1 && channel.availableSlots == 0)
        #expect(try channel.trySend("newcomer") == false)
        #expect(try channel.tryReserve() == nil)
        try permit.send("reserved")
        #expect(permit.isUsed)
        #expect(channel.reservedCount == 0 && channel.bufferedCount == 1)
        #expect(try channel.trySend("newcomer") == false, "the buffered message still occupies the slot")
        #expect(try await channel.receive() == "reserved")
        #expect(try channel.trySend("newcomer"))
        checkInvariants(channel)
    }

    // MARK: Hand-off

    @Test(.timeLimit(.minutes(1))) func receive_whenSendersQueue_handsSlotToHeadInFIFOOrder() async throws {
        let channel = try BoundedChannel<Int>(name: "fifo", capacity: 1, ledger: ledger)
        let executor = ManualExecutor()
        try await channel.send(0)
        var senders: [Task<Void, any Error>] = []
        for value in 1...8 {
            senders.append(Task(executorPreference: executor) { try await channel.send(value) })
            executor.drain()
            #expect(channel.waitingSenderCount == value)
        }
        var received: [Int] = []
        for _ in 0...8 {
            received.append(try await channel.receive()!)
            // The hand-off already put the head sender's message in the buffer, before it runs again.
            checkInvariants(channel)
            executor.drain()
        }
        #expect(received == Array(0...8))
        for sender in senders { try await sender.value }
        #expect(channel.availableSlots == 1 && channel.waitingCount == 0)
    }

    @Test(.timeLimit(.minutes(1))) func senders_underRealContention_areServedInArrivalOrder() async throws {
        let channel = try BoundedChannel<Int>(name: "fifo-real", capacity: 1, ledger: ledger)
        let permit = try #require(try channel.tryReserve())
        var senders: [Task<Void, any Error>] = []
        for value in 0..<16 {
            senders.append(Task { try await channel.send(value) })
            await waitUntil { channel.waitingSenderCount == value + 1 }
        }
        permit.release()
        var received: [Int] = []
        for _ in 0..<16 { received.append(try await channel.receive()!) }
        #expect(received == Array(0..<16))
        for sender in senders { try await sender.value }
    }

    @Test(.timeLimit(.minutes(1))) func release_whenReserverQueues_handsItAPermit() async throws {
        let channel = try BoundedChannel<Int>(name: "c", capacity: 1, ledger: ledger)
        let executor = ManualExecutor()
        let first = try #require(try channel.tryReserve())
        let reserver = Task(executorPreference: executor) { () async throws -> SendPermit<Int> in
            try await channel.reserve()
        }
        let sender = Task(executorPreference: executor) { try await channel.send(2) }
        executor.drain()
        #expect(channel.waitingSenderCount == 2)
        first.release()
        // The slot went to the head (the reserver), not to the later sender.
        #expect(channel.reservedCount == 1 && channel.waitingSenderCount == 1)
        executor.drain()
        let second = try await reserver.value
        try second.send(1)
        #expect(channel.waitingSenderCount == 1, "the sender still waits: the slot holds message 1")
        #expect(try await channel.receive() == 1)
        executor.drain()
        try await sender.value
        #expect(try await channel.receive() == 2)
        #expect(ledger.problems.isEmpty)
    }

    @Test(.timeLimit(.minutes(1))) func mixedQueue_sendsAndReservesShareOneFIFO() async throws {
        let channel = try BoundedChannel<Int>(name: "mixed", capacity: 1, ledger: ledger)
        let executor = ManualExecutor()
        try await channel.send(0)
        let a = Task(executorPreference: executor) { try await channel.send(1) }
        executor.drain()
        let b = Task(executorPreference: executor) { () async throws -> SendPermit<Int> in try await channel.reserve() }
        executor.drain()
        let c = Task(executorPreference: executor) { try await channel.send(3) }
        executor.drain()
        #expect(channel.waitingSenderCount == 3)
        #expect(try await channel.receive() == 0)   // slot → a: message 1 buffered
        #expect(try await channel.receive() == 1)   // slot → b: reserved
        #expect(channel.reservedCount == 1 && channel.waitingSenderCount == 1)
        executor.drain()
        try await a.value
        try await b.value.send(2)
        #expect(try await channel.receive() == 2)   // slot → c
        #expect(try await channel.receive() == 3)
        executor.drain()
        try await c.value
        checkInvariants(channel)
    }

    @Test(.timeLimit(.minutes(1))) func send_whenReceiverWaits_deliversDirectly() async throws {
        let channel = try BoundedChannel<Int>(name: "direct", capacity: 1, ledger: ledger)
        let executor = ManualExecutor()
        let receiver = Task(executorPreference: executor) { try await channel.receive() }
        executor.drain()
        #expect(channel.waitingReceiverCount == 1)
        #expect(try channel.trySend(42))
        #expect(channel.bufferedCount == 0 && channel.availableSlots == 1, "never touched the buffer")
        executor.drain()
        #expect(try await receiver.value == 42)
    }

    @Test(.timeLimit(.minutes(1))) func releasedSlot_cascadesThroughSendersToWaitingReceivers() async throws {
        // Buffer empty, both queues non-empty (the only slot is reserved). Releasing the slot passes
        // it through each queued send straight into a waiting receiver's hands.
        let channel = try BoundedChannel<Int>(name: "cascade", capacity: 1, ledger: ledger)
        let executor = ManualExecutor()
        let permit = try #require(try channel.tryReserve())
        let r1 = Task(executorPreference: executor) { try await channel.receive() }
        executor.drain()
        let r2 = Task(executorPreference: executor) { try await channel.receive() }
        executor.drain()
        let s1 = Task(executorPreference: executor) { try await channel.send(10) }
        executor.drain()
        let s2 = Task(executorPreference: executor) { try await channel.send(20) }
        executor.drain()
        #expect(channel.waitingReceiverCount == 2 && channel.waitingSenderCount == 2)
        permit.release()
        #expect(channel.waitingCount == 0)
        #expect(channel.bufferedCount == 0 && channel.availableSlots == 1)
        checkInvariants(channel)
        executor.drain()
        #expect(try await r1.value == 10)
        #expect(try await r2.value == 20)
        try await s1.value
        try await s2.value
    }

    @Test(.timeLimit(.minutes(1))) func permitSend_whenReceiverWaits_deliversAndHandsSlotOn() async throws {
        let channel = try BoundedChannel<Int>(name: "c", capacity: 1, ledger: ledger)
        let executor = ManualExecutor()
        let permit = try #require(try channel.tryReserve())
        let receiver = Task(executorPreference: executor) { try await channel.receive() }
        executor.drain()
        let sender = Task(executorPreference: executor) { try await channel.send(2) }
        executor.drain()
        try permit.send(1)
        #expect(channel.bufferedCount == 1, "the freed slot went to the queued sender")
        executor.drain()
        #expect(try await receiver.value == 1)
        try await sender.value
        #expect(try await channel.receive() == 2)
    }

    // MARK: Cancellation

    @Test(.timeLimit(.minutes(1))) func cancelledSend_beforeHandOff_isRemovedAndNotSent() async throws {
        let channel = try BoundedChannel<Int>(name: "c", capacity: 1, ledger: ledger)
        let executor = ManualExecutor()
        try await channel.send(1)
        let sender = Task(executorPreference: executor) { try await channel.send(2) }
        executor.drain()
        #expect(channel.waitingSenderCount == 1)
        sender.cancel()
        #expect(channel.waitingSenderCount == 0, "removed by the cancellation handler")
        executor.drain()
        #expect(isCancellation(await sender.result))
        #expect(try await channel.receive() == 1)
        guard case .empty = channel.tryReceive() else { Issue.record("message 2 must not be sent"); return }
        #expect(channel.availableSlots == 1)
    }

    @Test(.timeLimit(.minutes(1))) func cancelledSend_afterHandOff_returnsNormallyAndDeliversOnce() async throws {
        let channel = try BoundedChannel<Int>(name: "c", capacity: 1, ledger: ledger)
        let executor = ManualExecutor()
        try await channel.send(1)
        let sender = Task(executorPreference: executor) { try await channel.send(2) }
        executor.drain()
        #expect(try await channel.receive() == 1)   // hands the slot over: message 2 is in
        sender.cancel()                              // …before the sender runs again
        executor.drain()
        try await sender.value                       // no error: the message was delivered
        #expect(try await channel.receive() == 2)
        guard case .empty = channel.tryReceive() else { Issue.record("delivered twice"); return }
    }

    @Test(.timeLimit(.minutes(1))) func cancelledSend_beforeItQueues_throwsWithoutSending() async throws {
        let channel = try BoundedChannel<Int>(name: "c", capacity: 1, ledger: ledger)
        try await channel.send(1)
        let sender = Task {
            withUnsafeCurrentTask { $0?.cancel() }
            try await channel.send(2)
        }
        #expect(isCancellation(await sender.result))
        #expect(channel.bufferedCount == 1 && channel.waitingCount == 0)
    }

    @Test(.timeLimit(.minutes(1))) func cancelledSend_withFreeSlot_stillSends() async throws {
        // The fast path does not look at cancellation: only a wait is cancelled.
        let channel = try BoundedChannel<Int>(name: "c", capacity: 1, ledger: ledger)
        let sender = Task {
            withUnsafeCurrentTask { $0?.cancel() }
            try await channel.send(2)
        }
        try await sender.value
        #expect(try await channel.receive() == 2)
    }

    @Test(.timeLimit(.minutes(1))) func cancelledReserve_beforeHandOff_isRemoved() async throws {
        let channel = try BoundedChannel<Int>(name: "c", capacity: 1, ledger: ledger)
        let executor = ManualExecutor()
        let holder = try #require(try channel.tryReserve())
        let reserver = Task(executorPreference: executor) { () async throws -> SendPermit<Int> in
            try await channel.reserve()
        }
        executor.drain()
        reserver.cancel()
        executor.drain()
        #expect(isCancellation(await reserver.result))
        #expect(channel.waitingCount == 0)
        holder.release()
        #expect(channel.availableSlots == 1 && channel.reservedCount == 0)
    }

    @Test(.timeLimit(.minutes(1))) func cancelledReserve_afterHandOff_passesSlotOnAndThrows() async throws {
        let channel = try BoundedChannel<Int>(name: "c", capacity: 1, ledger: ledger)
        let executor = ManualExecutor()
        let holder = try #require(try channel.tryReserve())
        let first = Task(executorPreference: executor) { () async throws -> SendPermit<Int> in
            try await channel.reserve()
        }
        executor.drain()
        let second = Task(executorPreference: executor) { try await channel.send(7) }
        executor.drain()
        holder.release()                     // slot → first (recorded as its holding)
        #expect(channel.reservedCount == 1)
        first.cancel()                       // …before it runs again
        executor.drain()                     // first wakes, sees the cancellation, passes the slot on
        #expect(isCancellation(await first.result))
        try await second.value
        #expect(channel.reservedCount == 0 && channel.bufferedCount == 1)
        #expect(try await channel.receive() == 7)
        #expect(ledger.problems.isEmpty, "passing a slot on is not a leak")
        #expect(ledger.snapshot().holdings.isEmpty)
    }

    @Test(.timeLimit(.minutes(1))) func cancelledReceive_beforeHandOff_isRemoved() async throws {
        let channel = try BoundedChannel<Int>(name: "c", capacity: 1, ledger: ledger)
        let executor = ManualExecutor()
        let receiver = Task(executorPreference: executor) { try await channel.receive() }
        executor.drain()
        receiver.cancel()
        executor.drain()
        #expect(isCancellation(await receiver.result))
        #expect(channel.waitingReceiverCount == 0)
        #expect(try channel.trySend(5))
        #expect(channel.bufferedCount == 1, "the message waits for the next receiver")
    }

    @Test(.timeLimit(.minutes(1))) func cancelledReceive_afterHandOff_returnsTheMessage() async throws {
        let channel = try BoundedChannel<Int>(name: "c", capacity: 1, ledger: ledger)
        let executor = ManualExecutor()
        let receiver = Task(executorPreference: executor) { try await channel.receive() }
        executor.drain()
        #expect(try channel.trySend(5))     // handed straight to the receiver
        receiver.cancel()
        executor.drain()
        #expect(try await receiver.value == 5, "a handed-over message is returned, not lost")
        guard case .empty = channel.tryReceive() else { Issue.record("duplicated"); return }
    }

    // MARK: Close

    @Test(.timeLimit(.minutes(1))) func close_failsQueuedSendersWithoutEnqueueingTheirMessages() async throws {
        let channel = try BoundedChannel<Int>(name: "closing", capacity: 1, ledger: ledger)
        let executor = ManualExecutor()
        try await channel.send(1)
        let sender = Task(executorPreference: executor) { try await channel.send(2) }
        let reserver = Task(executorPreference: executor) { () async throws -> SendPermit<Int> in
            try await channel.reserve()
        }
        executor.drain()
        #expect(channel.waitingSenderCount == 2)
        channel.close()
        channel.close()   // harmless
        #expect(channel.isClosed && channel.waitingCount == 0)
        executor.drain()
        #expect(isClosedError(await sender.result, "closing"))
        #expect(isClosedError(await reserver.result, "closing"))
        #expect(try await channel.receive() == 1, "buffered messages stay receivable")
        #expect(try await channel.receive() == nil)
        #expect(try await channel.receive() == nil)
        guard case .finished = channel.tryReceive() else { Issue.record("expected finished"); return }
        checkInvariants(channel)
    }

    /// tokio's rule: after a close, a receiver sees the end only once every permit reserved before it
    /// has been used, released or dropped.
    @Test(.timeLimit(.minutes(1))) func close_withOutstandingPermits_receiversWaitForThemBeforeNil() async throws {
        let channel = try BoundedChannel<Int>(name: "late", capacity: 3, ledger: ledger)
        let executor = ManualExecutor()
        let sending = try #require(try channel.tryReserve())
        let releasing = try #require(try channel.tryReserve())
        var dropping = try channel.tryReserve()
        let receivers = (0..<2).map { _ in Task(executorPreference: executor) { try await channel.receive() } }
        executor.drain()
        #expect(channel.waitingReceiverCount == 2)
        channel.close()
        executor.drain()
        #expect(channel.waitingReceiverCount == 2, "permits are outstanding: nobody is told the channel ended")
        try sending.send(7)                        // goes straight to the first receiver
        executor.drain()
        #expect(try await receivers[0].value == 7)
        releasing.release()
        #expect(channel.waitingReceiverCount == 1, "one permit is still out")
        dropping = nil                             // the last one, dropped: now the channel is finished
        _ = dropping
        executor.drain()
        #expect(try await receivers[1].value == nil)
        #expect(try await channel.receive() == nil)
        checkInvariants(channel)
    }

    @Test(.timeLimit(.minutes(1))) func close_wakesWaitingReceiversWithNil() async throws {
        let channel = try BoundedChannel<Int>(name: "c", capacity: 2, ledger: ledger)
        let executor = ManualExecutor()
        let receivers = (0..<3).map { _ in Task(executorPreference: executor) { try await channel.receive() } }
        executor.drain()
        #expect(channel.waitingReceiverCount == 3)
        channel.close()
        executor.drain()
        for receiver in receivers { #expect(try await receiver.value == nil) }
    }

    @Test(.timeLimit(.minutes(1))) func afterClose_everySendFormThrowsChannelClosed() async throws {
        let channel = try BoundedChannel<Int>(name: "shut", capacity: 2, ledger: ledger)
        let permit = try #require(try channel.tryReserve())
        channel.close()
        let closed = FuturelockError.channelClosed(channel: "shut")
        await #expect(throws: closed) { try await channel.send(1) }
        await #expect(throws: closed) { try await channel.send(1, timeout: .seconds(1)) }
        await #expect(throws: closed) { _ = try await channel.reserve() }
        await #expect(throws: closed) { _ = try await channel.reserve(timeout: .seconds(1)) }
        #expect(throws: closed) { _ = try channel.trySend(1) }
        #expect(throws: closed) { _ = try channel.tryReserve() }
        // A permit reserved before the close still sends: its slot was guaranteed.
        try permit.send(1)
        #expect(channel.reservedCount == 0)
        #expect(try await channel.receive() == 1)
        #expect(try await channel.receive() == nil)
        #expect(closed.description.contains("closed"))
    }

    // MARK: Ownership

    @Test(.timeLimit(.minutes(1))) func permitUsedTwice_isReportedAndIgnored() throws {
        let channel = try BoundedChannel<Int>(name: "twice", capacity: 2, ledger: ledger)
        let permit = try #require(try channel.tryReserve())
        try permit.send(1)
        #expect(throws: FuturelockError.alreadyReleased(resource: "twice")) { try permit.send(2) }
        permit.release()
        #expect(channel.bufferedCount == 1 && channel.availableSlots == 1, "nothing double-counted")
        let problems = ledger.problems
        #expect(problems.count == 2)
        #expect(problems.allSatisfy { $0.kind == .doubleRelease && $0.holdingKind == .sendSlot })
        #expect(problems.first?.releasedAt?.fileID.hasSuffix("BoundedChannelTests.swift") == true)
    }

    @Test(.timeLimit(.minutes(1))) func droppedPermit_isReleasedAndReportedWithItsSite() async throws {
        let channel = try BoundedChannel<Int>(name: "leaky", capacity: 1, ledger: ledger)
        let executor = ManualExecutor()
        var permit = try channel.tryReserve()
        let reserveLine: UInt = #line - 1
        let sender = Task(executorPreference: executor) { try await channel.send(3) }
        executor.drain()
        #expect(channel.waitingSenderCount == 1)
        permit = nil
        _ = permit
        #expect(channel.bufferedCount == 1, "the dropped slot was handed to the queued sender")
        executor.drain()
        try await sender.value
        let problem = try #require(ledger.problems.first)
        #expect(problem.kind == .droppedWithoutRelease && problem.holdingKind == .sendSlot)
        #expect(problem.acquiredAt?.line == reserveLine)
        #expect(problem.acquiredBy == TaskID.current)
        #expect(problem.message.contains("leaky"))
    }

    @Test(.timeLimit(.minutes(1))) func claim_recordsTheNewOwner() async throws {
        let channel = try BoundedChannel<Int>(name: "c", capacity: 1, ledger: ledger)
        let permit = try await Task.detached { try await channel.reserve() }.value
        permit.claim()
        let holding = try #require(ledger.snapshot().holdings.first)
        #expect(holding.holderTask == TaskID.current)
        #expect(holding.acquiredBy != nil && holding.acquiredBy != TaskID.current)
        #expect(ledger.snapshot().events.contains { $0.kind == .transfer })
        permit.release()
    }

    // MARK: Timeouts

    @Test(.timeLimit(.minutes(1))) func sendWithTimeout_whenFull_timesOutWithoutSending() async throws {
        let channel = try BoundedChannel<Int>(name: "slow", capacity: 1, ledger: ledger)
        try await channel.send(1)
        await #expect(throws: FuturelockError.timedOut(resource: "slow", after: .milliseconds(20))) {
            try await channel.send(2, timeout: .milliseconds(20))
        }
        #expect(channel.waitingCount == 0 && channel.bufferedCount == 1)
        #expect(try await channel.receive() == 1)
        guard case .empty = channel.tryReceive() else { Issue.record("timed-out message was sent"); return }
        await #expect(throws: FuturelockError.invalidTimeout(resource: "slow", timeout: .seconds(-1))) {
            try await channel.send(2, timeout: .seconds(-1))
        }
        await #expect(throws: FuturelockError.invalidTimeout(resource: "slow", timeout: .seconds(-1))) {
            _ = try await channel.reserve(timeout: .seconds(-1))
        }
    }

    @Test(.timeLimit(.minutes(1))) func sendWithTimeout_whenSlotFreesInTime_sends() async throws {
        let channel = try BoundedChannel<Int>(name: "c", capacity: 1, ledger: ledger)
        try await channel.send(1)
        let sender = Task { try await channel.send(2, timeout: .seconds(30)) }
        await waitUntil { channel.waitingSenderCount == 1 }
        #expect(try await channel.receive() == 1)
        try await sender.value
        #expect(try await channel.receive() == 2)
    }

    @Test(.timeLimit(.minutes(1))) func reserveWithTimeout_whenSlotFrees_returnsPermitOwnedByCaller() async throws {
        let channel = try BoundedChannel<Int>(name: "c", capacity: 1, ledger: ledger)
        let holder = try #require(try channel.tryReserve())
        let caller = Task { () async throws -> (SendPermit<Int>, TaskID) in
            (try await channel.reserve(timeout: .seconds(30)), TaskID.current)
        }
        await waitUntil { channel.waitingSenderCount == 1 }
        holder.release()
        let (permit, callerTask) = try await caller.value
        let holding = try #require(ledger.snapshot().holdings.first)
        #expect(holding.holderTask == callerTask, "claimed by the caller, not the race's child task")
        try permit.send(9)
        #expect(try await channel.receive() == 9)

        let full = try #require(try channel.tryReserve())
        await #expect(throws: FuturelockError.timedOut(resource: "c", after: .milliseconds(20))) {
            _ = try await channel.reserve(timeout: .milliseconds(20))
        }
        #expect(channel.reservedCount == 1 && channel.waitingCount == 0)
        full.release()
    }

    // MARK: AsyncSequence

    @Test(.timeLimit(.minutes(1))) func asyncSequence_iteratesUntilClosedAndDrained() async throws {
        let channel = try BoundedChannel<Int>(name: "seq", capacity: 2, ledger: ledger)
        let producer = Task {
            for value in 0..<200 { try await channel.send(value) }
            channel.close()
        }
        var received: [Int] = []
        for try await value in channel { received.append(value) }
        #expect(received == Array(0..<200))
        try await producer.value
    }

    @Test(.timeLimit(.minutes(1))) func asyncSequence_twoConsumers_eachMessageExactlyOnce() async throws {
        let channel = try BoundedChannel<Int>(name: "seq2", capacity: 3, ledger: ledger)
        let consumers = (0..<2).map { _ in
            Task { () async throws -> [Int] in
                var mine: [Int] = []
                for try await value in channel { mine.append(value) }
                return mine
            }
        }
        for value in 0..<500 { try await channel.send(value) }
        channel.close()
        var all: [Int] = []
        for consumer in consumers {
            let mine = try await consumer.value
            #expect(mine == mine.sorted(), "each consumer sees messages in channel order")
            all += mine
        }
        #expect(all.sorted() == Array(0..<500))
    }

    @Test(.timeLimit(.minutes(1))) func asyncSequence_whenCancelledWhileWaiting_throwsThenEnds() async throws {
        let channel = try BoundedChannel<Int>(name: "c", capacity: 1, ledger: ledger)
        let executor = ManualExecutor()
        let iterating = Task(executorPreference: executor) { () async -> (Bool, Int?) in
            var iterator = channel.makeAsyncIterator()
            var threw = false
            do { _ = try await iterator.next() } catch { threw = error is CancellationError }
            _ = try? channel.trySend(1)
            let after = try? await iterator.next()
            return (threw, after ?? nil)
        }
        executor.drain()
        #expect(channel.waitingReceiverCount == 1)
        iterating.cancel()
        executor.drain()
        let (threw, after) = await iterating.value
        #expect(threw)
        #expect(after == nil, "a finished iterator stays finished")
        #expect(channel.bufferedCount == 1, "the message sent afterwards was not consumed")
    }

    // MARK: Ledger

    @Test(.timeLimit(.minutes(1))) func snapshot_showsReservationsAndQueuedWaitersWithPositions() async throws {
        let channel = try BoundedChannel<Int>(name: "snap", capacity: 2, ledger: ledger)
        let executor = ManualExecutor()
        let a = try #require(try channel.tryReserve())
        let reserveLine: UInt = #line - 1
        let b = try #require(try channel.tryReserve())
        let receiver = Task(executorPreference: executor) { try await channel.receive() }
        executor.drain()
        let sender = Task(executorPreference: executor) { try await channel.send(1) }
        executor.drain()
        let reserver = Task(executorPreference: executor) { () async throws -> SendPermit<Int> in
            try await channel.reserve()
        }
        executor.drain()
        let snapshot = ledger.snapshot()

        let resource = try #require(snapshot.resources.first { $0.id == channel.id })
        #expect(resource.kind == .channel && resource.name == "snap")
        #expect(resource.capacity == 2 && resource.available == 0 && resource.held == 2)
        #expect(resource.waiting == 3 && resource.buffered == 0 && !resource.closed)

        let holdings = snapshot.holdings.filter { $0.resource == channel.id }
        #expect(holdings.count == 2 && holdings.allSatisfy { $0.kind == .sendSlot })
        #expect(holdings.contains { $0.site.line == reserveLine && $0.site.fileID.hasSuffix("BoundedChannelTests.swift") })
        #expect(holdings.allSatisfy { $0.holderTask == TaskID.current })

        let waits = snapshot.waits.filter { $0.resource == channel.id }
        #expect(waits.count == 3)
        let send = try #require(waits.first { $0.kind == .send })
        let reserve = try #require(waits.first { $0.kind == .reserve })
        let receive = try #require(waits.first { $0.kind == .receive })
        #expect(send.position == 0 && reserve.position == 1, "senders and reservers share one queue")
        #expect(receive.position == 0)
        #expect(waits.allSatisfy { $0.site.fileID.hasSuffix("BoundedChannelTests.swift") })
        #expect(waits.allSatisfy { $0.waiterTask != TaskID.current && $0.waiterTask != .none })

        try a.send(5)                  // → the receiver; the freed slot → the sender (message 1 buffered)
        b.release()                    // → the reserver
        executor.drain()
        #expect(try await receiver.value == 5)
        try await sender.value
        let handed = try await reserver.value
        let after = ledger.snapshot()
        #expect(after.waits.isEmpty)
        #expect(after.holdings.count == 1 && after.holdings.first?.holderTask != TaskID.current)
        let kinds = Set(after.events.filter { $0.resource == channel.id }.map(\.kind))
        #expect(kinds.isSuperset(of: [.grant, .waitStart, .waitEnd, .handoff, .send, .receive, .release]))
        handed.release()
        channel.close()
        #expect(ledger.snapshot().resources.first { $0.id == channel.id }?.closed == true)
    }

    @Test(.timeLimit(.minutes(1))) func plainSendAndReceive_recordNothingWithoutHistory() async throws {
        let quiet = Ledger()
        let channel = try BoundedChannel<Int>(name: "c", capacity: 2, ledger: quiet)
        try await channel.send(1)
        #expect(channel.state.withLock { $0.holdings.count } == 0)
        #expect(quiet.snapshot().holdings.isEmpty && quiet.snapshot().events.isEmpty)
        _ = try await channel.receive()
        #expect(quiet.snapshot().resources.first?.buffered == 0)
    }

    @Test(.timeLimit(.minutes(1))) func disabledLedger_recordsNothingButChannelWorks() async throws {
        let off = Ledger(configuration: .init(isEnabled: false))
        let channel = try BoundedChannel<Int>(name: "off", capacity: 1, ledger: off)
        let permit = try #require(try channel.tryReserve())
        #expect(permit.slot == BoundedChannel<Int>.StateMachine.untrackedSlot)
        #expect(channel.reservedCount == 1)
        #expect(channel.history == nil && !channel.recordsHistory)
        permit.claim()
        try permit.send(1)
        #expect(try await channel.receive() == 1)
        #expect(off.snapshot().resources.isEmpty)
        #expect(channel.state.withLock { $0.holdings.count } == 0)
    }

    // MARK: Stress

    /// Thousands of senders (plain, reserve-then-send, with timeout) racing random cancellations, and
    /// receivers that are themselves cancelled at random: every accepted message is received exactly
    /// once, and no rejected message is ever received.
    @Test(.timeLimit(.minutes(1)), arguments: [true, false])
    func stress_randomCancellation_noMessageLostOrDuplicated(ledgerOn: Bool) async throws {
        let stressLedger = ledgerOn ? Ledger() : Ledger(configuration: .init(isEnabled: false))
        let channel = try BoundedChannel<Int>(name: "stress", capacity: 3, ledger: stressLedger)
        let senderCount = 3000
        let accepted = Lock<[Bool?]>(Array(repeating: nil, count: senderCount))
        let received = Lock<[Int]>([])

        let receiveLoop: @Sendable () async -> Void = {
            while true {
                do {
                    guard let value = try await channel.receive() else { return }
                    received.withLock { $0.append(value) }
                } catch {
                    return   // cancelled while waiting: nothing was taken
                }
            }
        }

        var receivers: [Task<Void, Never>] = (0..<4).map { _ in Task { await receiveLoop() } }
        var senders: [Task<Void, Never>] = []
        senders.reserveCapacity(senderCount)
        var generator = SystemRandomNumberGenerator()
        for value in 0..<senderCount {
            senders.append(Task { @Sendable in
                let ok: Bool
                do {
                    switch value % 3 {
                    case 0:
                        try await channel.send(value)
                    case 1:
                        let permit = try await channel.reserve()
                        try permit.send(value)
                    default:
                        try await channel.send(value, timeout: .milliseconds(Int.random(in: 0...2)))
                    }
                    ok = true
                } catch {
                    ok = false
                }
                accepted.withLock { $0[value] = ok }
            })
            if Int.random(in: 0..<3, using: &generator) == 0 {
                senders[Int.random(in: 0...value, using: &generator)].cancel()
            }
            if value % 97 == 0 {
                // Cancel a receiver at random and replace it, so receivers are cancelled mid-wait too.
                let victim = Int.random(in: 0..<receivers.count, using: &generator)
                receivers[victim].cancel()
                receivers.append(Task { await receiveLoop() })
            }
            if value % 64 == 0 { await Task.yield() }
        }
        for sender in senders { await sender.value }
        channel.close()
        for receiver in receivers { await receiver.value }
        await receiveLoop()   // whatever a cancelled receiver left behind

        let outcomes = accepted.withLock { $0 }
        let got = received.withLock { $0 }
        #expect(outcomes.allSatisfy { $0 != nil })
        let acceptedValues = Set(outcomes.indices.filter { outcomes[$0] == true })
        #expect(got.count == Set(got).count, "no message received twice")
        #expect(Set(got) == acceptedValues, "every accepted message received, no rejected one")
        #expect(acceptedValues.count > 0 && acceptedValues.count < senderCount, "both outcomes exercised")
        #expect(channel.waitingCount == 0 && channel.reservedCount == 0 && channel.bufferedCount == 0)
        #expect(channel.availableSlots == channel.capacity)
        #expect(stressLedger.problems.isEmpty)
        if ledgerOn {
            let snapshot = stressLedger.snapshot()
            #expect(snapshot.holdings.isEmpty && snapshot.waits.isEmpty)
        }
    }

    /// The timeout is an upper bound: a close ends a timed send at once with `channelClosed`. (The
    /// timeout is an hour; the test's one-minute limit fails it if the send sits out the timer.)
    @Test(.timeLimit(.minutes(1))) func sendTimeout_whenTheChannelCloses_throwsAtOnce() async throws {
        let channel = try BoundedChannel<Int>(name: "shut-timed", capacity: 1, ledger: Ledger())
        try await channel.send(1)
        let sender = Task { try await channel.send(2, timeout: .seconds(3600)) }
        await eventually { channel.waitingSenderCount == 1 }
        channel.close()
        await #expect(throws: FuturelockError.channelClosed(channel: "shut-timed")) { try await sender.value }
    }


    // MARK: Sender handles

    /// tokio's rule: the consumer loop ends by itself once every producer's handle is gone.
    @Test(.timeLimit(.minutes(1))) func senders_whenTheLastHandleIsDropped_theConsumerLoopEnds() async throws {
        let channel = try BoundedChannel<Int>(name: "producers", capacity: 2, ledger: ledger)
        var first: BoundedChannel<Int>.Sender? = channel.makeSender()
        var second: BoundedChannel<Int>.Sender? = first!.makeSender()
        #expect(channel.senderCount == 2)
        let consumer = Task {
            var received: [Int] = []
            for try await value in channel { received.append(value) }
            return received
        }
        try await first!.send(1)
        first = nil
        #expect(!channel.isClosed, "one producer is left")
        let permit = try await second!.reserve()
        second = nil                                   // the last handle: the channel closes
        #expect(channel.isClosed && channel.senderCount == 0)
        await #expect(throws: FuturelockError.channelClosed(channel: "producers")) { try await channel.send(9) }
        try permit.send(2)                             // reserved before the close: still delivered
        #expect(try await consumer.value == [1, 2])
    }

}
