// Model-checked Semaphore state machine (see ModelSupport.swift for the method).
//
// The reference model: `capacity` permits, `free` of them free, the rest held by permits (each of
// `count` units); one FIFO queue of requests. After every event it settles: while the semaphore is
// open and the head request fits in what is free, the head is granted (the head blocks everyone
// behind it: a large request is never passed by small ones); a queued request larger than the
// capacity fails (it could never be granted). Operations: acquire/tryAcquire of one or several
// permits, release (explicit or by a dropped permit), `Permit.forget`, `addPermits`,
// `forgetPermits`, close, and cancellation or timeout of any waiter — queued, or already handed its
// permits, in which case the woken waiter releases them (the wrapper's sequence).
//
// Checked after every operation: free + held = capacity, each against the model (held as the sum of
// the permits' units); the queue in order with each request; no waiter on a closed semaphore; the
// head never waits while its request fits; no queued request above the capacity; with the ledger on,
// one live holding per permit with its units. At the end of each lifetime: close, release or forget
// every permit — all permits back, every waiter resumed exactly once.
//
// To add an operation: a case in `SemaphoreOp`, its weight in `SemaphoreOp.makeProgram`, its model rule
// and machine call in `SemaphoreDriver.apply`.

import PropertyBased
import Testing
@testable import Futurelock

private typealias SemaphoreMachine = Semaphore.StateMachine

enum SemaphoreOp: Sendable, CustomStringConvertible {
    /// `tryAcquire(permits:)` (`tryAcquire()` when 1).
    case tryAcquire(count: Int)
    /// `acquire(permits:)`: the fast path, then (if it fails) the waiting acquire.
    case acquire(count: Int, WaitOptions)
    /// `Permit.release()` (or the permit's deinit, when dropped) on the n-th held permit.
    case release(UInt16, dropped: Bool)
    /// `Permit.forget()` on the n-th held permit.
    case forgetPermit(UInt16)
    case addPermits(Int)
    case forgetPermits(Int)
    /// A waiter's task is cancelled, or its `acquire(timeout:)` timer fires (the race cancels the
    /// waiting child: the same calls). `queuedOnly` picks among queued waiters, otherwise among recent
    /// ones, which may have been handed their permits already.
    case cancel(UInt16, queuedOnly: Bool, timeout: Bool)
    case close
    case takeIDEarly
    /// Drain and check this semaphore, then start a new one.
    case restart(capacity: Int)

    var description: String {
        switch self {
        case .tryAcquire(let count): "tryAcquire(\(count))"
        case .acquire(let count, let options): "acquire(\(count))\(options)"
        case .release(let pick, let dropped): dropped ? "permit.drop(#\(pick))" : "permit.release(#\(pick))"
        case .forgetPermit(let pick): "permit.forget(#\(pick))"
        case .addPermits(let count): "addPermits(\(count))"
        case .forgetPermits(let count): "forgetPermits(\(count))"
        case .cancel(let pick, let queuedOnly, let timeout):
            "\(timeout ? "timeout" : "cancel")(\(queuedOnly ? "queued" : "recent") #\(pick))"
        case .close: "close"
        case .takeIDEarly: "takeIDEarly"
        case .restart(let capacity): "restart(capacity: \(capacity))"
        }
    }
}

// MARK: - Programs

extension SemaphoreOp: ModelOp {
    var restartCapacity: Int? { if case .restart(let capacity) = self { capacity } else { nil } }

    static func makeProgram(_ rng: inout SplitMix, length: ClosedRange<Int>) -> ModelProgram<SemaphoreOp> {
        // Weights: tryAcquire, acquire, release, forgetPermit, addPermits, forgetPermits, cancel, close,
        // takeIDEarly, restart. `multi`: percent of requests for more than one permit.
        let profiles: [(String, ClosedRange<Int>, [Int], queuedCancel: Int, multi: Int)] = [
            ("mutex", 1...1, [8, 24, 20, 1, 1, 1, 10, 1, 2, 1], 70, 0),
            ("balanced", 1...4, [8, 20, 18, 2, 2, 2, 10, 1, 2, 1], 70, 25),
            ("crowded", 1...3, [3, 30, 8, 1, 1, 1, 14, 0, 2, 0], 85, 20),
            ("bulk-requests", 2...6, [6, 20, 16, 3, 4, 4, 10, 1, 2, 1], 70, 60),
            ("resizing", 1...4, [6, 18, 14, 6, 10, 10, 8, 1, 2, 1], 60, 40),
        ]
        let profile = profiles[rng.below(profiles.count)]
        func request(_ rng: inout SplitMix) -> Int {
            guard rng.chance(profile.multi) else { return 1 }
            return rng.chance(85) ? 2 + rng.below(3) : 5 + rng.below(4)
        }
        return .random(&rng, profile: profile.0, capacities: profile.1, weights: profile.2, length: length) { rng, choice in
            switch choice {
            case 0: .tryAcquire(count: request(&rng))
            case 1: .acquire(count: request(&rng), .random(&rng))
            case 2: .release(rng.pick(), dropped: rng.chance(20))
            case 3: .forgetPermit(rng.pick())
            case 4: .addPermits(1 + rng.below(3))
            case 5: .forgetPermits(1 + rng.below(3))
            case 6: .cancel(rng.pick(), queuedOnly: rng.chance(profile.queuedCancel), timeout: rng.chance(30))
            case 7: .close
            case 8: .takeIDEarly
            default: .restart(capacity: rng.within(profile.1))
            }
        }
    }
}

// MARK: - The driver: machine and model side by side

private final class SemaphoreDriver: ModelDriver {
    static let title = "Semaphore model"
    var machine: SemaphoreMachine
    // The model.
    struct HeldPermit {
        var count: Int
        var slot: Int32?
        /// Handed to this queued (or enqueueing) waiter: its task may still see a cancellation.
        var waiterID: UInt64?
        var serial: Int?
    }
    struct Request { var serial: Int; var count: Int }
    var capacity: Int
    var free: Int
    var permits: [HeldPermit] = []
    var queue = ModelQueue<Request>()
    var closed = false
    var ids = WaiterIDs()
    var heldUnits: Int { permits.reduce(0) { $0 + $1.count } }

    // Harness.
    let ledger: TokenLedger
    let tokens: Tokens<Int32>
    let stampLedger: Ledger?
    let stats: ModelStats
    var failures = Failures()

    static let anySlot = Int32.min
    static let maxCapacity = 12

    init(capacity: Int, real: Bool, stampLedger: Ledger?, stats: ModelStats) {
        self.capacity = capacity
        free = capacity
        self.stampLedger = stampLedger
        self.stats = stats
        machine = SemaphoreMachine(capacity: capacity, runtimeParentOffset: stampLedger?.runtime.parentOffset ?? 0)
        ledger = TokenLedger(real: real)
        tokens = Tokens(ledger) { .slot($0) }
    }

    convenience init(program: ModelProgram<SemaphoreOp>, real: Bool, stampLedger: Ledger?, stats: ModelStats) {
        self.init(capacity: program.capacity, real: real, stampLedger: stampLedger, stats: stats)
    }

    func prepareTokens() async { await tokens.prepare() }
    func cleanUpTokens() { tokens.cleanUp() }

    @inline(__always)
    func stamp() -> OwnerStamp? { stampLedger?.stamp(fileID: #fileID, line: #line, function: #function) }

    var tracked: Bool { stampLedger != nil }

    // MARK: model rules

    /// Fails the queued requests that exceed the capacity, then grants head requests while they fit.
    func settle(_ expected: inout Wakes) {
        for entry in queue.entries where entry.entry.count > capacity {
            _ = queue.remove(entry.id)
            expected.add(entry.entry.serial, .exceedsCapacity, &failures)
        }
        guard !closed else { return }
        while let head = queue.first, head.entry.count <= free {
            _ = queue.popFirst()
            free -= head.entry.count
            permits.append(HeldPermit(count: head.entry.count, slot: nil, waiterID: head.id, serial: head.entry.serial))
            expected.add(head.entry.serial, .slot(Self.anySlot), &failures)
        }
    }

    // MARK: machine results

    func collect(_ action: SemaphoreMachine.ReleaseAction, into actual: inout Wakes) {
        switch action {
        case .none:
            break
        case .handOff(let continuation, let slot, _):
            tokens.resume(continuation, .success(slot), as: .slot(slot), into: &actual, &failures)
        case .handOffs(let grants):
            failures.check(grants.count >= 2, "handOffs with \(grants.count) grant(s)")
            for grant in grants {
                tokens.resume(grant.continuation, .success(grant.slot), as: .slot(grant.slot), into: &actual, &failures)
            }
            stats.note("handOffs.several")
        }
    }

    func collect(_ failed: SemaphoreMachine.Failed, into actual: inout Wakes) {
        for waiter in failed {
            let error = FuturelockError.permitRequestExceedsCapacity(semaphore: "model", requested: waiter.requested,
                                                                       capacity: machine.capacity)
            if let serial = tokens.resume(waiter.continuation, .failure(error), as: .exceedsCapacity, &failures) {
                actual.add(serial, .exceedsCapacity, &failures)
                let want = ledger.states.indices.contains(serial) ? requestedCount[serial] : nil
                failures.check(want == waiter.requested, "failed waiter #\(serial) reports \(waiter.requested) permits requested, asked \(String(describing: want))")
            }
        }
        if !failed.isEmpty { stats.note("failed.exceedsCapacity", failed.count) }
    }

    /// Permits requested by each waiter, by serial.
    var requestedCount: [Int: Int] = [:]

    func checkSlot(_ slot: Int32, count: Int) {
        if tracked {
            failures.check(slot >= 0 && machine.holdings.isLive(slot), "permit slot \(slot) is not a live holding")
            failures.check(machine.holdings[slot]?.units == count, "holding \(slot) records \(String(describing: machine.holdings[slot]?.units)) units, granted \(count)")
            failures.check(!permits.contains { $0.slot == slot }, "permit slot \(slot) handed out twice")
        } else {
            failures.check(slot == SemaphoreMachine.untrackedSlot, "untracked permit got slot \(slot)")
        }
    }

    func compare(_ expected: Wakes, _ actual: Wakes, _ what: @autoclosure () -> String) {
        guard !failures.failed else { return }
        guard Set(expected.bySerial.keys) == Set(actual.bySerial.keys) else {
            failures.fail("\(what()): resumed \(actual), the model resumes \(expected)")
            return
        }
        for (serial, want) in expected.bySerial {
            let got = actual.bySerial[serial]!
            if want == .slot(Self.anySlot), case .slot(let slot) = got {
                if let index = permits.firstIndex(where: { $0.serial == serial && $0.slot == nil }) {
                    checkSlot(slot, count: permits[index].count)
                    permits[index].slot = slot
                } else {
                    failures.fail("\(what()): no model permit for #\(serial)")
                }
            } else if want != got {
                failures.fail("\(what()): #\(serial) resumed with \(got), the model expects \(want)")
            }
        }
    }

    // MARK: operations

    @discardableResult
    func tryAcquire(count: Int) -> Bool {
        // `tryAcquire(permits:)` rejects a request above the capacity before it locks.
        guard count <= capacity else { return false }
        let want = !closed && queue.isEmpty && free >= count
        if want {
            free -= count
            permits.append(HeldPermit(count: count, slot: nil, waiterID: nil, serial: nil))
        }
        let got = machine.tryAcquire(stamp(), count: count)
        failures.check(want == (got != nil), "tryAcquire(\(count)): machine \(got.map { "granted \($0)" } ?? "refused"), model \(want ? "grants" : "refuses")")
        if want, let got {
            permits.removeLast()
            checkSlot(got, count: count)
            permits.append(HeldPermit(count: count, slot: got, waiterID: nil, serial: nil))
        }
        return want
    }

    func acquire(count: Int, _ options: WaitOptions) {
        if !options.direct, tryAcquire(count: count) { return }
        let id = ids.take(stale: options.stale)
        let (serial, continuation) = tokens.make()
        requestedCount[serial] = count
        var expected = Wakes(), actual = Wakes()
        let want: String
        if closed {
            want = "resumeClosed"
            expected.add(serial, .closed, &failures)
        } else if options.cancelled {
            want = "resumeCancelled"
            expected.add(serial, .cancelled, &failures)
        } else if count > capacity {
            want = "resumeExceedsCapacity"
            expected.add(serial, .exceedsCapacity, &failures)
        } else if queue.isEmpty, free >= count {
            want = "resumeGranted"
            free -= count
            permits.append(HeldPermit(count: count, slot: nil, waiterID: id, serial: serial))
            expected.add(serial, .slot(Self.anySlot), &failures)
        } else {
            // Queued in id order: an id taken early can put it ahead of the head — then it is the
            // head, and is granted at once if its permits are free.
            queue.append(id, Request(serial: serial, count: count))
            settle(&expected)
            want = expected.bySerial[serial] == nil ? "suspended" : "resumeGranted"
            if want == "resumeGranted" { stats.note("enqueue.lateHeadGranted") }
        }
        let got: String
        switch machine.enqueue(id: id, continuation, stamp: stamp(), count: count, isCancelled: options.cancelled) {
        case .suspended:
            got = "suspended"
        case .resumeGranted(let granted, let slot):
            got = "resumeGranted"
            tokens.resume(granted, .success(slot), as: .slot(slot), into: &actual, &failures)
        case .resumeCancelled(let rejected):
            got = "resumeCancelled"
            tokens.resume(rejected, .failure(CancellationError()), as: .cancelled, into: &actual, &failures)
        case .resumeClosed(let rejected):
            got = "resumeClosed"
            tokens.resume(rejected, .failure(FuturelockError.semaphoreClosed(semaphore: "model")), as: .closed, into: &actual, &failures)
        case .resumeExceedsCapacity(let rejected, let reported):
            got = "resumeExceedsCapacity"
            failures.check(reported == capacity, "resumeExceedsCapacity reports capacity \(reported), model \(capacity)")
            let error = FuturelockError.permitRequestExceedsCapacity(semaphore: "model", requested: count, capacity: reported)
            tokens.resume(rejected, .failure(error), as: .exceedsCapacity, into: &actual, &failures)
        }
        failures.check(want == got, "enqueue(count: \(count)): machine says \(got), model \(want)")
        compare(expected, actual, "enqueue")
        if count > 1 { stats.note("acquire.several") }
    }

    /// Returns a held permit's units (release, drop, or a waiter cancelled after the hand-off).
    func release(_ index: Int) {
        let permit = permits.remove(at: index)
        free += permit.count
        var expected = Wakes(), actual = Wakes()
        settle(&expected)
        collect(machine.release(slot: permit.slot!, count: permit.count), into: &actual)
        compare(expected, actual, "release")
    }

    func forgetPermit(_ pick: UInt16) {
        guard let index = choose(pick, among: permits.count) else { return }
        let permit = permits.remove(at: index)
        capacity -= permit.count
        var expected = Wakes(), actual = Wakes()
        settle(&expected)
        let (failed, served) = machine.forget(slot: permit.slot!, count: permit.count)
        collect(failed, into: &actual)
        collect(served, into: &actual)
        compare(expected, actual, "forget(slot:count:)")
        stats.note("permit.forget")
    }

    func addPermits(_ count: Int) {
        guard capacity + count <= Self.maxCapacity else { return }
        capacity += count
        free += count
        var expected = Wakes(), actual = Wakes()
        settle(&expected)
        collect(machine.addPermits(count), into: &actual)
        compare(expected, actual, "addPermits")
    }

    func forgetPermits(_ count: Int) {
        let forgotten = Swift.min(count, free)
        free -= forgotten
        capacity -= forgotten
        var expected = Wakes(), actual = Wakes()
        settle(&expected)
        let result = machine.forgetPermits(count)
        failures.check(result.forgotten == forgotten, "forgetPermits(\(count)) forgot \(result.forgotten), model \(forgotten)")
        collect(result.failed, into: &actual)
        collect(result.served, into: &actual)
        compare(expected, actual, "forgetPermits")
    }

    func cancel(_ pick: UInt16, queuedOnly: Bool, timeout: Bool) {
        let candidates = queuedOnly ? queue.ids : ids.recent
        guard let index = choose(pick, among: candidates.count) else { return }
        let id = candidates[index]
        var expected = Wakes(), actual = Wakes()
        let queued = queue.remove(id)
        if let queued {
            expected.add(queued.serial, .cancelled, &failures)
            settle(&expected)
        }
        let (removed, served) = machine.cancel(id: id)
        if let removed, let serial = tokens.resume(removed, .failure(CancellationError()), as: .cancelled, &failures) {
            actual.add(serial, .cancelled, &failures)
        }
        collect(served, into: &actual)
        failures.check((queued != nil) == (removed != nil), "cancel(\(id)): machine removed \(removed != nil), model \(queued != nil)")
        compare(expected, actual, "cancel")
        if queued != nil {
            stats.note(timeout ? "timeout.queued" : "cancel.queued")
            if !actual.isEmpty, actual.bySerial.count > 1 { stats.note("cancel.letOthersThrough") }
        } else if let granted = permits.firstIndex(where: { $0.waiterID == id }) {
            // Handed its permits before the cancellation: the waiter wakes, sees it, releases them.
            stats.note("cancel.afterHandOff")
            release(granted)
        } else {
            stats.note("cancel.late")
        }
    }

    func close() {
        var expected = Wakes(), actual = Wakes()
        let wasClosed = closed
        if !closed {
            closed = true
            for entry in queue.removeAll() { expected.add(entry.entry.serial, .closed, &failures) }
        }
        let failed = machine.close()
        failures.check((failed == nil) == wasClosed, "close: machine returned \(failed == nil ? "nil" : "waiters"), already closed: \(wasClosed)")
        for continuation in failed ?? [] {
            tokens.resume(continuation, .failure(FuturelockError.semaphoreClosed(semaphore: "model")), as: .closed, into: &actual, &failures)
        }
        if let failed, !failed.isEmpty { stats.note("close.failedWaiters") }
        compare(expected, actual, "close")
    }

    func apply(_ op: SemaphoreOp) {
        switch op {
        case .tryAcquire(let count): tryAcquire(count: count)
        case .acquire(let count, let options): acquire(count: count, options)
        case .release(let pick, _):
            guard let index = choose(pick, among: permits.count) else { return }
            release(index)
        case .forgetPermit(let pick): forgetPermit(pick)
        case .addPermits(let count): addPermits(count)
        case .forgetPermits(let count): forgetPermits(count)
        case .cancel(let pick, let queuedOnly, let timeout): cancel(pick, queuedOnly: queuedOnly, timeout: timeout)
        case .close: close()
        case .takeIDEarly: ids.takeEarly()
        case .restart: break  // handled by the program loop
        }
    }

    // MARK: checks

    func checkState() {
        let m = machine
        let units = heldUnits
        failures.check(m.capacity == capacity, "capacity: machine \(m.capacity), model \(capacity)")
        failures.check(m.available >= 0 && m.available + m.held == m.capacity,
                       "permits do not add up: \(m.available) free + \(m.held) held ≠ \(m.capacity)")
        failures.check(m.available == free, "free: machine \(m.available), model \(free)")
        failures.check(m.held == units, "held: machine \(m.held), model \(units) in \(permits.count) permits")
        failures.check(m.waiters.count == queue.count, "queued: machine \(m.waiters.count), model \(queue.count)")
        failures.check(m.closed == closed, "closed: machine \(m.closed), model \(closed)")
        failures.check(!m.closed || m.waiters.isEmpty, "a waiter queues on a closed semaphore")
        failures.check(m.waiters.isEmpty || m.headRequest > m.available,
                       "the head waiter (asking \(m.headRequest)) queues while \(m.available) permits are free")
        if queue.count <= 8 || failures.step % 8 == 0 {
            var machineQueue: [(UInt64, Int)] = []
            m.waiters.forEachInOrder { _, id, waiter in machineQueue.append((id, waiter.count)) }
            failures.check(machineQueue.map(\.0) == queue.ids, "queue order: machine \(machineQueue.map(\.0)), model \(queue.ids)")
            failures.check(machineQueue.map(\.1) == queue.entries.map(\.entry.count), "queued requests: machine \(machineQueue.map(\.1)), model \(queue.entries.map(\.entry.count))")
            failures.check(machineQueue.allSatisfy { $0.1 <= m.capacity }, "a request above the capacity queues (it would never be granted)")
        }
        if tracked {
            failures.check(m.holdings.count == permits.count, "holdings table has \(m.holdings.count) entries, \(permits.count) permits held")
            for permit in permits where !(permit.slot.map { m.holdings.isLive($0) && m.holdings[$0]?.units == permit.count } ?? false) {
                failures.fail("permit slot \(String(describing: permit.slot)) (\(permit.count) units) is not live in the holdings table")
            }
        }
        stats.maxQueue = max(stats.maxQueue, queue.count)
    }

    var stateDescription: String {
        var machineQueue: [String] = []
        machine.waiters.forEachInOrder { _, id, waiter in machineQueue.append("\(id)×\(waiter.count)") }
        return "machine: capacity \(machine.capacity), free \(machine.available), held \(machine.held), queue \(machineQueue), closed \(machine.closed); "
            + "model: capacity \(capacity), free \(free), held \(permits.map(\.count)), queue \(queue.entries.map { "\($0.id)×\($0.entry.count)" }), closed \(closed)"
    }

    /// Ends the semaphore's lifetime: close, return or forget every permit, and check that every
    /// waiter was resumed and every permit is back.
    func drain(_ rng: inout SplitMix) {
        failures.phase = "drain"
        close()
        drainStep("close")
        while !failures.failed, !permits.isEmpty {
            let pick = rng.pick()
            if rng.chance(85) {
                release(Int(pick) % permits.count)
                drainStep("permit.release")
            } else {
                forgetPermit(pick)
                drainStep("permit.forget")
            }
        }
        guard !failures.failed else { return }
        failures.check(machine.held == 0 && machine.available == machine.capacity && machine.waiters.isEmpty,
                       "after the drain: \(machine.available) free of \(machine.capacity), \(machine.held) held, \(machine.waiters.count) queued")
        checkNoContinuationLeft()
        failures.phase = "program"
    }

    func restart(capacity newCapacity: Int) {
        capacity = newCapacity
        free = newCapacity
        machine = SemaphoreMachine(capacity: newCapacity, runtimeParentOffset: stampLedger?.runtime.parentOffset ?? 0)
        permits = []
        queue = ModelQueue()
        closed = false
        ids = WaiterIDs()
        stats.episodes += 1
    }
}

@Suite("Semaphore model")
struct SemaphoreModelTests {
    /// The bulk: forged continuations, ledger off.
    @Test("Semaphore Model: random programs, forged continuations", ModelRun.seedTrait, .timeLimit(.minutes(10)))
    func semaphoreModel_forgedContinuations() async {
        await SemaphoreDriver.check(.forged, name: "semaphoreModel_forgedContinuations")
    }

    /// Real suspended tasks as waiters, ledger on: every resumption observed by the task itself.
    @Test("Semaphore Model: random programs, real continuations and ledger", ModelRun.seedTrait, .timeLimit(.minutes(10)))
    func semaphoreModel_realContinuations() async {
        await SemaphoreDriver.check(.real, name: "semaphoreModel_realContinuations")
    }
}
