// Model-checked ConnectionPool state machine, core operations (see ModelSupport.swift for the method).
//
// The reference model follows every unit of capacity: a connection is idle, leased, waiting to be
// closed (`toClose`) or being closed by some task (a closer), and a creation — a right handed out, or a
// factory call running — holds a unit too. After every event it settles: while the pool runs and
// someone waits, the head waiter takes what one checkout may take — the most recently used idle
// connection, else a new unit of capacity (if fewer than `capacity` exist and fewer than
// `maximumConcurrentConnectionAttempts` creations are in flight), else the unit of the oldest
// connection waiting to be closed (a right to replace it). Operations are the wrapper's sequences:
// checkout (fast path, then the wait), tryCheckout, the creation steps (start, success, failure — each
// possibly after the task was cancelled), release, returnBroken, a close finishing (keeping the unit
// as a creation right when the closer closed it to replace it), run()/shutdown() closing what waits
// to be closed, shutdown, the grace period running out (leases revoked), and cancellation or timeout
// of any waiter, queued or already handed a connection or a right.
//
// Checked after every operation: each count of the machine (open, creating, closing, leased, idle and
// to-close connections in order, queue in order) against the model; `open` = idle + leased + to close +
// closing, and `open + creating ≤ capacity`; while anyone waits nothing is free; at most
// `maximumConcurrentConnectionAttempts` factory calls run at once (the attempt limit is drawn per
// program, 1–4); with the ledger on, one live holding per lease. At the end of each lifetime:
// shutdown, every creation, lease and close finished, the pool drained and every waiter resumed once.
//
// Not covered (other engineers are adding them): idle timeout, maximum lifetime, health checks,
// warm-up to `minimumConnections`, back-off timing (`notBefore` is not compared; the clock moves 1 ms
// per operation and lifetimes are off).

import PropertyBased
import Testing
@testable import Futurelock

private typealias PoolMachine = ConnectionPool<Int>.StateMachine

enum PoolOp: Sendable, CustomStringConvertible {
    /// `checkout()`: the fast path, then (if it must wait) the waiting checkout.
    case checkout(WaitOptions)
    case tryCheckout
    /// A checkout holding a creation right (not yet started) reaches `startCreation`; `cancelled`: its
    /// task was cancelled meanwhile (e.g. during the back-off).
    case startCreation(UInt16, cancelled: Bool)
    /// A running factory call returns a connection; `cancelled`: the checkout's task was cancelled
    /// while it ran.
    case creationSucceeded(UInt16, cancelled: Bool)
    /// A running factory call throws.
    case creationFailed(UInt16)
    /// `Lease.release()` (or its deinit, when dropped) on the n-th lease.
    case release(UInt16, dropped: Bool)
    /// `Lease.returnBroken()` on the n-th lease.
    case returnBroken(UInt16)
    /// The n-th close in progress finishes.
    case closeFinished(UInt16)
    /// `run()` or `shutdown()` takes the connections waiting to be closed and starts closing them.
    case takeToClose
    /// A waiter's task is cancelled, or its `checkout(timeout:)` timer fires (the same calls).
    case cancel(UInt16, queuedOnly: Bool, timeout: Bool)
    case shutdown
    /// The shutdown's grace period runs out: the leases still out are revoked and their connections closed.
    case graceExpired
    case takeIDEarly
    /// Drain and check this pool, then start a new one.
    case restart(capacity: Int)

    var description: String {
        switch self {
        case .checkout(let options): "checkout\(options)"
        case .tryCheckout: "tryCheckout"
        case .startCreation(let pick, let cancelled): "startCreation(#\(pick)\(cancelled ? ", cancelled" : ""))"
        case .creationSucceeded(let pick, let cancelled): "factory.success(#\(pick)\(cancelled ? ", cancelled" : ""))"
        case .creationFailed(let pick): "factory.failure(#\(pick))"
        case .release(let pick, let dropped): dropped ? "lease.drop(#\(pick))" : "lease.release(#\(pick))"
        case .returnBroken(let pick): "lease.returnBroken(#\(pick))"
        case .closeFinished(let pick): "closeFinished(#\(pick))"
        case .takeToClose: "takeToClose"
        case .cancel(let pick, let queuedOnly, let timeout):
            "\(timeout ? "timeout" : "cancel")(\(queuedOnly ? "queued" : "recent") #\(pick))"
        case .shutdown: "shutdown"
        case .graceExpired: "graceExpired"
        case .takeIDEarly: "takeIDEarly"
        case .restart(let capacity): "restart(capacity: \(capacity))"
        }
    }
}

// MARK: - Programs

extension PoolOp: ModelOp {
    var restartCapacity: Int? { if case .restart(let capacity) = self { capacity } else { nil } }

    static func makeProgram(_ rng: inout SplitMix, length: ClosedRange<Int>) -> ModelProgram<PoolOp> {
        // Weights: checkout, tryCheckout, startCreation, creationSucceeded, creationFailed, release,
        // returnBroken, closeFinished, takeToClose, cancel, shutdown, graceExpired, takeIDEarly, restart.
        let profiles: [(String, ClosedRange<Int>, [Int], queuedCancel: Int)] = [
            ("balanced", 1...4, [18, 4, 10, 10, 4, 14, 4, 8, 2, 8, 1, 1, 2, 1], 70),
            ("crowded", 1...3, [28, 2, 8, 6, 3, 8, 3, 6, 1, 12, 0, 0, 2, 0], 85),
            ("outage", 1...4, [18, 2, 10, 3, 12, 8, 8, 8, 2, 8, 1, 1, 2, 1], 70),
            ("broken-connections", 1...3, [16, 3, 10, 10, 3, 6, 12, 10, 3, 8, 1, 1, 2, 1], 70),
            ("shutdowns", 1...4, [16, 3, 10, 10, 4, 10, 5, 8, 3, 6, 4, 3, 2, 4], 60),
        ]
        let profile = profiles[rng.below(profiles.count)]
        return .random(&rng, profile: profile.0, capacities: profile.1, weights: profile.2, length: length) { rng, choice in
            switch choice {
            case 0: .checkout(.random(&rng))
            case 1: .tryCheckout
            case 2: .startCreation(rng.pick(), cancelled: rng.chance(10))
            case 3: .creationSucceeded(rng.pick(), cancelled: rng.chance(10))
            case 4: .creationFailed(rng.pick())
            case 5: .release(rng.pick(), dropped: rng.chance(20))
            case 6: .returnBroken(rng.pick())
            case 7: .closeFinished(rng.pick())
            case 8: .takeToClose
            case 9: .cancel(rng.pick(), queuedOnly: rng.chance(profile.queuedCancel), timeout: rng.chance(30))
            case 10: .shutdown
            case 11: .graceExpired
            case 12: .takeIDEarly
            default: .restart(capacity: rng.within(profile.1))
            }
        }
    }
}

// MARK: - The driver: machine and model side by side

private final class PoolDriver: ModelDriver {
    static let title = "ConnectionPool model"
    var machine: PoolMachine
    // The model.
    struct LeaseModel {
        var connection: Int
        var slot: Int32?
        var leaseID: UInt64?
        /// Handed to this waiter: its task may still see a cancellation (and release it).
        var waiterID: UInt64?
        var serial: Int?
    }
    struct Creation {
        /// The waiter that holds the right (nil: a fast-path checkout, or a closer that kept the unit).
        var owner: UInt64?
        /// The factory is running (`startCreation` said proceed).
        var started = false
        /// The owner's task was cancelled before it started.
        var cancelled = false
    }
    struct Closer {
        var connection: Int
        /// Closing it to replace it: the unit becomes the closer's creation right.
        var keepRight: Bool
        var owner: UInt64?
        var ownerCancelled = false
    }
    var capacity: Int
    let maximumAttempts: Int
    var idle: [Int] = []        // most recently used last
    var toClose: [Int] = []     // oldest first
    var leases: [LeaseModel] = []
    var revoked: [LeaseModel] = []
    var creations: [Creation] = []
    var closers: [Closer] = []
    var waiters = ModelQueue<Int>()
    var isShutdown = false
    var ids = WaiterIDs()
    var nextConnection = 0
    var now: ContinuousClock.Instant
    var open: Int { idle.count + leases.count + toClose.count + closers.count }

    // Harness.
    let ledger: TokenLedger
    let tokens: Tokens<PoolMachine.Grant>
    let stampLedger: Ledger?
    let stats: ModelStats
    var failures = Failures()
    /// What the machine handed out in the current step, by serial (to fill in lease ids and slots).
    var handedThisStep: [Int: PoolMachine.Handed] = [:]

    static let anySlot = Int32.min

    init(capacity: Int, maximumAttempts: Int, real: Bool, stampLedger: Ledger?, stats: ModelStats) {
        self.capacity = capacity
        self.maximumAttempts = maximumAttempts
        self.stampLedger = stampLedger
        self.stats = stats
        now = .now
        machine = PoolMachine(capacity: capacity, configuration: Self.configuration(maximumAttempts),
                              runtimeParentOffset: stampLedger?.runtime.parentOffset ?? 0)
        ledger = TokenLedger(real: real)
        tokens = Tokens(ledger) { grant in
            switch grant {
            case .connection(let handed): .connection(handed.connection, handed.slot)
            case .create: .create
            case .replace(let connection, _): .replace(connection)
            }
        }
    }

    convenience init(program: ModelProgram<PoolOp>, real: Bool, stampLedger: Ledger?, stats: ModelStats) {
        // The attempt limit is part of the program: 1 (serialised attempts) up to above the capacity.
        self.init(capacity: program.capacity, maximumAttempts: 1 + Int(program.drainSeed % 4), real: real,
                  stampLedger: stampLedger, stats: stats)
    }

    func prepareTokens() async { await tokens.prepare() }
    func cleanUpTokens() { tokens.cleanUp() }

    func describe(_ program: ModelProgram<PoolOp>) -> String {
        program.testDescription + " (maximumConcurrentConnectionAttempts \(maximumAttempts))"
    }

    static func configuration(_ maximumAttempts: Int) -> ConnectionPool<Int>.Configuration {
        var configuration = ConnectionPool<Int>.Configuration()
        configuration.idleTimeout = nil
        configuration.maximumLifetime = nil
        configuration.maximumConcurrentConnectionAttempts = maximumAttempts
        return configuration
    }

    @inline(__always)
    func stamp() -> OwnerStamp? { stampLedger?.stamp(fileID: #fileID, line: #line, function: #function) }

    var tracked: Bool { stampLedger != nil }

    // MARK: model rules

    /// Connection attempts in flight: creation rights and factory calls, and closes made to replace
    /// (each becomes a creation when the close returns).
    var attempts: Int { creations.count + closers.filter(\.keepRight).count }

    var canCreate: Bool {
        !isShutdown && open + creations.count < capacity && attempts < maximumAttempts
    }

    /// What one checkout takes, if anything is free (see the file header); `owner`/`serial` name a waiter.
    func take(owner: UInt64?, serial: Int?) -> Resumption? {
        if let connection = idle.popLast() {
            leases.append(LeaseModel(connection: connection, slot: nil, leaseID: nil, waiterID: owner, serial: serial))
            return .connection(connection, Self.anySlot)
        }
        if canCreate {
            creations.append(Creation(owner: owner))
            return .create
        }
        // A replacement is a connection attempt too: only while the attempt limit allows one.
        if !toClose.isEmpty, attempts < maximumAttempts {
            let connection = toClose.removeFirst()
            closers.append(Closer(connection: connection, keepRight: true, owner: owner))
            return .replace(connection)
        }
        return nil
    }

    func settle(_ expected: inout Wakes) {
        while !isShutdown, let head = waiters.first, let grant = take(owner: head.id, serial: head.entry) {
            _ = waiters.popFirst()
            expected.add(head.entry, grant, &failures)
        }
    }

    // MARK: machine results

    func resumption(of grant: PoolMachine.Grant) -> Resumption {
        switch grant {
        case .connection(let handed): .connection(handed.connection, handed.slot)
        case .create: .create
        case .replace(let connection, _): .replace(connection)
        }
    }

    func collect(_ wakes: [PoolMachine.Wake], into actual: inout Wakes) {
        for wake in wakes { resume(wake.continuation, wake.grant, into: &actual) }
        if wakes.count > 1 { stats.note("wakes.several") }
    }

    func resume(_ continuation: PoolMachine.Continuation, _ grant: PoolMachine.Grant, into actual: inout Wakes) {
        let resumption = resumption(of: grant)
        if let serial = tokens.resume(continuation, .success(grant), as: resumption, &failures) {
            actual.add(serial, resumption, &failures)
            if case .connection(let handed) = grant { handedThisStep[serial] = handed }
        }
    }

    func fail(_ continuation: PoolMachine.Continuation, _ resumption: Resumption, into actual: inout Wakes) {
        let error: any Error = resumption == .cancelled ? CancellationError() : FuturelockError.poolShutdown(pool: "model")
        tokens.resume(continuation, .failure(error), as: resumption, into: &actual, &failures)
    }

    /// Records the lease id and slot the machine gave a model lease.
    func adopt(_ handed: PoolMachine.Handed, at index: Int) {
        failures.check(handed.connection == leases[index].connection,
                       "handed connection \(handed.connection), the model hands \(leases[index].connection)")
        if tracked {
            failures.check(handed.slot >= 0 && machine.holdings.isLive(handed.slot), "lease slot \(handed.slot) is not a live holding")
            failures.check(!leases.contains { $0.slot == handed.slot }, "lease slot \(handed.slot) handed out twice")
        } else {
            failures.check(handed.slot == PoolMachine.untrackedSlot, "untracked lease got slot \(handed.slot)")
        }
        failures.check(!leases.contains { $0.leaseID == handed.id } && !revoked.contains { $0.leaseID == handed.id },
                       "lease id \(handed.id) handed out twice")
        leases[index].slot = handed.slot
        leases[index].leaseID = handed.id
    }

    /// The lease the model made on a fast path (the last one, not yet adopted).
    func adoptFastPath(_ handed: PoolMachine.Handed) {
        guard let index = leases.lastIndex(where: { $0.leaseID == nil && $0.serial == nil }) else {
            failures.fail("the machine handed out connection \(handed.connection); the model hands nothing")
            return
        }
        adopt(handed, at: index)
    }

    func compare(_ expected: Wakes, _ actual: Wakes, _ what: @autoclosure () -> String) {
        defer { handedThisStep.removeAll() }
        guard !failures.failed else { return }
        guard Set(expected.bySerial.keys) == Set(actual.bySerial.keys) else {
            failures.fail("\(what()): resumed \(actual), the model resumes \(expected)")
            return
        }
        for (serial, want) in expected.bySerial {
            let got = actual.bySerial[serial]!
            if case .connection(let connection, Self.anySlot) = want {
                guard case .connection(connection, _) = got, let handed = handedThisStep[serial],
                      let index = leases.firstIndex(where: { $0.serial == serial && $0.leaseID == nil }) else {
                    failures.fail("\(what()): #\(serial) resumed with \(got), the model expects connection \(connection)")
                    return
                }
                adopt(handed, at: index)
            } else if want != got {
                failures.fail("\(what()): #\(serial) resumed with \(got), the model expects \(want)")
            }
        }
    }

    func kind(_ resumption: Resumption?) -> String {
        switch resumption {
        case .connection(let connection, _)?: "leased \(connection)"
        case .create?: "create"
        case .replace(let connection)?: "replace \(connection)"
        default: "mustWait"
        }
    }

    // MARK: operations

    func checkout(_ options: WaitOptions) {
        if !options.direct {
            let want: String
            if isShutdown {
                want = "shutDown"
            } else if !waiters.isEmpty {
                want = "mustWait"
            } else {
                want = kind(take(owner: nil, serial: nil))
            }
            let got: String
            switch machine.checkout(stamp(), now: now) {
            case .leased(let handed):
                got = "leased \(handed.connection)"
                if want == got { adoptFastPath(handed) }
            case .create: got = "create"
            case .replace(let connection, _): got = "replace \(connection)"
            case .mustWait: got = "mustWait"
            case .shutDown: got = "shutDown"
            }
            failures.check(want == got, "checkout: machine says \(got), model \(want)")
            if got != "mustWait" { return }
        }
        let id = ids.take(stale: options.stale)
        let (serial, continuation) = tokens.make()
        var expected = Wakes(), actual = Wakes()
        let want: String
        if isShutdown {
            want = "resumeShutDown"
            expected.add(serial, .shutDown, &failures)
        } else if options.cancelled {
            want = "resumeCancelled"
            expected.add(serial, .cancelled, &failures)
        } else if waiters.isEmpty, let grant = take(owner: id, serial: serial) {
            want = "resume"
            expected.add(serial, grant, &failures)
        } else {
            want = "suspended"
            waiters.append(id, serial)
            settle(&expected)  // nothing: checkouts queue only while nothing is free
        }
        let got: String
        switch machine.enqueue(id: id, continuation, stamp: stamp(), now: now, isCancelled: options.cancelled) {
        case .suspended: got = "suspended"
        case .resume(let resumed, let grant):
            got = "resume"
            resume(resumed, grant, into: &actual)
        case .resumeCancelled(let rejected):
            got = "resumeCancelled"
            fail(rejected, .cancelled, into: &actual)
        case .resumeShutDown(let rejected):
            got = "resumeShutDown"
            fail(rejected, .shutDown, into: &actual)
        }
        failures.check(want == got, "enqueue: machine says \(got), model \(want)")
        compare(expected, actual, "enqueue")
    }

    func tryCheckout() {
        var want = "nil"
        if !isShutdown, waiters.isEmpty, let connection = idle.popLast() {
            leases.append(LeaseModel(connection: connection, slot: nil, leaseID: nil, waiterID: nil, serial: nil))
            want = "leased \(connection)"
        }
        let handed = machine.tryCheckout(stamp(), now: now)
        let got = handed.map { "leased \($0.connection)" } ?? "nil"
        failures.check(want == got, "tryCheckout: machine says \(got), model \(want)")
        if want == got, let handed { adoptFastPath(handed) }
    }

    func startCreation(at index: Int, cancelled: Bool) {
        let creation = creations[index]
        let isCancelled = cancelled || creation.cancelled
        var expected = Wakes(), actual = Wakes()
        let want: String
        if isShutdown {
            want = "shutDown"
            creations.remove(at: index)
        } else if isCancelled {
            want = "cancelled"
            creations.remove(at: index)
            settle(&expected)
        } else {
            want = "proceed"
            creations[index].started = true
        }
        let got: String
        switch machine.startCreation(isCancelled: isCancelled, now: now) {
        case .proceed: got = "proceed"
        case .shutDown: got = "shutDown"
        case .cancelled(let wakes):
            got = "cancelled"
            collect(wakes, into: &actual)
        }
        failures.check(want == got, "startCreation(cancelled: \(isCancelled)): machine says \(got), model \(want)")
        compare(expected, actual, "startCreation")
        if want == "cancelled" { stats.note("creation.cancelledBeforeStart") }
    }

    func creationSucceeded(_ pick: UInt16, cancelled: Bool) {
        let running = creations.indices.filter { creations[$0].started }
        guard let choice = choose(pick, among: running.count) else { return }
        creations.remove(at: running[choice])
        let connection = nextConnection
        nextConnection += 1
        var expected = Wakes(), actual = Wakes()
        let want: String
        if isShutdown {
            want = "close \(connection)"
            closers.append(Closer(connection: connection, keepRight: false, owner: nil))
        } else if cancelled {
            want = "keptForOthers"
            idle.append(connection)
            settle(&expected)
        } else {
            want = "leased \(connection)"
            leases.append(LeaseModel(connection: connection, slot: nil, leaseID: nil, waiterID: nil, serial: nil))
            settle(&expected)
        }
        let got: String
        switch machine.creationSucceeded(connection, stamp: stamp(), now: now, isCancelled: cancelled) {
        case .leased(let handed, let wakes):
            got = "leased \(handed.connection)"
            if want == got { adoptFastPath(handed) }
            collect(wakes, into: &actual)
        case .keptForOthers(let wakes):
            got = "keptForOthers"
            collect(wakes, into: &actual)
        case .close(let closed):
            got = "close \(closed)"
        }
        failures.check(want == got, "creationSucceeded: machine says \(got), model \(want)")
        compare(expected, actual, "creationSucceeded")
        if cancelled, !isShutdown { stats.note("creation.cancelledWhileRunning") }
    }

    func creationFailed(_ pick: UInt16) {
        let running = creations.indices.filter { creations[$0].started }
        guard let choice = choose(pick, among: running.count) else { return }
        creations.remove(at: running[choice])
        var expected = Wakes(), actual = Wakes()
        settle(&expected)
        collect(machine.creationFailed(now: now, jitter: 0), into: &actual)
        compare(expected, actual, "creationFailed")
        stats.note("creation.failed")
    }

    /// Returns the n-th lease (leases out first, then revoked ones, whose return is ignored).
    func giveBack(_ index: Int, broken: Bool) {
        if index >= leases.count {
            let lease = revoked.remove(at: index - leases.count)
            let slot = lease.slot!, id = lease.leaseID!
            let action = broken ? machine.releaseBroken(slot: slot, lease: id, now: now) : machine.release(slot: slot, lease: id, now: now)
            guard case .revoked = action else {
                failures.fail("returning revoked lease \(id): the machine did not ignore it")
                return
            }
            stats.note("return.afterRevoke")
            return
        }
        let lease = leases.remove(at: index)
        var expected = Wakes(), actual = Wakes()
        if broken || isShutdown {
            toClose.append(lease.connection)
        } else {
            idle.append(lease.connection)
        }
        settle(&expected)
        let action = broken ? machine.releaseBroken(slot: lease.slot!, lease: lease.leaseID!, now: now)
                            : machine.release(slot: lease.slot!, lease: lease.leaseID!, now: now)
        switch action {
        case .returned(let wakes): collect(wakes, into: &actual)
        case .revoked: failures.fail("returning lease \(lease.leaseID!): the machine says it was revoked")
        }
        compare(expected, actual, broken ? "releaseBroken" : "release")
    }

    func closeFinished(_ pick: UInt16) {
        guard let index = choose(pick, among: closers.count) else { return }
        let closer = closers.remove(at: index)
        var expected = Wakes(), actual = Wakes()
        if closer.keepRight {
            creations.append(Creation(owner: closer.owner, started: false, cancelled: closer.ownerCancelled))
        } else {
            settle(&expected)
        }
        collect(machine.closeFinished(now: now, keepRight: closer.keepRight), into: &actual)
        compare(expected, actual, "closeFinished(keepRight: \(closer.keepRight))")
        if closer.keepRight { stats.note("replace.closed") }
    }

    func takeToClose() {
        let want = toClose
        closers.append(contentsOf: toClose.map { Closer(connection: $0, keepRight: false, owner: nil) })
        toClose = []
        let got = machine.takeToClose()
        failures.check(got == want, "takeToClose: machine \(got), model \(want)")
    }

    func cancel(_ pick: UInt16, queuedOnly: Bool, timeout: Bool) {
        let candidates = queuedOnly ? waiters.ids : ids.recent
        guard let index = choose(pick, among: candidates.count) else { return }
        let id = candidates[index]
        var expected = Wakes(), actual = Wakes()
        let queued = waiters.remove(id)
        if let queued { expected.add(queued, .cancelled, &failures) }
        let removed = machine.cancel(id: id)
        if let removed { fail(removed, .cancelled, into: &actual) }
        failures.check((queued != nil) == (removed != nil), "cancel(\(id)): machine removed \(removed != nil), model \(queued != nil)")
        compare(expected, actual, "cancel")
        guard queued == nil else {
            stats.note(timeout ? "timeout.queued" : "cancel.queued")
            return
        }
        // Not queued any more: it was handed something, which its task passes on when it sees the
        // cancellation.
        if let leaseIndex = leases.firstIndex(where: { $0.waiterID == id }) {
            stats.note("cancel.afterConnectionHandedOver")
            giveBack(leaseIndex, broken: false)
        } else if let creationIndex = creations.firstIndex(where: { $0.owner == id && !$0.started }) {
            stats.note("cancel.afterCreateRight")
            startCreation(at: creationIndex, cancelled: true)
        } else if let closerIndex = closers.firstIndex(where: { $0.owner == id }) {
            stats.note("cancel.whileClosingToReplace")
            closers[closerIndex].ownerCancelled = true
        } else {
            stats.note("cancel.late")
        }
    }

    func shutdown() {
        var expected = Wakes(), actual = Wakes()
        let wasShutdown = isShutdown
        if !isShutdown {
            isShutdown = true
            toClose.append(contentsOf: idle)
            idle = []
            for waiter in waiters.removeAll() { expected.add(waiter.entry, .shutDown, &failures) }
        }
        let action = machine.shutdown()
        failures.check((action == nil) == wasShutdown, "shutdown: machine returned \(action == nil ? "nil" : "an action"), already shut down: \(wasShutdown)")
        for continuation in action?.fail ?? [] { fail(continuation, .shutDown, into: &actual) }
        compare(expected, actual, "shutdown")
    }

    func graceExpired() {
        guard isShutdown else { return }
        let want = leases.map(\.connection).sorted()
        closers.append(contentsOf: leases.map { Closer(connection: $0.connection, keepRight: false, owner: nil) })
        revoked.append(contentsOf: leases)
        leases = []
        let got = machine.revokeLeases().sorted()
        failures.check(got == want, "revokeLeases: machine \(got), model \(want)")
        if !want.isEmpty { stats.note("leases.revoked", want.count) }
    }

    func apply(_ op: PoolOp) {
        now = now.advanced(by: .milliseconds(1))
        switch op {
        case .checkout(let options): checkout(options)
        case .tryCheckout: tryCheckout()
        case .startCreation(let pick, let cancelled):
            let pending = creations.indices.filter { !creations[$0].started }
            guard let choice = choose(pick, among: pending.count) else { return }
            startCreation(at: pending[choice], cancelled: cancelled)
        case .creationSucceeded(let pick, let cancelled): creationSucceeded(pick, cancelled: cancelled)
        case .creationFailed(let pick): creationFailed(pick)
        case .release(let pick, _):
            guard let index = choose(pick, among: leases.count + revoked.count) else { return }
            giveBack(index, broken: false)
        case .returnBroken(let pick):
            guard let index = choose(pick, among: leases.count + revoked.count) else { return }
            giveBack(index, broken: true)
        case .closeFinished(let pick): closeFinished(pick)
        case .takeToClose: takeToClose()
        case .cancel(let pick, let queuedOnly, let timeout): cancel(pick, queuedOnly: queuedOnly, timeout: timeout)
        case .shutdown: shutdown()
        case .graceExpired: graceExpired()
        case .takeIDEarly: ids.takeEarly()
        case .restart: break  // handled by the program loop
        }
    }

    // MARK: checks

    func checkState() {
        let m = machine
        failures.check(m.open == open, "open: machine \(m.open), model \(open) (\(idle.count) idle + \(leases.count) leased + \(toClose.count) to close + \(closers.count) closing)")
        failures.check(m.creating == creations.count, "creating: machine \(m.creating), model \(creations.count)")
        failures.check(m.closing == closers.count, "closing: machine \(m.closing), model \(closers.count)")
        // Every unit of capacity is idle, leased, waiting to be closed, being closed, being created, or unused.
        failures.check(m.open == m.idle.count + m.held + m.toClose.count + m.closing,
                       "machine: \(m.open) open ≠ \(m.idle.count) idle + \(m.held) leased + \(m.toClose.count) to close + \(m.closing) closing")
        failures.check(m.open + m.creating <= capacity, "\(m.open) open + \(m.creating) creating > capacity \(capacity)")
        failures.check(m.idle.map(\.connection) == idle, "idle: machine \(m.idle.map(\.connection)), model \(idle)")
        failures.check(m.toClose.elementsEqual(toClose), "to close: machine \(Array(m.toClose)), model \(toClose)")
        failures.check(m.held == leases.count, "leased: machine \(m.held), model \(leases.count)")
        failures.check(m.waiters.count == waiters.count, "queued: machine \(m.waiters.count), model \(waiters.count)")
        failures.check(m.isShutdown == isShutdown, "shut down: machine \(m.isShutdown), model \(isShutdown)")
        failures.check((m.creatable > 0) == canCreate,
                       "creatable: machine \(m.creatable), model \(canCreate ? "some" : "none")")
        failures.check(m.waiters.isEmpty || (m.idle.isEmpty && m.creatable == 0 && (m.toClose.isEmpty || attempts >= maximumAttempts)),
                       "a waiter queues while something is free (\(m.idle.count) idle, \(m.toClose.count) to close, \(m.creatable) creatable, \(attempts) attempts of \(maximumAttempts))")
        failures.check(attempts <= maximumAttempts,
                       "\(attempts) connection attempts (creations and replacements) at once, the limit is \(maximumAttempts)")
        failures.check(!m.isShutdown || m.waiters.isEmpty, "a waiter queues on a shut-down pool")
        let running = creations.filter(\.started).count
        failures.check(running <= maximumAttempts,
                       "\(running) factory calls run at once, maximumConcurrentConnectionAttempts is \(maximumAttempts)")
        if waiters.count <= 8 || failures.step % 8 == 0 {
            failures.check(m.waiters.idsInOrder == waiters.ids, "queue order: machine \(m.waiters.idsInOrder), model \(waiters.ids)")
        }
        if tracked {
            failures.check(m.holdings.count == leases.count, "holdings table has \(m.holdings.count) entries, \(leases.count) leases")
            for lease in leases where !(lease.slot.map { m.holdings.isLive($0) } ?? false) {
                failures.fail("lease slot \(String(describing: lease.slot)) is not live in the holdings table")
            }
        }
        stats.maxQueue = max(stats.maxQueue, waiters.count)
    }

    var stateDescription: String {
        "machine: open \(machine.open), creating \(machine.creating), closing \(machine.closing), idle \(machine.idle.map(\.connection)), "
            + "toClose \(Array(machine.toClose)), leased \(machine.held), queue \(machine.waiters.idsInOrder), shut down \(machine.isShutdown); "
            + "model: idle \(idle), toClose \(toClose), leased \(leases.map(\.connection)), closing \(closers.map(\.connection)), "
            + "creations \(creations.map { $0.started ? "running" : "right" }), queue \(waiters.ids), shut down \(isShutdown)"
    }

    /// Ends the pool's lifetime: shut down, let every creation, lease and close finish, and check that
    /// every waiter was resumed and every connection closed.
    func drain(_ rng: inout SplitMix) {
        failures.phase = "drain"
        shutdown()
        drainStep("shutdown")
        var rounds = 0
        while !failures.failed {
            rounds += 1
            if rounds > 10_000 {
                failures.fail("the drain does not end")
                break
            }
            now = now.advanced(by: .milliseconds(1))
            let pick = rng.pick()
            if let index = creations.firstIndex(where: { !$0.started }) {
                startCreation(at: index, cancelled: rng.chance(20))
                drainStep("startCreation")
            } else if !creations.isEmpty {
                if rng.chance(60) { creationSucceeded(pick, cancelled: rng.chance(20)); drainStep("factory.success") } else { creationFailed(pick); drainStep("factory.failure") }
            } else if !leases.isEmpty || !revoked.isEmpty {
                let roll = rng.below(10)
                if roll == 0 {
                    graceExpired()
                    drainStep("graceExpired")
                } else {
                    giveBack(Int(pick) % (leases.count + revoked.count), broken: roll < 4)
                    drainStep("lease.return")
                }
            } else if !toClose.isEmpty {
                takeToClose()
                drainStep("takeToClose")
            } else if !closers.isEmpty {
                closeFinished(pick)
                drainStep("closeFinished")
            } else {
                break
            }
        }
        guard !failures.failed else { return }
        failures.check(machine.isDrained && machine.closing == 0 && machine.held == 0 && machine.idle.isEmpty
                       && machine.toClose.isEmpty && machine.waiters.isEmpty,
                       "after the drain: \(stateDescription)")
        checkNoContinuationLeft()
        failures.phase = "program"
    }

    func restart(capacity newCapacity: Int) {
        capacity = newCapacity
        machine = PoolMachine(capacity: newCapacity, configuration: Self.configuration(maximumAttempts),
                              runtimeParentOffset: stampLedger?.runtime.parentOffset ?? 0)
        idle = []
        toClose = []
        leases = []
        revoked = []
        creations = []
        closers = []
        waiters = ModelQueue()
        isShutdown = false
        ids = WaiterIDs()
        stats.episodes += 1
    }
}

@Suite("ConnectionPool model")
struct ConnectionPoolModelTests {
    /// The bulk: forged continuations, ledger off.
    @Test("ConnectionPool Model: random programs, forged continuations", ModelRun.seedTrait, .timeLimit(.minutes(10)))
    func poolModel_forgedContinuations() async {
        await PoolDriver.check(.forged, name: "poolModel_forgedContinuations")
    }

    /// Real suspended tasks as waiters, ledger on: every resumption observed by the task itself.
    @Test("ConnectionPool Model: random programs, real continuations and ledger", ModelRun.seedTrait, .timeLimit(.minutes(10)))
    func poolModel_realContinuations() async {
        await PoolDriver.check(.real, name: "poolModel_realContinuations")
    }
}
