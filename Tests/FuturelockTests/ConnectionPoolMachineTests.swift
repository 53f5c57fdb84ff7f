import Synchronization
import Testing
@testable import Futurelock

// The pool's state machine driven directly, with time passed in: every transition and every rule of
// the production features (attempt limit, back-off, lifetime, idle timeout, warm-up, closing by
// whoever needs the capacity, shutdown with revocation).

private typealias Machine = ConnectionPool<Int>.StateMachine

/// A state machine under a lock, with helpers that queue real continuations as waiters.
private final class MachineBox: Sendable {
    let machine: Lock<Machine>
    let now = ContinuousClock.now
    init(capacity: Int, configuration: ConnectionPool<Int>.Configuration = .init()) {
        machine = Lock(Machine(capacity: capacity, configuration: configuration))
    }

    func with<R: Sendable>(_ body: (inout Machine) -> R) -> R { machine.withLock { body(&$0) } }

    /// Queues a waiter in a new task; the task ends with what the waiter is woken with.
    func waiter(id: UInt64) -> Task<Machine.Grant, any Error> {
        Task {
            try await withUnsafeThrowingContinuation { (continuation: Machine.Continuation) in
                switch self.with({ $0.enqueue(id: id, continuation, stamp: nil, now: self.now, isCancelled: false) }) {
                case .suspended: break
                case .resume(let continuation, let grant): continuation.resume(returning: grant)
                case .resumeCancelled(let continuation): continuation.resume(throwing: CancellationError())
                case .resumeShutDown(let continuation):
                    continuation.resume(throwing: FuturelockError.poolShutdown(pool: "machine"))
                }
            }
        }
    }

    /// Enqueues once from the current task and reports which way the enqueue went; only for
    /// enqueues that resume at once (a `.suspended` one would hang until the test's time limit).
    func enqueueOnce(id: UInt64, isCancelled: Bool) async -> (kind: String, result: Result<Machine.Grant, any Error>) {
        let kind = Locked("")
        let result: Result<Machine.Grant, any Error>
        do {
            result = .success(try await withUnsafeThrowingContinuation { (continuation: Machine.Continuation) in
                switch self.with({ $0.enqueue(id: id, continuation, stamp: nil, now: self.now, isCancelled: isCancelled) }) {
                case .suspended:
                    kind.withLock { $0 = "suspended" }
                case .resume(let continuation, let grant):
                    kind.withLock { $0 = "resume" }
                    continuation.resume(returning: grant)
                case .resumeCancelled(let continuation):
                    kind.withLock { $0 = "cancelled" }
                    continuation.resume(throwing: CancellationError())
                case .resumeShutDown(let continuation):
                    kind.withLock { $0 = "shutDown" }
                    continuation.resume(throwing: FuturelockError.poolShutdown(pool: "machine"))
                }
            })
        } catch {
            result = .failure(error)
        }
        return (kind.value, result)
    }

    /// Queues waiters one after another (each queued before the next starts).
    func queueWaiters(_ ids: [UInt64]) async -> [Task<Machine.Grant, any Error>] {
        var tasks: [Task<Machine.Grant, any Error>] = []
        for id in ids {
            let before = with { $0.waiters.count }
            tasks.append(waiter(id: id))
            await eventually { self.with { $0.waiters.count } == before + 1 }
        }
        return tasks
    }

    /// A connection created and leased (fast path + successful factory), at `at`.
    func createLeased(_ connection: Int, at: ContinuousClock.Instant? = nil) -> Machine.Handed? {
        with { machine -> Machine.Handed? in
            guard case .create = machine.checkout(nil, now: at ?? now) else { return nil }
            _ = machine.startCreation(isCancelled: false, now: at ?? now)
            guard case .leased(let handed, _) = machine.creationSucceeded(connection, stamp: nil, now: at ?? now,
                                                                        isCancelled: false) else { return nil }
            return handed
        }
    }
}

/// Resumes every woken waiter with its grant.
private func deliver(_ wakes: [Machine.Wake]) {
    for wake in wakes { wake.continuation.resume(returning: wake.grant) }
}

private func wakes(_ action: Machine.ReleaseAction) -> [Machine.Wake] {
    if case .returned(let wakes) = action { return wakes }
    return []
}

private extension Machine.Grant {
    var isCreate: Bool { if case .create = self { return true } else { return false } }
    var notBefore: ContinuousClock.Instant? {
        switch self {
        case .create(let notBefore), .replace(_, let notBefore): return notBefore
        case .connection: return nil
        }
    }
    var connection: Int? { if case .connection(let handed) = self { return handed.connection } else { return nil } }
    var replaced: Int? { if case .replace(let connection, _) = self { return connection } else { return nil } }
}

@Suite("ConnectionPool state machine")
struct ConnectionPoolMachineTests {
    @Test func checkout_reservesCapacity_atMostTheAttemptLimitAtOnce() {
        var configuration = ConnectionPool<Int>.Configuration()
        configuration.maximumConcurrentConnectionAttempts = 2
        let now = ContinuousClock.now
        var machine = Machine(capacity: 3, configuration: configuration)
        #expect(machine.available == 3)
        guard case .create(nil) = machine.checkout(nil, now: now) else { Issue.record("expected .create"); return }
        guard case .create(nil) = machine.checkout(nil, now: now) else { Issue.record("expected .create"); return }
        // Capacity is left, but two attempts are in flight already.
        #expect(machine.creating == 2 && machine.creatable == 0)
        guard case .mustWait = machine.checkout(nil, now: now) else { Issue.record("expected .mustWait"); return }
        _ = machine.startCreation(isCancelled: false, now: now)
        _ = machine.creationSucceeded(1, stamp: nil, now: now, isCancelled: false)
        guard case .create = machine.checkout(nil, now: now) else { Issue.record("expected .create once one ended"); return }
        #expect(machine.tryCheckout(nil, now: now) == nil)
    }

    @Test func creationSucceeded_leasesToCreator_andReleaseIdles() throws {
        let ledger = Ledger()
        let stamp = ledger.stamp(fileID: #fileID, line: #line, function: #function)
        let now = ContinuousClock.now
        var machine = Machine(capacity: 1)
        _ = machine.checkout(stamp, now: now)
        let result1 = machine.startCreation(isCancelled: false, now: now).proceeds
        #expect(result1)
        guard case .leased(let handed, _) = machine.creationSucceeded(7, stamp: stamp, now: now, isCancelled: false) else {
            Issue.record("expected .leased"); return
        }
        #expect(machine.open == 1 && machine.creating == 0 && machine.held == 1 && machine.available == 0)
        #expect(machine.holding(handed.slot)?.stamp.site.line == stamp?.site.line)
        let result2 = wakes(machine.release(slot: handed.slot, lease: handed.id, now: now)).isEmpty
        #expect(result2)
        #expect(machine.idle.map(\.connection) == [7] && machine.held == 0 && machine.available == 1)
        guard case .leased(let again) = machine.checkout(stamp, now: now.advanced(by: .seconds(3))) else {
            Issue.record("expected the idle connection"); return
        }
        #expect(again.connection == 7 && again.idleFor == .seconds(3) && again.id != handed.id)
        #expect(machine.statistics.connectionAttempts == 1)
    }

    @Test(.timeLimit(.minutes(1))) func release_handsOffToHeadWaiterInFIFOOrder() async throws {
        let box = MachineBox(capacity: 1)
        var handed = try #require(box.createLeased(1))
        let waiters = await box.queueWaiters([10, 11, 12])
        #expect(box.with { $0.available } == 0)
        for (index, waiter) in waiters.enumerated() {
            let current = handed
            let woken = wakes(box.with { $0.release(slot: current.slot, lease: current.id, now: box.now) })
            try #require(woken.count == 1)
            #expect(box.with { $0.waiters.count } == waiters.count - index - 1)
            deliver(woken)
            let grant = try await waiter.value
            guard case .connection(let next) = grant else { Issue.record("expected a connection"); return }
            #expect(next.connection == 1 && next.idleFor == .zero)
            handed = next
        }
        let last = handed
        let woken = wakes(box.with { $0.release(slot: last.slot, lease: last.id, now: box.now) })
        #expect(woken.isEmpty)
        #expect(box.with { $0.idle.count } == 1)
    }

    @Test(.timeLimit(.minutes(1))) func failedAttempts_backOffExponentially_andASuccessResets() async throws {
        var configuration = ConnectionPool<Int>.Configuration()
        configuration.backoff = .init(initial: .milliseconds(100), maximum: .milliseconds(350), jitter: 0)
        let box = MachineBox(capacity: 1, configuration: configuration)
        _ = box.with { $0.checkout(nil, now: box.now) }
        _ = box.with { $0.startCreation(isCancelled: false, now: box.now) }
        let waiters = await box.queueWaiters([1, 2, 3])
        var expected: [Duration] = [.milliseconds(100), .milliseconds(200), .milliseconds(350)]
        for waiter in waiters {
            let woken = box.with { $0.creationFailed(now: box.now, jitter: 0) }
            try #require(woken.count == 1)
            deliver(woken)
            let grant = try await waiter.value
            // The next attempt belongs to the head waiter, and waits for the back-off.
            #expect(grant.isCreate && grant.notBefore == box.now.advanced(by: expected.removeFirst()))
            _ = box.with { $0.startCreation(isCancelled: false, now: box.now) }
        }
        // While backing off, a fast-path checkout gets the right with the same delay.
        _ = box.with { $0.creationSucceeded(9, stamp: nil, now: box.now, isCancelled: true) }
        #expect(box.with { ($0.consecutiveFailures, $0.retryAt) } == (0, nil))
        #expect(box.with { $0.statistics.failedAttempts } == 3)
        #expect(configuration.backoff.delay(afterFailures: 1) == .milliseconds(100))
        #expect(configuration.backoff.delay(afterFailures: 60) == .milliseconds(350))
    }

    @Test func backoff_jitterStaysWithinItsFraction() {
        var configuration = ConnectionPool<Int>.Configuration()
        configuration.backoff = .init(initial: .seconds(1), maximum: .seconds(1), jitter: 0.2)
        let now = ContinuousClock.now
        for jitter in [-1.0, -0.5, 0, 0.5, 1, 7] {
            var machine = Machine(capacity: 1, configuration: configuration)
            _ = machine.checkout(nil, now: now)
            _ = machine.creationFailed(now: now, jitter: jitter)
            let delay = now.duration(to: machine.retryAt!)
            #expect(delay >= .milliseconds(800) && delay <= .milliseconds(1200), "jitter \(jitter) gave \(delay)")
            guard case .create(let notBefore?) = machine.checkout(nil, now: now) else {
                Issue.record("expected a delayed right"); return
            }
            #expect(notBefore == machine.retryAt)
        }
    }

    @Test(.timeLimit(.minutes(1))) func brokenConnection_keepsCapacityUntilClosed_andTheHeadWaiterReplacesIt() async throws {
        let box = MachineBox(capacity: 1)
        let handed = try #require(box.createLeased(1))
        let waiter = await box.queueWaiters([5])[0]
        let woken = wakes(box.with { $0.releaseBroken(slot: handed.slot, lease: handed.id, now: box.now) })
        // The head waiter gets the broken connection's unit: close it, then create.
        #expect(box.with { ($0.open, $0.closing, $0.held, $0.waiters.count) } == (1, 1, 0, 0))
        deliver(woken)
        #expect(try await waiter.value.replaced == 1)
        #expect(box.with { $0.closeFinished(now: box.now, keepRight: true) }.isEmpty)
        #expect(box.with { ($0.open, $0.closing, $0.creating) } == (0, 0, 1))

        // Without a waiter, the connection waits to be closed, still holding its unit; the next
        // checkout that needs a unit closes it and creates.
        var machine = Machine(capacity: 1)
        _ = machine.checkout(nil, now: box.now)
        _ = machine.startCreation(isCancelled: false, now: box.now)
        guard case .leased(let other, _) = machine.creationSucceeded(2, stamp: nil, now: box.now, isCancelled: false) else {
            Issue.record("expected .leased"); return
        }
        _ = machine.releaseBroken(slot: other.slot, lease: other.id, now: box.now)
        #expect(machine.toClose.count == 1 && machine.open == 1 && machine.available == 1)
        guard case .replace(2, nil) = machine.checkout(nil, now: box.now) else { Issue.record("expected .replace"); return }
        let result3 = machine.closeFinished(now: box.now, keepRight: true).isEmpty
        #expect(result3)
        #expect(machine.creating == 1 && machine.open == 0)
    }

    @Test func lifetime_expiredConnectionsAreNeverHandedOutOrKeptIdle() throws {
        var configuration = ConnectionPool<Int>.Configuration()
        configuration.maximumLifetime = .seconds(10)
        let box = MachineBox(capacity: 2, configuration: configuration)
        let young = try #require(box.createLeased(1))
        let old = try #require(box.createLeased(2))
        let later = box.now.advanced(by: .seconds(11))
        // Returned past its lifetime: set aside to be closed.
        _ = box.with { $0.release(slot: old.slot, lease: old.id, now: later) }
        #expect(box.with { ($0.idle.count, $0.toClose.count) } == (0, 1))
        // Idle, then expired while idle: skipped by checkouts and set aside.
        _ = box.with { $0.release(slot: young.slot, lease: young.id, now: box.now) }
        guard case .replace(2, nil) = box.with({ $0.checkout(nil, now: later) }) else {
            Issue.record("expected the expired connection to be replaced, not handed out"); return
        }
        #expect(box.with { ($0.idle.count, $0.toClose.count) } == (0, 1))
        #expect(box.with { $0.tryCheckout(nil, now: later) } == nil)
    }

    @Test func idleTimeout_closesIdleConnectionsBeyondTheMinimum() throws {
        var configuration = ConnectionPool<Int>.Configuration()
        configuration.idleTimeout = .seconds(5)
        configuration.minimumConnections = 1
        configuration.maximumLifetime = nil
        let box = MachineBox(capacity: 3, configuration: configuration)
        let handed = (1...3).compactMap { box.createLeased($0) }
        try #require(handed.count == 3)
        for (index, lease) in handed.enumerated() {
            _ = box.with { $0.release(slot: lease.slot, lease: lease.id, now: box.now.advanced(by: .seconds(index))) }
        }
        #expect(box.with { $0.takeExpiredIdle(now: box.now.advanced(by: .seconds(4))) }.isEmpty)
        // At 6 s connections 1 and 2 are past 5 s idle; 3 is not. Both expired ones go: one stays.
        #expect(box.with { $0.takeExpiredIdle(now: box.now.advanced(by: .seconds(6))) }.sorted() == [1, 2])
        #expect(box.with { $0.takeExpiredIdle(now: box.now.advanced(by: .seconds(60))) }.isEmpty,
                "the minimum is never closed for idleness")
        #expect(box.with { ($0.open, $0.closing, $0.idle.count) } == (3, 2, 1))
    }

    @Test func warmup_opensUpToTheMinimum_notWhileBackingOffOrWhenSomeoneWaits() {
        var configuration = ConnectionPool<Int>.Configuration()
        configuration.minimumConnections = 2
        let now = ContinuousClock.now
        var machine = Machine(capacity: 4, configuration: configuration)
        let result4 = machine.reserveWarmup(now: now)
        #expect(result4)
        let result5 = machine.reserveWarmup(now: now)
        #expect(result5)
        let result6 = machine.reserveWarmup(now: now)
        #expect(!result6, "two in flight reach the minimum")
        _ = machine.warmupSucceeded(1, now: now)
        _ = machine.creationFailed(now: now, jitter: 0)
        let result7 = machine.reserveWarmup(now: now)
        #expect(!result7, "backing off")
        let result8 = machine.reserveWarmup(now: now.advanced(by: .seconds(1)))
        #expect(result8)
        _ = machine.warmupSucceeded(2, now: now)
        #expect(machine.idle.count == 2 && machine.open == 2)
        let result9 = machine.reserveWarmup(now: now.advanced(by: .seconds(1)))
        #expect(!result9)
    }

    @Test(.timeLimit(.minutes(1))) func cancel_removesOnlyQueuedWaiters() async throws {
        let box = MachineBox(capacity: 1)
        _ = box.with { $0.checkout(nil, now: box.now) }
        let waiters = await box.queueWaiters([1, 2])
        let cancelled = try #require(box.with { $0.cancel(id: 1) })
        cancelled.resume(throwing: CancellationError())
        await #expect(throws: CancellationError.self) { try await waiters[0].value }
        #expect(box.with { $0.cancel(id: 1) } == nil)
        // The remaining waiter is now the head.
        deliver(box.with { $0.abandonCreation(now: box.now) })
        #expect(try await waiters[1].value.isCreate)
    }

    @Test(.timeLimit(.minutes(1))) func enqueue_whenCancelledFreeOrShutDown_resumesAtOnce() async throws {
        let box = MachineBox(capacity: 1)
        let cancelled = await box.enqueueOnce(id: 1, isCancelled: true)
        #expect(cancelled.kind == "cancelled")
        #expect(box.with { $0.creating } == 0)
        // Capacity freed between the fast path and the enqueue is taken at once, without queueing.
        let free = await box.enqueueOnce(id: 2, isCancelled: false)
        #expect(free.kind == "resume")
        #expect(try free.result.get().isCreate)
        #expect(box.with { ($0.creating, $0.waiters.count) } == (1, 0))
        _ = box.with { $0.shutdown() }
        let shutDown = await box.enqueueOnce(id: 3, isCancelled: false)
        #expect(shutDown.kind == "shutDown")
    }

    @Test(.timeLimit(.minutes(1))) func cancelledCreator_leavesConnectionForHeadWaiterOrIdle() async throws {
        let box = MachineBox(capacity: 1)
        _ = box.with { $0.checkout(nil, now: box.now) }
        let waiter = await box.queueWaiters([9])[0]
        guard case .keptForOthers(let woken) = box.with({ $0.creationSucceeded(4, stamp: nil, now: box.now, isCancelled: true) }) else {
            Issue.record("expected a hand-off"); return
        }
        deliver(woken)
        #expect(try await waiter.value.connection == 4)
        #expect(box.with { ($0.open, $0.held, $0.idle.count) } == (1, 1, 0))

        var machine = Machine(capacity: 1)
        _ = machine.checkout(nil, now: box.now)
        guard case .keptForOthers(let none) = machine.creationSucceeded(5, stamp: nil, now: box.now, isCancelled: true),
              none.isEmpty else {
            Issue.record("expected the connection to stay idle"); return
        }
        #expect(machine.idle.map(\.connection) == [5] && machine.held == 0)
    }

    @Test(.timeLimit(.minutes(1))) func startCreation_checksShutdownAndCancellation() async throws {
        var machine = Machine(capacity: 1)
        let now = ContinuousClock.now
        _ = machine.checkout(nil, now: now)
        let result10 = machine.startCreation(isCancelled: false, now: now).proceeds
        #expect(result10)
        guard case .cancelled(let none) = machine.startCreation(isCancelled: true, now: now), none.isEmpty else {
            Issue.record("expected .cancelled"); return
        }
        #expect(machine.creating == 0 && machine.available == 1)

        let box = MachineBox(capacity: 1)
        _ = box.with { $0.checkout(nil, now: box.now) }
        let waiter = await box.queueWaiters([1])[0]
        guard case .cancelled(let next) = box.with({ $0.startCreation(isCancelled: true, now: box.now) }), next.count == 1 else {
            Issue.record("expected the right to pass to the waiter"); return
        }
        deliver(next)
        #expect(try await waiter.value.isCreate)
        _ = box.with { $0.shutdown() }
        guard case .shutDown = box.with({ $0.startCreation(isCancelled: false, now: box.now) }) else {
            Issue.record("expected .shutDown"); return
        }
        #expect(box.with { $0.creating } == 0)
    }

    @Test(.timeLimit(.minutes(1))) func shutdown_failsWaiters_setsIdleAside_andRevokesWhatIsStillLeased() async throws {
        let box = MachineBox(capacity: 3)
        let leases = (1...3).compactMap { box.createLeased($0) }
        try #require(leases.count == 3)
        let first = await box.queueWaiters([1])[0]
        deliver(wakes(box.with { $0.release(slot: leases[0].slot, lease: leases[0].id, now: box.now) }))
        guard case .connection(let handed) = try await first.value else { Issue.record("expected a hand-off"); return }
        let second = await box.queueWaiters([2])[0]
        let action = try #require(box.with { $0.shutdown() })
        #expect(box.with { $0.shutdown() } == nil)
        #expect(action.fail.count == 1)
        for continuation in action.fail { continuation.resume(throwing: FuturelockError.poolShutdown(pool: "m")) }
        await #expect(throws: FuturelockError.poolShutdown(pool: "m")) { try await second.value }
        guard case .shutDown = box.with({ $0.checkout(nil, now: box.now) }) else { Issue.record("expected .shutDown"); return }
        #expect(box.with { $0.tryCheckout(nil, now: box.now) } == nil)
        #expect(box.with { $0.available } == 0)

        // Leases returned after shutdown are set aside to be closed; one still out when the grace
        // period ends is revoked, and its later return is ignored.
        _ = box.with { $0.release(slot: handed.slot, lease: handed.id, now: box.now) }
        _ = box.with { $0.release(slot: leases[1].slot, lease: leases[1].id, now: box.now) }
        let toClose = box.with { $0.takeToClose() }
        #expect(toClose.sorted() == [1, 2])
        let revoked = box.with { $0.revokeLeases() }
        #expect(revoked == [3])
        guard case .revoked = box.with({ $0.release(slot: leases[2].slot, lease: leases[2].id, now: box.now) }) else {
            Issue.record("a revoked lease's return must be ignored"); return
        }
        #expect(!box.with { $0.isDrained })
        for _ in 0..<3 { _ = box.with { $0.closeFinished(now: box.now) } }
        #expect(box.with { ($0.open, $0.closing, $0.creating, $0.isDrained) } == (0, 0, 0, true))
        #expect(box.with { $0.statistics.leasesRevoked } == 1)
    }

    @Test func shutdown_closesLateCreations() {
        var machine = Machine(capacity: 2)
        let now = ContinuousClock.now
        _ = machine.checkout(nil, now: now)
        _ = machine.startCreation(isCancelled: false, now: now)
        _ = machine.shutdown()
        #expect(!machine.isDrained)
        guard case .close(2) = machine.creationSucceeded(2, stamp: nil, now: now, isCancelled: false) else {
            Issue.record("a creation that ends after shutdown must be closed"); return
        }
        _ = machine.closeFinished(now: now)
        #expect(machine.isDrained)
    }
}

private extension Machine.CreationStartAction {
    var proceeds: Bool { if case .proceed = self { return true } else { return false } }
}
