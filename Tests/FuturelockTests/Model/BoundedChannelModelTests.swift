// Model-checked BoundedChannel state machine (see ModelSupport.swift for the method).
//
// The reference model is the channel's rules written down directly: N slots, each free, buffered or
// reserved; one FIFO queue of senders and reservers, one of receivers; after every event it *settles*
// — while a receiver waits and a message is buffered, the head receiver takes the oldest message;
// while a slot is free and a sender queues, the head sender takes it (its message enters the channel,
// or it becomes a reservation); on a closed channel with nothing buffered and nothing reserved, every
// queued receiver ends. Whatever the machine's actions resume must be exactly what settling resumes.
//
// Checked after every operation: free + buffered + reserved = capacity, each against the model; the
// buffer's contents in order; the queues in order; the header's invariants (a sender queues only while
// no slot is free, a receiver only while nothing is buffered, none on a closed channel unless a
// reservation is out). Independently of the model, every message the machine hands out is the next
// one in the order messages entered the channel, and none twice. At the end of each lifetime: close,
// use or give back every permit, receive until the end — every accepted message received exactly
// once (a rejected or cancelled send's never), every waiter resumed exactly once, all slots free.

import PropertyBased
import Testing
@testable import Futurelock

private typealias ChannelMachine = BoundedChannel<Int>.StateMachine

enum ChannelOp: Sendable, CustomStringConvertible {
    case trySend
    /// `send`: the fast path, then (if full) the waiting send.
    case send(WaitOptions)
    case tryReserve
    case reserve(WaitOptions)
    case tryReceive
    case receive(WaitOptions)
    /// `SendPermit.send` on the n-th outstanding permit.
    case sendOnPermit(UInt16)
    /// `SendPermit.release` (or its deinit, when dropped) on the n-th outstanding permit.
    case releasePermit(UInt16, dropped: Bool)
    /// The task of a waiter is cancelled, or its `…(timeout:)` timer fires (the race cancels the waiting
    /// child: the same calls). `queuedOnly` picks among queued waiters, otherwise among recent ones,
    /// which may have been served already (the cancellation then loses the race).
    case cancel(UInt16, queuedOnly: Bool, timeout: Bool)
    case close
    /// `makeSender()`; dropping the last handle closes the channel.
    case makeSender
    case dropSender
    /// A waiter takes its id, but another waiter reaches the lock first.
    case takeIDEarly
    /// Drain and check this channel, then start a new one.
    case restart(capacity: Int)

    var description: String {
        switch self {
        case .trySend: "trySend"
        case .send(let options): "send\(options)"
        case .tryReserve: "tryReserve"
        case .reserve(let options): "reserve\(options)"
        case .tryReceive: "tryReceive"
        case .receive(let options): "receive\(options)"
        case .sendOnPermit(let pick): "permit.send(#\(pick))"
        case .releasePermit(let pick, let dropped): dropped ? "permit.drop(#\(pick))" : "permit.release(#\(pick))"
        case .cancel(let pick, let queuedOnly, let timeout):
            "\(timeout ? "timeout" : "cancel")(\(queuedOnly ? "queued" : "recent") #\(pick))"
        case .close: "close"
        case .makeSender: "makeSender"
        case .dropSender: "dropSender"
        case .takeIDEarly: "takeIDEarly"
        case .restart(let capacity): "restart(capacity: \(capacity))"
        }
    }
}

// MARK: - Programs

extension ChannelOp: ModelOp {
    var restartCapacity: Int? { if case .restart(let capacity) = self { capacity } else { nil } }

    static func makeProgram(_ rng: inout SplitMix, length: ClosedRange<Int>) -> ModelProgram<ChannelOp> {
        // Weights: trySend, send, tryReserve, reserve, tryReceive, receive, sendOnPermit, releasePermit,
        // cancel, close, makeSender, dropSender, takeIDEarly, restart.
        let profiles: [(String, ClosedRange<Int>, [Int], queuedCancel: Int)] = [
            ("balanced", 1...3, [8, 14, 5, 8, 8, 14, 7, 4, 8, 1, 1, 1, 2, 1], 70),
            ("crowded-senders", 1...2, [3, 22, 2, 12, 4, 5, 2, 2, 14, 0, 0, 0, 2, 0], 85),
            ("crowded-receivers", 1...3, [3, 5, 2, 6, 4, 22, 3, 2, 12, 0, 0, 0, 2, 0], 85),
            ("reservations-and-close", 1...3, [4, 8, 8, 12, 6, 12, 6, 6, 8, 3, 2, 2, 2, 3], 60),
            ("wide", 4...12, [10, 12, 6, 8, 10, 12, 6, 4, 6, 1, 1, 1, 2, 1], 70),
        ]
        let profile = profiles[rng.below(profiles.count)]
        return .random(&rng, profile: profile.0, capacities: profile.1, weights: profile.2, length: length) { rng, choice in
            switch choice {
            case 0: .trySend
            case 1: .send(.random(&rng))
            case 2: .tryReserve
            case 3: .reserve(.random(&rng))
            case 4: .tryReceive
            case 5: .receive(.random(&rng))
            case 6: .sendOnPermit(rng.pick())
            case 7: .releasePermit(rng.pick(), dropped: rng.chance(30))
            case 8: .cancel(rng.pick(), queuedOnly: rng.chance(profile.queuedCancel), timeout: rng.chance(30))
            case 9: .close
            case 10: .makeSender
            case 11: .dropSender
            case 12: .takeIDEarly
            default: .restart(capacity: rng.within(profile.1))
            }
        }
    }
}

// MARK: - The driver: machine and model side by side

private final class ChannelDriver: ModelDriver {
    static let title = "BoundedChannel model"
    // The machine.
    var machine: ChannelMachine
    // The model.
    struct Reservation {
        var slot: Int32?
        /// Granted to this queued (or enqueueing) reserver: its task may still see a cancellation.
        var waiterID: UInt64?
        var serial: Int?
    }
    enum SenderEntry { case send(serial: Int, message: Int), reserve(serial: Int) }
    var capacity: Int
    var buffer: [Int] = []
    var reservations: [Reservation] = []
    var senders = ModelQueue<SenderEntry>()
    var receivers = ModelQueue<Int>()
    var closed = false
    var handles = 0
    var ids = WaiterIDs()
    var recentKinds: [UInt64: Bool] = [:]  // waiter id → is a receiver
    var free: Int { capacity - buffer.count - reservations.count }
    // Message accounting (independent of the model's buffer): messages of this lifetime are numbered
    // from `firstMessage`; `accepted` is the order they entered the channel, `delivered` how often
    // the machine handed each out.
    var firstMessage = 0
    var nextMessage = 0
    var accepted: [Int] = []
    var deliveredInOrder = 0
    var deliveredCount: [UInt8] = []

    // Harness.
    let ledger: TokenLedger
    let sends: Tokens<Void>
    let reserves: Tokens<Int32>
    let receives: Tokens<Int?>
    let stampLedger: Ledger?
    let stats: ModelStats
    var failures = Failures()

    static let anySlot = Int32.min

    init(capacity: Int, real: Bool, stampLedger: Ledger?, stats: ModelStats) {
        self.capacity = capacity
        self.stampLedger = stampLedger
        self.stats = stats
        machine = ChannelMachine(capacity: capacity, runtimeParentOffset: stampLedger?.runtime.parentOffset ?? 0)
        ledger = TokenLedger(real: real)
        sends = Tokens(ledger) { _ in .void }
        reserves = Tokens(ledger) { .slot($0) }
        receives = Tokens(ledger) { .message($0) }
    }

    convenience init(program: ModelProgram<ChannelOp>, real: Bool, stampLedger: Ledger?, stats: ModelStats) {
        self.init(capacity: program.capacity, real: real, stampLedger: stampLedger, stats: stats)
    }

    func prepareTokens() async {
        await sends.prepare()
        await reserves.prepare()
        await receives.prepare()
    }

    func cleanUpTokens() {
        sends.cleanUp()
        reserves.cleanUp()
        receives.cleanUp()
    }

    @inline(__always)
    func stamp() -> OwnerStamp? { stampLedger?.stamp(fileID: #fileID, line: #line, function: #function) }

    var tracked: Bool { stampLedger != nil }

    // MARK: model rules

    /// A message enters the channel (it takes a slot until settling hands it to a receiver).
    func enter(_ message: Int) {
        buffer.append(message)
        accepted.append(message)
    }

    /// Applies the channel's rules until nothing more happens (see the file header).
    func settle(_ expected: inout Wakes) {
        var servedSender = false
        while true {
            if !receivers.isEmpty, !buffer.isEmpty {
                let receiver = receivers.popFirst()!
                expected.add(receiver.entry, .message(buffer.removeFirst()), &failures)
                if servedSender { stats.note("cascade.queuedSenderToQueuedReceiver") }
                continue
            }
            if free > 0, let head = senders.popFirst() {
                switch head.entry {
                case .send(let serial, let message):
                    enter(message)
                    expected.add(serial, .void, &failures)
                    servedSender = true
                case .reserve(let serial):
                    reservations.append(Reservation(slot: nil, waiterID: head.id, serial: serial))
                    expected.add(serial, .slot(Self.anySlot), &failures)
                }
                continue
            }
            break
        }
        if closed, buffer.isEmpty, reservations.isEmpty {
            for receiver in receivers.removeAll() { expected.add(receiver.entry, .message(nil), &failures) }
        }
    }

    // MARK: machine results

    func delivered(_ message: Int) {
        let index = message - firstMessage
        guard index >= 0, index < deliveredCount.count else {
            failures.fail("the machine delivered message \(message), which was never sent")
            return
        }
        deliveredCount[index] &+= 1
        failures.check(deliveredCount[index] == 1, "message \(message) delivered twice")
        failures.check(deliveredInOrder < accepted.count && accepted[deliveredInOrder] == message,
                       "message \(message) delivered out of order: next in line was \(deliveredInOrder < accepted.count ? "\(accepted[deliveredInOrder])" : "nothing")")
        deliveredInOrder += 1
    }

    func collect(_ wakeup: ChannelMachine.Wakeup, into wakes: inout Wakes) {
        switch wakeup {
        case .sendAccepted(let continuation, _):
            sends.resume(continuation, .success(()), as: .void, into: &wakes, &failures)
        case .reserveGranted(let continuation, let slot, _):
            reserves.resume(continuation, .success(slot), as: .slot(slot), into: &wakes, &failures)
        case .received(let continuation, let message, _):
            receives.resume(continuation, .success(message), as: .message(message), into: &wakes, &failures)
            delivered(message)
        case .finished(let continuation, _):
            receives.resume(continuation, .success(nil), as: .message(nil), into: &wakes, &failures)
        }
    }

    func collect(_ wakeups: ChannelMachine.Wakeups, into wakes: inout Wakes) {
        if let first = wakeups.first { collect(first, into: &wakes) }
        for wakeup in wakeups.rest { collect(wakeup, into: &wakes) }
        failures.check(wakeups.first != nil || wakeups.rest.isEmpty, "wakeups with an empty first but a rest")
    }

    func deliver(_ receiver: ChannelMachine.ReceiverWaiter, _ message: Int, into wakes: inout Wakes) {
        receives.resume(receiver.continuation, .success(message), as: .message(message), into: &wakes, &failures)
        delivered(message)
    }

    func fail(_ waiter: ChannelMachine.SenderWaiter, _ error: any Error, as resumption: Resumption,
              into wakes: inout Wakes) {
        switch waiter {
        case .send(_, let continuation, _):
            sends.resume(continuation, .failure(error), as: resumption, into: &wakes, &failures)
        case .reserve(let continuation, _):
            reserves.resume(continuation, .failure(error), as: resumption, into: &wakes, &failures)
        }
    }

    /// A slot the machine gave a reservation: unrecorded with the ledger off, else a live, unique slot.
    func checkSlot(_ slot: Int32) {
        if tracked {
            failures.check(slot >= 0 && machine.holdings.isLive(slot), "reservation slot \(slot) is not a live holding")
            failures.check(!reservations.contains { $0.slot == slot }, "reservation slot \(slot) handed out twice")
        } else {
            failures.check(slot == ChannelMachine.untrackedSlot, "untracked reservation got slot \(slot)")
        }
    }

    /// Compares what the step resumed with what the model expected; fills in the slots of new
    /// reservations.
    func compare(_ expected: Wakes, _ actual: Wakes, _ what: @autoclosure () -> String) {
        guard !failures.failed else { return }
        guard Set(expected.bySerial.keys) == Set(actual.bySerial.keys) else {
            failures.fail("\(what()): resumed \(actual), the model resumes \(expected)")
            return
        }
        for (serial, want) in expected.bySerial {
            let got = actual.bySerial[serial]!
            if want == .slot(Self.anySlot), case .slot(let slot) = got {
                checkSlot(slot)
                if let index = reservations.firstIndex(where: { $0.serial == serial && $0.slot == nil }) {
                    reservations[index].slot = slot
                } else {
                    failures.fail("\(what()): no model reservation for #\(serial)")
                }
            } else if want != got {
                failures.fail("\(what()): #\(serial) resumed with \(got), the model expects \(want)")
            }
        }
    }

    func newMessage() -> Int {
        defer { nextMessage += 1 }
        deliveredCount.append(0)
        return nextMessage
    }

    // MARK: operations

    /// The model's non-waiting send: "accepted", "full" or "closed".
    func modelTrySend(_ message: Int, _ expected: inout Wakes) -> String {
        if closed { return "closed" }
        guard free > 0, senders.isEmpty else { return "full" }
        enter(message)
        settle(&expected)
        return "accepted"
    }

    func machineTrySend(_ message: Int, _ actual: inout Wakes) -> String {
        switch machine.trySend(message) {
        case .buffered: return "accepted"
        case .delivered(let receiver, let value):
            failures.check(value == message, "trySend delivered \(value), sent \(message)")
            deliver(receiver, value, into: &actual)
            return "accepted"
        case .full: return "full"
        case .closed: return "closed"
        }
    }

    func trySend() -> String {
        let message = newMessage()
        var expected = Wakes(), actual = Wakes()
        let want = modelTrySend(message, &expected)
        let got = machineTrySend(message, &actual)
        failures.check(want == got, "trySend: machine says \(got), model \(want)")
        compare(expected, actual, "trySend")
        return got
    }

    func send(_ options: WaitOptions) {
        if !options.direct, trySend() != "full" { return }
        let message = newMessage()
        let id = ids.take(stale: options.stale)
        recentKinds[id] = false
        let (serial, continuation) = sends.make()
        var expected = Wakes(), actual = Wakes()
        let want: String
        if closed {
            want = "resumeClosed"
            expected.add(serial, .closed, &failures)
        } else if free > 0, senders.isEmpty {
            want = "resumeAccepted"
            enter(message)
            expected.add(serial, .void, &failures)
            settle(&expected)
        } else if options.cancelled {
            want = "resumeCancelled"
            expected.add(serial, .cancelled, &failures)
        } else {
            want = "suspended"
            senders.append(id, .send(serial: serial, message: message))
            settle(&expected)  // nothing: senders queue only while no slot is free
        }
        let got: String
        switch machine.enqueueSend(id: id, message, continuation, stamp: stamp(), isCancelled: options.cancelled) {
        case .suspended:
            got = "suspended"
        case .resumeAccepted(let accepted, let receiver, let value):
            got = "resumeAccepted"
            if let receiver, let value { deliver(receiver, value, into: &actual) }
            failures.check((receiver == nil) == (value == nil), "resumeAccepted with a receiver but no message, or the reverse")
            sends.resume(accepted, .success(()), as: .void, into: &actual, &failures)
        case .resumeClosed(let rejected):
            got = "resumeClosed"
            sends.resume(rejected, .failure(FuturelockError.channelClosed(channel: "model")), as: .closed, into: &actual, &failures)
        case .resumeCancelled(let rejected):
            got = "resumeCancelled"
            sends.resume(rejected, .failure(CancellationError()), as: .cancelled, into: &actual, &failures)
        }
        failures.check(want == got, "enqueueSend: machine says \(got), model \(want)")
        compare(expected, actual, "enqueueSend")
    }

    func tryReserve() -> String {
        var want: String
        if closed {
            want = "closed"
        } else if free > 0, senders.isEmpty {
            want = "granted"
            reservations.append(Reservation(slot: nil, waiterID: nil, serial: nil))
        } else {
            want = "full"
        }
        let got: String
        switch machine.tryReserve(stamp()) {
        case .granted(let slot):
            got = "granted"
            if want == "granted" {
                reservations.removeLast()
                checkSlot(slot)
                reservations.append(Reservation(slot: slot, waiterID: nil, serial: nil))
            }
        case .full: got = "full"
        case .closed: got = "closed"
        }
        failures.check(want == got, "tryReserve: machine says \(got), model \(want)")
        return got
    }

    func reserve(_ options: WaitOptions) {
        if !options.direct, tryReserve() != "full" { return }
        let id = ids.take(stale: options.stale)
        recentKinds[id] = false
        let (serial, continuation) = reserves.make()
        var expected = Wakes(), actual = Wakes()
        let want: String
        if closed {
            want = "resumeClosed"
            expected.add(serial, .closed, &failures)
        } else if free > 0, senders.isEmpty {
            want = "resumeGranted"
            reservations.append(Reservation(slot: nil, waiterID: id, serial: serial))
            expected.add(serial, .slot(Self.anySlot), &failures)
        } else if options.cancelled {
            want = "resumeCancelled"
            expected.add(serial, .cancelled, &failures)
        } else {
            want = "suspended"
            senders.append(id, .reserve(serial: serial))
            settle(&expected)  // nothing: senders queue only while no slot is free
        }
        let got: String
        switch machine.enqueueReserve(id: id, continuation, stamp: stamp(), isCancelled: options.cancelled) {
        case .suspended:
            got = "suspended"
        case .resumeGranted(let granted, let slot):
            got = "resumeGranted"
            reserves.resume(granted, .success(slot), as: .slot(slot), into: &actual, &failures)
        case .resumeClosed(let rejected):
            got = "resumeClosed"
            reserves.resume(rejected, .failure(FuturelockError.channelClosed(channel: "model")), as: .closed, into: &actual, &failures)
        case .resumeCancelled(let rejected):
            got = "resumeCancelled"
            reserves.resume(rejected, .failure(CancellationError()), as: .cancelled, into: &actual, &failures)
        }
        failures.check(want == got, "enqueueReserve: machine says \(got), model \(want)")
        compare(expected, actual, "enqueueReserve")
    }

    /// The model's non-waiting receive: "message N", "finished" or "empty".
    func modelTryReceive(_ expected: inout Wakes) -> String {
        if !buffer.isEmpty {
            let message = buffer.removeFirst()
            settle(&expected)
            return "message \(message)"
        }
        return closed && reservations.isEmpty ? "finished" : "empty"
    }

    @discardableResult
    func tryReceive() -> String {
        var expected = Wakes(), actual = Wakes()
        let want = modelTryReceive(&expected)
        let got: String
        switch machine.tryReceive() {
        case .message(let message):
            got = "message \(message)"
            delivered(message)
        case .messageHandingOff(let message, let wakeups):
            got = "message \(message)"
            delivered(message)
            collect(wakeups, into: &actual)
            failures.check(!wakeups.isEmpty, "messageHandingOff woke nobody")
        case .finished: got = "finished"
        case .empty: got = "empty"
        }
        failures.check(want == got, "tryReceive: machine says \(got), model \(want)")
        compare(expected, actual, "tryReceive")
        return got
    }

    func receive(_ options: WaitOptions) {
        if !options.direct, tryReceive() != "empty" { return }
        let id = ids.take(stale: options.stale)
        recentKinds[id] = true
        let (serial, continuation) = receives.make()
        var expected = Wakes(), actual = Wakes()
        let want: String
        let immediate = modelTryReceive(&expected)
        if immediate.hasPrefix("message") {
            want = "resume"
            expected.add(serial, .message(Int(immediate.dropFirst("message ".count))!), &failures)
        } else if immediate == "finished" {
            want = "resume"
            expected.add(serial, .message(nil), &failures)
        } else if options.cancelled {
            want = "resumeCancelled"
            expected.add(serial, .cancelled, &failures)
        } else {
            want = "suspended"
            receivers.append(id, serial)
            settle(&expected)  // nothing: receivers queue only while nothing is buffered
        }
        let got: String
        switch machine.enqueueReceive(id: id, continuation, stamp: stamp(), isCancelled: options.cancelled) {
        case .suspended:
            got = "suspended"
        case .resume(let resumed, let message, let wakeups):
            got = "resume"
            if let message { delivered(message) }
            collect(wakeups, into: &actual)
            receives.resume(resumed, .success(message), as: .message(message), into: &actual, &failures)
        case .resumeCancelled(let rejected):
            got = "resumeCancelled"
            receives.resume(rejected, .failure(CancellationError()), as: .cancelled, into: &actual, &failures)
        }
        failures.check(want == got, "enqueueReceive: machine says \(got), model \(want)")
        compare(expected, actual, "enqueueReceive")
    }

    func sendOnPermit(_ pick: UInt16) {
        guard let index = choose(pick, among: reservations.count) else { return }
        let reservation = reservations.remove(at: index)
        let message = newMessage()
        var expected = Wakes(), actual = Wakes()
        enter(message)
        settle(&expected)
        switch machine.sendReserved(slot: reservation.slot!, message) {
        case .buffered:
            break
        case .delivered(let receiver, let value, let wakeups):
            failures.check(value == message, "sendReserved delivered \(value), sent \(message)")
            deliver(receiver, value, into: &actual)
            collect(wakeups, into: &actual)
        }
        compare(expected, actual, "sendReserved")
        stats.note("permit.send")
    }

    /// Gives a reservation back (release, drop, or a reserver cancelled after the hand-off).
    func giveBack(_ index: Int, releaser: TaskID) {
        let reservation = reservations.remove(at: index)
        var expected = Wakes(), actual = Wakes()
        settle(&expected)
        collect(machine.releaseReserved(slot: reservation.slot!, by: releaser), into: &actual)
        compare(expected, actual, "releaseReserved")
    }

    func releasePermit(_ pick: UInt16, dropped: Bool) {
        guard let index = choose(pick, among: reservations.count) else { return }
        let releaser = !dropped && tracked ? (stampLedger?.context.task ?? .none) : .none
        giveBack(index, releaser: releaser)
    }

    func cancel(_ pick: UInt16, queuedOnly: Bool, timeout: Bool) {
        let candidates: [UInt64]
        if queuedOnly {
            candidates = (senders.ids + receivers.ids).sorted()
        } else {
            candidates = ids.recent
        }
        guard let index = choose(pick, among: candidates.count) else { return }
        let id = candidates[index]
        guard let isReceiver = recentKinds[id] else { return }
        var expected = Wakes(), actual = Wakes()
        if isReceiver {
            let queued = receivers.remove(id)
            if let serial = queued { expected.add(serial, .cancelled, &failures) }
            let removed = machine.cancelReceiver(id: id)
            if let removed, let serial = receives.resume(removed.continuation, .failure(CancellationError()), as: .cancelled, &failures) {
                actual.add(serial, .cancelled, &failures)
            }
            failures.check((queued != nil) == (removed != nil), "cancelReceiver(\(id)): machine removed \(removed != nil), model \(queued != nil)")
            stats.note(queued != nil ? "cancel.queuedReceiver" : "cancel.lateReceiver")
            compare(expected, actual, "cancelReceiver")
            return
        }
        let queued = senders.remove(id)
        switch queued {
        case .send(let serial, _)?, .reserve(let serial)?: expected.add(serial, .cancelled, &failures)
        case nil: break
        }
        let removed = machine.cancelSender(id: id)
        if let removed { fail(removed, CancellationError(), as: .cancelled, into: &actual) }
        failures.check((queued != nil) == (removed != nil), "cancelSender(\(id)): machine removed \(removed != nil), model \(queued != nil)")
        compare(expected, actual, "cancelSender")
        if queued != nil {
            stats.note(timeout ? "timeout.queuedSender" : "cancel.queuedSender")
        } else if let granted = reservations.firstIndex(where: { $0.waiterID == id }) {
            // Handed a slot before the cancellation: the reserver wakes, sees it, gives the slot back.
            stats.note("cancel.afterReserveGranted")
            giveBack(granted, releaser: .none)
        } else {
            stats.note("cancel.lateSender")
        }
    }

    func close() {
        var expected = Wakes(), actual = Wakes()
        let wasClosed = closed
        if !closed {
            closed = true
            for sender in senders.removeAll() {
                switch sender.entry {
                case .send(let serial, _), .reserve(let serial): expected.add(serial, .closed, &failures)
                }
            }
            settle(&expected)
        }
        let action = machine.close()
        failures.check((action == nil) == wasClosed, "close: machine returned \(action == nil ? "nil" : "an action"), already closed: \(wasClosed)")
        if let action {
            for sender in action.senders {
                fail(sender, FuturelockError.channelClosed(channel: "model"), as: .closed, into: &actual)
            }
            for receiver in action.receivers {
                receives.resume(receiver.continuation, .success(nil), as: .message(nil), into: &actual, &failures)
            }
            if !reservations.isEmpty { stats.note("close.withReservationsOut") }
            if !action.senders.isEmpty { stats.note("close.failedSenders") }
        }
        compare(expected, actual, "close")
    }

    func apply(_ op: ChannelOp) {
        switch op {
        case .trySend: _ = trySend()
        case .send(let options): send(options)
        case .tryReserve: _ = tryReserve()
        case .reserve(let options): reserve(options)
        case .tryReceive: tryReceive()
        case .receive(let options): receive(options)
        case .sendOnPermit(let pick): sendOnPermit(pick)
        case .releasePermit(let pick, let dropped): releasePermit(pick, dropped: dropped)
        case .cancel(let pick, let queuedOnly, let timeout): cancel(pick, queuedOnly: queuedOnly, timeout: timeout)
        case .close: close()
        case .makeSender: handles += 1
        case .dropSender:
            guard handles > 0 else { return }
            handles -= 1
            if handles == 0 {
                stats.note("lastSenderDropped")
                close()
            }
        case .takeIDEarly: ids.takeEarly()
        case .restart: break  // handled by the program loop
        }
    }

    // MARK: checks

    func checkState() {
        let m = machine
        failures.check(m.capacity == capacity, "capacity \(m.capacity) ≠ \(capacity)")
        failures.check(m.available >= 0 && m.available + m.buffer.count + m.held == capacity,
                       "slots do not add up: \(m.available) free + \(m.buffer.count) buffered + \(m.held) reserved ≠ \(capacity)")
        failures.check(m.available == free, "free slots: machine \(m.available), model \(free)")
        failures.check(m.buffer.count == buffer.count && m.buffer.elementsEqual(buffer),
                       "buffer: machine \(Array(m.buffer)), model \(buffer)")
        failures.check(m.held == reservations.count, "reserved: machine \(m.held), model \(reservations.count)")
        failures.check(m.senders.count == senders.count, "queued senders: machine \(m.senders.count), model \(senders.count)")
        failures.check(m.receivers.count == receivers.count, "queued receivers: machine \(m.receivers.count), model \(receivers.count)")
        failures.check(m.closed == closed, "closed: machine \(m.closed), model \(closed)")
        failures.check(m.senders.isEmpty || m.available == 0, "a sender queues while a slot is free")
        failures.check(m.receivers.isEmpty || m.buffer.isEmpty, "a receiver queues while a message is buffered")
        failures.check(!m.closed || m.senders.isEmpty, "a sender queues on a closed channel")
        failures.check(!m.closed || m.receivers.isEmpty || m.held > 0,
                       "a receiver queues on a closed channel with nothing reserved (it would never be woken)")
        if senders.count + receivers.count <= 8 || failures.step % 8 == 0 {
            failures.check(m.senders.idsInOrder == senders.ids, "sender queue order: machine \(m.senders.idsInOrder), model \(senders.ids)")
            failures.check(m.receivers.idsInOrder == receivers.ids, "receiver queue order: machine \(m.receivers.idsInOrder), model \(receivers.ids)")
        }
        if tracked {
            failures.check(m.holdings.count == reservations.count, "holdings table has \(m.holdings.count) entries, \(reservations.count) reservations")
            for reservation in reservations where !(reservation.slot.map { m.holdings.isLive($0) } ?? false) {
                failures.fail("reservation slot \(String(describing: reservation.slot)) is not live in the holdings table")
            }
        }
        stats.maxQueue = max(stats.maxQueue, senders.count, receivers.count)
    }

    var stateDescription: String {
        "machine: free \(machine.available), buffer \(Array(machine.buffer)), reserved \(machine.held), senders \(machine.senders.idsInOrder), "
            + "receivers \(machine.receivers.idsInOrder), closed \(machine.closed); model: free \(free), buffer \(buffer), "
            + "reserved \(reservations.count), senders \(senders.ids), receivers \(receivers.ids), closed \(closed)"
    }

    /// Ends the channel's lifetime: close, use or give back every permit, receive until the end, and
    /// check that every waiter was resumed and every accepted message received exactly once, in order.
    func drain(_ rng: inout SplitMix) {
        failures.phase = "drain"
        close()
        drainStep("close")
        while !failures.failed, !reservations.isEmpty {
            let pick = rng.pick()
            if rng.chance(60) { sendOnPermit(pick); drainStep("permit.send") } else { releasePermit(pick, dropped: false); drainStep("permit.release") }
        }
        var rounds = 0
        while !failures.failed, tryReceive() != "finished" {
            drainStep("tryReceive")
            rounds += 1
            if rounds > capacity + 2 {
                failures.fail("the closed, drained channel never reports its end")
                break
            }
        }
        guard !failures.failed else { return }
        drainStep("tryReceive")
        failures.check(machine.available == capacity && machine.buffer.isEmpty && machine.held == 0,
                       "after the drain: \(machine.available) free, \(machine.buffer.count) buffered, \(machine.held) reserved")
        failures.check(machine.senders.isEmpty && machine.receivers.isEmpty, "waiters left after the drain")
        checkNoContinuationLeft()
        failures.check(deliveredInOrder == accepted.count, "\(accepted.count) messages accepted, \(deliveredInOrder) delivered")
        for (index, count) in deliveredCount.enumerated() where failures.message == nil {
            let message = firstMessage + index
            let wasAccepted = accepted.contains(message)
            failures.check(Int(count) == (wasAccepted ? 1 : 0),
                           "message \(message) delivered \(count) times (accepted: \(wasAccepted))")
        }
        stats.note("messages", accepted.count)
        failures.phase = "program"
    }

    /// A new channel (after `drain`).
    func restart(capacity newCapacity: Int) {
        capacity = newCapacity
        machine = ChannelMachine(capacity: newCapacity, runtimeParentOffset: stampLedger?.runtime.parentOffset ?? 0)
        buffer = []
        reservations = []
        senders = ModelQueue()
        receivers = ModelQueue()
        closed = false
        handles = 0
        ids = WaiterIDs()
        recentKinds = [:]
        firstMessage = nextMessage
        accepted = []
        deliveredInOrder = 0
        deliveredCount = []
        stats.episodes += 1
    }
}

@Suite("BoundedChannel model")
struct BoundedChannelModelTests {
    /// The bulk: forged continuations, ledger off.
    @Test("BoundedChannel Model: random programs, forged continuations", ModelRun.seedTrait, .timeLimit(.minutes(10)))
    func channelModel_forgedContinuations() async {
        await ChannelDriver.check(.forged, name: "channelModel_forgedContinuations")
    }

    /// Real suspended tasks as waiters, ledger on: every resumption observed by the task itself.
    @Test("BoundedChannel Model: random programs, real continuations and ledger", ModelRun.seedTrait, .timeLimit(.minutes(10)))
    func channelModel_realContinuations() async {
        await ChannelDriver.check(.real, name: "channelModel_realContinuations")
    }
}
