import Synchronization
import Testing
@testable import Futurelock

// MARK: - Test doubles

/// A connection the tests can inspect: who uses it right now, and how often it was closed.
private final class TestConnection: Sendable, CustomStringConvertible {
    let id: Int
    let inUse = Atomic<Bool>(false)
    let closeCount = Atomic<Int>(0)
    init(id: Int) { self.id = id }
    var isClosed: Bool { closeCount.load(ordering: .acquiring) > 0 }
    var description: String { "conn#\(id)" }
}

private struct FactoryError: Error, Equatable {
    let call: Int
}

/// A factory driven by the test: call `n` (0-based) fails when `n` is in `failing`, and waits for
/// `gates[n]` first when there is one. It counts connections made and closed, and the most that
/// were alive at once (counting factory calls in flight, as the pool's capacity does).
private final class ScriptedFactory: Sendable {
    private struct State {
        var calls = 0
        var failing: Set<Int> = []
        var gates: [Int: Gate] = [:]
        var made: [TestConnection] = []
    }
    private let state: Lock<State>
    let alive = Counter()
    let maxAlive = Counter()
    let closed = Counter()
    let doubleCloses = Counter()

    init(failing: Set<Int> = [], gates: [Int: Gate] = [:]) {
        state = Lock(State(failing: failing, gates: gates))
    }

    var calls: Int { state.withLock { $0.calls } }
    var made: [TestConnection] { state.withLock { $0.made } }

    func make() async throws -> TestConnection {
        maxAlive.raise(to: alive.increment())
        let (call, gate, fails) = state.withLock { state -> (Int, Gate?, Bool) in
            defer { state.calls += 1 }
            return (state.calls, state.gates[state.calls], state.failing.contains(state.calls))
        }
        if let gate { await gate.wait() }
        if fails {
            alive.decrement()
            throw FactoryError(call: call)
        }
        let connection = TestConnection(id: call)
        state.withLock { $0.made.append(connection) }
        return connection
    }

    func close(_ connection: TestConnection) async {
        if connection.closeCount.wrappingAdd(1, ordering: .acquiringAndReleasing).oldValue > 0 {
            doubleCloses.increment()
        }
        alive.decrement()
        closed.increment()
    }

    /// A pool over this factory. No back-off between failed attempts unless asked for: these tests
    /// are about who gets what, not about pacing (that has tests of its own).
    func pool(name: String = "pool", capacity: Int, ledger: Ledger,
              configuration: ConnectionPool<TestConnection>.Configuration = .immediateRetry) throws -> ConnectionPool<TestConnection> {
        try ConnectionPool(name: name, capacity: capacity, configuration: configuration, ledger: ledger,
                           factory: { try await self.make() }, close: { await self.close($0) })
    }
}

private extension ConnectionPool.Configuration {
    static var immediateRetry: Self {
        var configuration = Self()
        configuration.backoff = .init(initial: .zero, maximum: .zero)
        return configuration
    }
}

// MARK: - Tests

@Suite("ConnectionPool")
struct ConnectionPoolTests {
    let ledger = Ledger(configuration: .init(eventHistoryPerResource: 256))

    // MARK: the pool

    @Test func init_whenCapacityNotPositive_throwsInvalidCapacity() {
        #expect(throws: FuturelockError.invalidCapacity(resource: "p", value: 0)) {
            try ConnectionPool<Int>(name: "p", capacity: 0, ledger: ledger, factory: { 1 })
        }
        #expect(throws: FuturelockError.invalidCapacity(resource: "p", value: -1)) {
            try ConnectionPool<Int>(name: "p", capacity: -1, ledger: ledger, factory: { 1 })
        }
    }

    @Test(.timeLimit(.minutes(1))) func checkout_createsLazilyAndReusesIdle() async throws {
        let factory = ScriptedFactory()
        let pool = try factory.pool(capacity: 2, ledger: ledger)
        #expect(factory.calls == 0 && pool.openCount == 0)
        let a = try await pool.checkout()
        let b = try await pool.checkout()
        #expect(factory.calls == 2 && pool.openCount == 2 && pool.leasedCount == 2)
        #expect(a.connection !== b.connection)
        #expect(pool.tryCheckout() == nil)
        a.release()
        #expect(pool.idleCount == 1)
        let c = try await pool.checkout()
        #expect(c.connection === a.connection)
        #expect(factory.calls == 2)
        b.release()
        c.release()
        #expect(pool.idleCount == 2 && pool.leasedCount == 0)
        #expect(ledger.problems.isEmpty)
    }

    @Test(.timeLimit(.minutes(1))) func tryCheckout_takesIdleOnly() async throws {
        let factory = ScriptedFactory()
        let pool = try factory.pool(capacity: 1, ledger: ledger)
        #expect(pool.tryCheckout() == nil)
        #expect(factory.calls == 0)
        let lease = try await pool.checkout()
        lease.release()
        let again = try #require(pool.tryCheckout())
        #expect(again.connection === lease.connection)
        again.release()
    }

    @Test(.timeLimit(.minutes(1))) func release_whenWaitersQueue_handsOffInFIFOOrder() async throws {
        let factory = ScriptedFactory()
        let pool = try factory.pool(capacity: 1, ledger: ledger)
        let first = try await pool.checkout()
        let order = Locked<[Int]>([])
        var tasks: [Task<Void, any Error>] = []
        for index in 0..<8 {
            tasks.append(Task {
                let lease = try await pool.checkout()
                order.withLock { $0.append(index) }
                lease.release()
            })
            await eventually { pool.waitingCount == index + 1 }
        }
        first.release()
        for task in tasks { try await task.value }
        #expect(order.value == Array(0..<8))
        #expect(factory.calls == 1)
        #expect(pool.idleCount == 1)
    }

    @Test(.timeLimit(.minutes(1))) func release_whenWaiterQueued_newcomerCannotBarge() async throws {
        let factory = ScriptedFactory()
        let pool = try factory.pool(capacity: 1, ledger: ledger)
        let executor = ManualExecutor()
        let held = try await pool.checkout()
        let waiter = Task(executorPreference: executor) { try await pool.checkout() }
        executor.drain()
        #expect(pool.waitingCount == 1)
        held.release()
        // The connection belongs to the waiter now, although it has not run yet.
        #expect(pool.tryCheckout() == nil)
        #expect(pool.idleCount == 0 && pool.leasedCount == 1)
        executor.drain()
        let lease = try await waiter.value
        #expect(lease.connection === held.connection)
        lease.release()
    }

    @Test(.timeLimit(.minutes(1))) func factoryError_reachesTheWaiterThatNeededIt_andCapacityIsKept() async throws {
        let gate = Gate()
        let factory = ScriptedFactory(failing: [0, 1], gates: [0: gate])
        let pool = try factory.pool(capacity: 1, ledger: ledger)
        // Call 0 (the creator) is held at the gate, then fails; call 1 (first waiter) fails;
        // call 2 (second waiter) succeeds.
        let creator = Task { try await pool.checkout() }
        await eventually { factory.calls == 1 }
        let firstWaiter = Task { try await pool.checkout() }
        await eventually { pool.waitingCount == 1 }
        let secondWaiter = Task { try await pool.checkout() }
        await eventually { pool.waitingCount == 2 }
        gate.open()
        await #expect(throws: FactoryError(call: 0)) { try await creator.value }
        await #expect(throws: FactoryError(call: 1)) { try await firstWaiter.value }
        let lease = try await secondWaiter.value
        #expect(lease.connection.id == 2)
        #expect(pool.openCount == 1 && pool.creatingCount == 0)
        lease.release()
    }

    @Test(.timeLimit(.minutes(1))) func factoryErrors_neverShrinkThePool() async throws {
        let factory = ScriptedFactory(failing: Set(0..<10))
        let pool = try factory.pool(capacity: 3, ledger: ledger)
        for call in 0..<10 {
            await #expect(throws: FactoryError(call: call)) { try await pool.checkout() }
        }
        #expect(pool.openCount == 0 && pool.creatingCount == 0)
        let leases = try await withThrowingTaskGroup(of: ConnectionPool<TestConnection>.Lease.self) { group in
            for _ in 0..<3 { group.addTask { try await pool.checkout() } }
            var leases: [ConnectionPool<TestConnection>.Lease] = []
            for try await lease in group { leases.append(lease) }
            return leases
        }
        #expect(Set(leases.map(\.connection.id)) == [10, 11, 12])
        #expect(pool.openCount == 3)
        for lease in leases { lease.release() }
    }

    @Test(.timeLimit(.minutes(1))) func returnBroken_closesAndWaiterCreatesReplacement() async throws {
        let factory = ScriptedFactory()
        let pool = try factory.pool(capacity: 1, ledger: ledger)
        let lease = try await pool.checkout()
        let waiter = Task { try await pool.checkout() }
        await eventually { pool.waitingCount == 1 }
        lease.returnBroken()
        let replacement = try await waiter.value
        #expect(lease.connection.isClosed)
        #expect(replacement.connection !== lease.connection && !replacement.connection.isClosed)
        #expect(factory.calls == 2 && factory.closed.value == 1)
        #expect(factory.maxAlive.value == 1)
        replacement.release()
        #expect(pool.openCount == 1 && pool.idleCount == 1)
    }

    @Test(.timeLimit(.minutes(1))) func returnBroken_withoutWaiters_isClosedByTheNextCheckoutThatNeedsItsUnit() async throws {
        let factory = ScriptedFactory()
        let pool = try factory.pool(capacity: 1, ledger: ledger)
        let lease = try await pool.checkout()
        lease.returnBroken()
        // No task of the pool's own closes it: it keeps its unit until someone who can wait does.
        #expect(pool.openCount == 1 && factory.closed.value == 0)
        let next = try await pool.checkout()
        #expect(lease.connection.isClosed && factory.closed.value == 1)
        #expect(next.connection.id == 1 && factory.maxAlive.value == 1)
        next.release()
    }

    @Test(.timeLimit(.minutes(1))) func returnBroken_withoutWaiters_isClosedByMaintenance() async throws {
        let factory = ScriptedFactory()
        let pool = try factory.pool(capacity: 1, ledger: ledger)
        let lease = try await pool.checkout()
        lease.returnBroken()
        await pool.maintain()
        #expect(lease.connection.isClosed && pool.openCount == 0 && factory.closed.value == 1)
    }

    @Test(.timeLimit(.minutes(1))) func shutdown_failsWaiters_rejectsLaterCheckouts_andWaitsForTheLeaseStillOut() async throws {
        let factory = ScriptedFactory()
        let pool = try factory.pool(name: "closing", capacity: 1, ledger: ledger)
        let held = try await pool.checkout()
        let waiters = (0..<3).map { _ in Task { try await pool.checkout() } }
        await eventually { pool.waitingCount == 3 }
        let shutdown = Task { await pool.shutdown(gracePeriod: .seconds(50)) }
        for waiter in waiters {
            await #expect(throws: FuturelockError.poolShutdown(pool: "closing")) { try await waiter.value }
        }
        await #expect(throws: FuturelockError.poolShutdown(pool: "closing")) { try await pool.checkout() }
        #expect(pool.tryCheckout() == nil)
        #expect(pool.waitingCount == 0 && pool.isShutdown)
        // The lease still out stays usable while the shutdown waits, and is closed when it comes back;
        // only then does the shutdown return.
        #expect(!held.connection.isClosed)
        held.release()
        await shutdown.value
        #expect(held.connection.isClosed && pool.openCount == 0)
        #expect(factory.closed.value == 1 && pool.statistics.leasesRevoked == 0)
    }

    @Test(.timeLimit(.minutes(1))) func shutdown_closesIdle_revokesLeasesPastTheGracePeriod_andIsIdempotent() async throws {
        let factory = ScriptedFactory()
        let pool = try factory.pool(capacity: 3, ledger: ledger)
        let a = try await pool.checkout()
        let b = try await pool.checkout()
        let c = try await pool.checkout()
        a.release()
        b.release()
        await pool.shutdown(gracePeriod: .milliseconds(20))
        // Returned only once everything it opened was closed: `c` was closed under its user.
        #expect(a.connection.isClosed && b.connection.isClosed && c.connection.isClosed)
        #expect(factory.closed.value == 3 && pool.openCount == 0 && pool.statistics.leasesRevoked == 1)
        await pool.shutdown()
        c.returnBroken()
        c.release()
        await pool.maintain()
        #expect(factory.closed.value == 3 && factory.doubleCloses.value == 0, "a revoked lease's return does nothing")
        let resource = try #require(ledger.snapshot().resources.first { $0.id == pool.id })
        #expect(resource.closed && resource.available == 0 && resource.held == 0)
    }

    @Test(.timeLimit(.minutes(1))) func shutdown_duringCreation_waitsForAndClosesTheNewConnection() async throws {
        let gate = Gate()
        let factory = ScriptedFactory(gates: [0: gate])
        let pool = try factory.pool(name: "late", capacity: 1, ledger: ledger)
        let creator = Task { try await pool.checkout() }
        await eventually { factory.calls == 1 }
        let shutdown = Task { await pool.shutdown(gracePeriod: .zero) }
        await eventually { pool.isShutdown }
        gate.open()
        await #expect(throws: FuturelockError.poolShutdown(pool: "late")) { try await creator.value }
        await shutdown.value
        #expect(factory.closed.value == 1 && pool.openCount == 0)
    }

    @Test(.timeLimit(.minutes(1))) func healthCheck_replacesAnIdleConnectionThatFailsIt() async throws {
        let factory = ScriptedFactory()
        let healthy = Locked(false)
        var configuration = ConnectionPool<TestConnection>.Configuration()
        configuration.healthCheckAfterIdle = .zero
        let pool = try ConnectionPool(name: "checked", capacity: 1, configuration: configuration, ledger: ledger,
                                      factory: { try await factory.make() }, close: { await factory.close($0) },
                                      healthCheck: { _ in healthy.value })
        let first = try await pool.checkout()
        first.release()
        // Idle now: the check runs before it is handed out, fails, and a new connection replaces it.
        let second = try await pool.checkout()
        #expect(second.connection.id == 1 && first.connection.isClosed)
        #expect(pool.statistics.failedHealthChecks == 1 && factory.maxAlive.value == 1)
        second.release()
        healthy.withLock { $0 = true }
        let third = try await pool.checkout()
        #expect(third.connection.id == 1 && pool.statistics.failedHealthChecks == 1)
        third.release()
    }

    @Test(.timeLimit(.minutes(1))) func run_warmsUpTheMinimum_andClosesIdleConnectionsBeyondIt() async throws {
        let factory = ScriptedFactory()
        var configuration = ConnectionPool<TestConnection>.Configuration()
        configuration.minimumConnections = 2
        configuration.idleTimeout = .milliseconds(30)
        let pool = try ConnectionPool(name: "warm", capacity: 4, configuration: configuration, ledger: ledger,
                                      factory: { try await factory.make() }, close: { await factory.close($0) })
        await pool.maintain()
        #expect(pool.openCount == 2 && pool.idleCount == 2 && factory.calls == 2)
        let leases = [try await pool.checkout(), try await pool.checkout(), try await pool.checkout()]
        #expect(pool.openCount == 3)
        for lease in leases { lease.release() }
        // After the idle timeout, maintenance closes down to the minimum and no further.
        while pool.openCount > 2 {
            await pool.maintain()
            try await Task.sleep(for: .milliseconds(5))
        }
        await pool.maintain()
        #expect(pool.openCount == 2 && factory.closed.value == 1)
        await pool.shutdown()
        #expect(pool.openCount == 0 && factory.closed.value == 3)
    }

    /// A checkout sleeping out a long back-off does not hold a shutdown up: it gives its right back.
    @Test(.timeLimit(.minutes(1))) func shutdown_wakesACheckoutSleepingOutTheBackoff() async throws {
        let factory = ScriptedFactory(failing: [0])
        var configuration = ConnectionPool<TestConnection>.Configuration()
        configuration.backoff = .init(initial: .seconds(600), maximum: .seconds(600), jitter: 0)
        let pool = try factory.pool(name: "slow-retry", capacity: 1, ledger: ledger, configuration: configuration)
        await #expect(throws: FactoryError(call: 0)) { try await pool.checkout() }
        let sleeper = Task { try await pool.checkout() }   // gets the right, then sleeps 10 minutes
        await eventually { pool.creatingCount == 1 }
        await pool.shutdown(gracePeriod: .zero)
        await #expect(throws: FuturelockError.poolShutdown(pool: "slow-retry")) { try await sleeper.value }
        #expect(factory.calls == 1 && pool.openCount == 0 && pool.creatingCount == 0)
    }

    /// The health check runs in the checkout's task; a shutdown that revokes the connection meanwhile
    /// wins: the checkout throws instead of returning a closed connection.
    @Test(.timeLimit(.minutes(1))) func healthCheck_spanningARevocation_neverHandsOutTheClosedConnection() async throws {
        let factory = ScriptedFactory()
        let gate = Gate()
        let checking = Locked(false)
        var configuration = ConnectionPool<TestConnection>.Configuration()
        configuration.healthCheckAfterIdle = .zero
        let pool = try ConnectionPool(name: "checked", capacity: 1, configuration: configuration, ledger: ledger,
                                      factory: { try await factory.make() }, close: { await factory.close($0) },
                                      healthCheck: { _ in checking.withLock { $0 = true }; await gate.wait(); return true })
        try await pool.checkout().release()
        let checkout = Task { try await pool.checkout() }
        await eventually { checking.value }
        await pool.shutdown(gracePeriod: .zero)
        #expect(factory.closed.value == 1 && pool.statistics.leasesRevoked == 1)
        gate.open()
        await #expect(throws: FuturelockError.poolShutdown(pool: "checked")) { try await checkout.value }
        #expect(pool.statistics.failedHealthChecks == 0)
    }

    /// `checkout(timeout:)` (and `tryCheckout`) never hand out an idle connection that needs a check
    /// without running it.
    @Test(.timeLimit(.minutes(1))) func timedCheckout_runsTheHealthCheckToo() async throws {
        let factory = ScriptedFactory()
        var configuration = ConnectionPool<TestConnection>.Configuration()
        configuration.healthCheckAfterIdle = .zero
        let pool = try ConnectionPool(name: "checked", capacity: 1, configuration: configuration, ledger: ledger,
                                      factory: { try await factory.make() }, close: { await factory.close($0) },
                                      healthCheck: { _ in false })
        try await pool.checkout().release()
        #expect(pool.tryCheckout() == nil, "the idle connection needs a check, which tryCheckout cannot run")
        let lease = try await pool.checkout(timeout: .seconds(30))
        #expect(lease.connection.id == 1 && pool.statistics.failedHealthChecks == 1)
        #expect(factory.closed.value == 1, "the failed connection was closed by the checkout that found it")
        lease.release()
    }

    @Test func invalidConfiguration_isATypedErrorNamingTheField() {
        var configuration = ConnectionPool<Int>.Configuration()
        configuration.minimumConnections = 5
        #expect(throws: FuturelockError.self) {
            try ConnectionPool<Int>(name: "bad", capacity: 4, configuration: configuration, ledger: ledger, factory: { 1 })
        }
        do {
            _ = try ConnectionPool<Int>(name: "bad", capacity: 4, configuration: configuration, ledger: ledger, factory: { 1 })
        } catch {
            #expect(error.description.contains("minimumConnections"))
        }
        configuration = .init()
        configuration.maximumConcurrentConnectionAttempts = 0
        #expect(throws: FuturelockError.self) {
            try ConnectionPool<Int>(name: "bad", capacity: 4, configuration: configuration, ledger: ledger, factory: { 1 })
        }
        configuration = .init()
        configuration.backoff.jitter = 2
        #expect(throws: FuturelockError.self) {
            try ConnectionPool<Int>(name: "bad", capacity: 4, configuration: configuration, ledger: ledger, factory: { 1 })
        }
    }

    @Test(.timeLimit(.minutes(1))) func release_twice_isReportedAndIgnored() async throws {
        let factory = ScriptedFactory()
        let pool = try factory.pool(name: "double", capacity: 2, ledger: ledger)
        let lease = try await pool.checkout()
        lease.release()
        lease.release()
        lease.returnBroken()
        #expect(throws: FuturelockError.alreadyReleased(resource: "double")) { try lease.releaseChecked() }
        #expect(throws: FuturelockError.alreadyReleased(resource: "double")) { try lease.returnBrokenChecked() }
        #expect(pool.idleCount == 1 && pool.openCount == 1 && factory.closed.value == 0)
        let problems = ledger.problems
        #expect(problems.count == 4)
        #expect(problems.allSatisfy { $0.kind == .doubleRelease && $0.holdingKind == .connection })
        #expect(problems.first?.releasedAt?.fileID == "FuturelockTests/ConnectionPoolTests.swift")
        let checked = try await pool.checkout()
        try checked.releaseChecked()
        #expect(ledger.problems.count == 4)
    }

    @Test(.timeLimit(.minutes(1))) func drop_withoutRelease_releasesAndReportsCheckoutSite() async throws {
        let factory = ScriptedFactory()
        let pool = try factory.pool(name: "dropped", capacity: 1, ledger: ledger)
        let line: UInt = #line + 1
        var lease: ConnectionPool<TestConnection>.Lease? = try await pool.checkout()
        let waiter = Task { try await pool.checkout() }
        await eventually { pool.waitingCount == 1 }
        #expect(lease != nil)
        lease = nil
        let handedOn = try await waiter.value
        #expect(handedOn.connection.id == 0)
        let problem = try #require(ledger.problems.first)
        #expect(problem.kind == .droppedWithoutRelease && problem.holdingKind == .connection)
        #expect(problem.acquiredAt?.fileID == "FuturelockTests/ConnectionPoolTests.swift")
        #expect(problem.acquiredAt?.line == line)
        handedOn.release()
    }

    @Test(.timeLimit(.minutes(1))) func cancel_whileQueued_removesWaiterAndThrows() async throws {
        let factory = ScriptedFactory()
        let pool = try factory.pool(capacity: 1, ledger: ledger)
        let held = try await pool.checkout()
        let waiter = Task { try await pool.checkout() }
        await eventually { pool.waitingCount == 1 }
        waiter.cancel()
        await #expect(throws: CancellationError.self) { try await waiter.value }
        #expect(pool.waitingCount == 0)
        #expect(ledger.snapshot().waits.isEmpty)
        held.release()
        #expect(pool.idleCount == 1 && pool.leasedCount == 0)
    }

    @Test(.timeLimit(.minutes(1))) func cancel_afterHandOff_passesConnectionToNextWaiter() async throws {
        let factory = ScriptedFactory()
        let pool = try factory.pool(capacity: 1, ledger: ledger)
        let executor = ManualExecutor()
        let held = try await pool.checkout()
        let first = Task(executorPreference: executor) { try await pool.checkout() }
        executor.drain()
        #expect(pool.waitingCount == 1)
        let second = Task { try await pool.checkout() }
        await eventually { pool.waitingCount == 2 }
        held.release()  // handed to `first`, which has not run yet
        first.cancel()
        executor.drain()
        await #expect(throws: CancellationError.self) { try await first.value }
        let lease = try await second.value
        #expect(lease.connection === held.connection)
        #expect(factory.calls == 1 && pool.leasedCount == 1 && pool.idleCount == 0)
        lease.release()
        #expect(ledger.problems.isEmpty)
    }

    @Test(.timeLimit(.minutes(1))) func cancel_afterHandOff_withoutOtherWaiters_leavesConnectionIdle() async throws {
        let factory = ScriptedFactory()
        let pool = try factory.pool(capacity: 1, ledger: ledger)
        let executor = ManualExecutor()
        let held = try await pool.checkout()
        let waiter = Task(executorPreference: executor) { try await pool.checkout() }
        executor.drain()
        held.release()
        waiter.cancel()
        executor.drain()
        await #expect(throws: CancellationError.self) { try await waiter.value }
        #expect(pool.idleCount == 1 && pool.leasedCount == 0)
    }

    @Test(.timeLimit(.minutes(1))) func cancel_afterCreationRightHandedOver_passesRightOn() async throws {
        let factory = ScriptedFactory()
        let pool = try factory.pool(capacity: 1, ledger: ledger)
        let executor = ManualExecutor()
        let held = try await pool.checkout()
        let first = Task(executorPreference: executor) { try await pool.checkout() }
        executor.drain()
        let second = Task { try await pool.checkout() }
        await eventually { pool.waitingCount == 2 }
        held.returnBroken()  // `first` gets the broken connection's unit: close it, then create
        await eventually { pool.waitingCount == 1 }
        #expect(pool.openCount == 1 && pool.creatingCount == 0, "the broken one keeps its unit until closed")
        first.cancel()
        executor.drain()
        await #expect(throws: CancellationError.self) { try await first.value }
        let lease = try await second.value
        // `first` never called the factory: call 0 made `held`, call 1 made `second`'s connection.
        #expect(factory.calls == 2 && lease.connection.id == 1)
        #expect(pool.openCount == 1 && pool.creatingCount == 0)
        lease.release()
    }

    @Test(.timeLimit(.minutes(1))) func cancel_duringOwnFactoryCall_keepsConnectionInPool() async throws {
        let gate = Gate()
        let factory = ScriptedFactory(gates: [0: gate])
        let pool = try factory.pool(capacity: 1, ledger: ledger)
        let creator = Task { try await pool.checkout() }
        await eventually { factory.calls == 1 }
        let waiter = Task { try await pool.checkout() }
        await eventually { pool.waitingCount == 1 }
        creator.cancel()
        gate.open()
        await #expect(throws: CancellationError.self) { try await creator.value }
        let lease = try await waiter.value
        #expect(lease.connection.id == 0 && factory.calls == 1)
        lease.release()
        #expect(pool.idleCount == 1 && pool.openCount == 1)
    }

    @Test(.timeLimit(.minutes(1))) func checkoutTimeout_whenHeld_timesOutAndLeavesNoWaiter() async throws {
        let factory = ScriptedFactory()
        let pool = try factory.pool(name: "slow", capacity: 1, ledger: ledger)
        await #expect(throws: FuturelockError.invalidTimeout(resource: "slow", timeout: .seconds(-1))) {
            try await pool.checkout(timeout: .seconds(-1))
        }
        let held = try await pool.checkout(timeout: .seconds(5))
        await #expect(throws: FuturelockError.timedOut(resource: "slow", after: .milliseconds(20))) {
            try await pool.checkout(timeout: .milliseconds(20))
        }
        #expect(pool.waitingCount == 0)
        held.release()
        let again = try await pool.checkout(timeout: .zero)
        #expect(again.connection === held.connection)
        again.release()
    }

    /// The timeout is an upper bound: a factory that fails ends the wait with its own error at once.
    /// (The timeout here is an hour; the test's one-minute limit fails it if the wait sits out the timer.)
    @Test(.timeLimit(.minutes(1))) func checkoutTimeout_whenTheFactoryFails_throwsItsErrorWithoutWaitingForTheTimer() async throws {
        let factory = ScriptedFactory(failing: [0])
        let pool = try factory.pool(capacity: 1, ledger: ledger)
        await #expect(throws: FactoryError(call: 0)) {
            try await pool.checkout(timeout: .seconds(3600))
        }
        #expect(pool.openCount == 0 && pool.waitingCount == 0)
        let lease = try await pool.checkout(timeout: .seconds(3600))
        #expect(lease.connection.id == 1)
        lease.release()
    }

    @Test(.timeLimit(.minutes(1))) func checkoutTimeout_whenGrantedInTime_isClaimedByCaller() async throws {
        let factory = ScriptedFactory()
        let pool = try factory.pool(capacity: 1, ledger: ledger)
        let held = try await pool.checkout()
        let waiter = Task { try await pool.checkout(timeout: .seconds(30)) }
        await eventually { pool.waitingCount == 1 }
        held.release()
        let lease = try await waiter.value
        let holding = try #require(ledger.snapshot().holdings.first)
        // The race's child task checked it out; the caller's task owns it now.
        #expect(holding.acquiredBy != nil)
        lease.release()
    }

    @Test(.timeLimit(.minutes(1))) func withConnection_releasesOnReturnAndOnError() async throws {
        struct LogicError: Error {}
        let factory = ScriptedFactory()
        let pool = try factory.pool(capacity: 1, ledger: ledger)
        let id = try await pool.withConnection { $0.id }
        #expect(id == 0 && pool.idleCount == 1)
        await #expect(throws: LogicError.self) {
            try await pool.withConnection { _ in throw LogicError() }
        }
        #expect(pool.idleCount == 1 && factory.closed.value == 0)
        #expect(ledger.problems.isEmpty)
    }

    @Test(.timeLimit(.minutes(1))) func withConnection_whenBodySignalsBroken_closesAndRethrowsCause() async throws {
        struct ResetByPeer: Error {}
        let factory = ScriptedFactory()
        let pool = try factory.pool(capacity: 1, ledger: ledger)
        await #expect(throws: ResetByPeer.self) {
            try await pool.withConnection { _ in throw BrokenConnection(ResetByPeer()) }
        }
        await eventually { pool.openCount == 0 }
        #expect(factory.closed.value == 1)
        let next = try await pool.withConnection { $0.id }
        #expect(next == 1)
    }

    @Test(.timeLimit(.minutes(1))) func snapshot_recordsPoolLeasesAndQueuedWaiters() async throws {
        let factory = ScriptedFactory()
        let pool = try factory.pool(name: "recorded", capacity: 2, ledger: ledger)
        let line: UInt = #line + 1
        let a = try await pool.checkout()
        let b = try await pool.checkout()
        b.release()
        let c = try await pool.checkout()
        let waiters = (0..<3).map { _ in Task { try await pool.checkout() } }
        await eventually { pool.waitingCount == 3 }
        let snapshot = ledger.snapshot()
        let resource = try #require(snapshot.resources.first { $0.name == "recorded" })
        #expect(resource.kind == .pool && resource.capacity == 2 && resource.available == 0)
        #expect(resource.held == 2 && resource.waiting == 3 && !resource.closed)
        #expect(snapshot.holdings.count == 2)
        #expect(snapshot.holdings.allSatisfy { $0.kind == .connection && $0.resource == pool.id })
        #expect(snapshot.holdings.contains { $0.site.line == line })
        #expect(snapshot.waits.allSatisfy { $0.kind == .checkout })
        #expect(snapshot.waits.map(\.position).sorted() == [0, 1, 2])
        #expect(Set(snapshot.waits.map(\.waiterTask)).count == 3)
        let kinds = Set(snapshot.events.map(\.kind))
        #expect(kinds.isSuperset(of: [.grant, .release, .waitStart]))
        a.release()
        c.release()
        for waiter in waiters { try await waiter.value.release() }
        let after = ledger.snapshot()
        #expect(after.holdings.isEmpty && after.waits.isEmpty)
        let idle = try #require(after.resources.first { $0.name == "recorded" })
        #expect(idle.available == 2 && idle.held == 0 && idle.waiting == 0)
        #expect(after.events.contains { $0.kind == .handoff })
    }

    @Test(.timeLimit(.minutes(1))) func connection_readFromAnotherTask_recordsTransfer() async throws {
        let factory = ScriptedFactory()
        let pool = try factory.pool(capacity: 1, ledger: ledger)
        let lease = try await Task { try await pool.checkout() }.value
        let before = try #require(ledger.snapshot().holdings.first)
        #expect(before.holderTask != TaskID.current && before.acquiredBy == nil)
        _ = lease.connection
        let after = try #require(ledger.snapshot().holdings.first)
        #expect(after.holderTask == TaskID.current)
        #expect(after.acquiredBy == before.holderTask)
        #expect(ledger.snapshot().events.contains { $0.kind == .transfer })
        lease.release()
    }

    @Test(.timeLimit(.minutes(1))) func disabledLedger_recordsNothing() async throws {
        let factory = ScriptedFactory()
        let pool = try factory.pool(name: "unrecorded", capacity: 1, ledger: .disabled)
        let lease = try await pool.checkout()
        #expect(pool.leasedCount == 1)
        #expect(!Ledger.disabled.snapshot().resources.contains { $0.name == "unrecorded" })
        #expect(Ledger.disabled.snapshot().holdings.isEmpty)
        lease.release()
        #expect(pool.idleCount == 1 && pool.leasedCount == 0)
    }

    // MARK: frontend (pool loop fed by a request channel)

    @Test(.timeLimit(.minutes(1))) func frontend_checkout_isServedByTheLoopAndClaimedByTheClient() async throws {
        let factory = ScriptedFactory()
        let pool = try factory.pool(name: "fronted", capacity: 2, ledger: ledger)
        let frontend = try PoolFrontend(pool: pool)
        let loop = Task { await frontend.run() }
        let line: UInt = #line + 1
        let lease = try await frontend.checkout()
        let holding = try #require(ledger.snapshot().holdings.first { $0.resource == pool.id })
        #expect(holding.holderTask == TaskID.current)
        #expect(holding.acquiredBy != nil && holding.acquiredBy != TaskID.current)
        #expect(holding.site.line == line)
        lease.release()
        let again = try await frontend.checkout()
        #expect(again.connection === lease.connection)
        again.release()
        await frontend.shutdown()
        await loop.value
        #expect(factory.closed.value == 1)
        #expect(ledger.problems.isEmpty)
    }

    @Test(.timeLimit(.minutes(1))) func frontend_manyClients_throughCapacityOneChannel_areAllServed() async throws {
        let factory = ScriptedFactory()
        let pool = try factory.pool(capacity: 3, ledger: ledger)
        let frontend = try PoolFrontend(pool: pool)
        let loop = Task { await frontend.run() }
        let overlaps = Counter()
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<300 {
                group.addTask {
                    let lease = try await frontend.checkout()
                    if lease.connection.inUse.exchange(true, ordering: .acquiringAndReleasing) { overlaps.increment() }
                    await Task.yield()
                    lease.connection.inUse.store(false, ordering: .releasing)
                    lease.release()
                }
            }
            try await group.waitForAll()
        }
        #expect(overlaps.value == 0)
        #expect(factory.calls <= 3 && pool.leasedCount == 0)
        await frontend.shutdown()
        await loop.value
        #expect(factory.closed.value == factory.made.count)
    }

    @Test(.timeLimit(.minutes(1))) func frontend_clientCancelledAfterRequestTaken_leaseGoesBackToPool() async throws {
        let factory = ScriptedFactory()
        let pool = try factory.pool(capacity: 1, ledger: ledger)
        let frontend = try PoolFrontend(pool: pool)
        let loop = Task { await frontend.run() }
        let held = try await pool.checkout()
        let client = Task { try await frontend.checkout() }
        await eventually { pool.waitingCount == 1 }  // the loop's checkout for the client queues
        client.cancel()
        await #expect(throws: CancellationError.self) { try await client.value }
        held.release()
        await eventually { pool.idleCount == 1 }
        #expect(pool.leasedCount == 0)
        await frontend.shutdown()
        await loop.value
        #expect(ledger.problems.isEmpty)
    }

    @Test(.timeLimit(.minutes(1))) func frontend_shutdown_failsWaitingAndLaterClients() async throws {
        let factory = ScriptedFactory()
        let pool = try factory.pool(name: "gone", capacity: 1, ledger: ledger)
        let frontend = try PoolFrontend(pool: pool)
        let loop = Task { await frontend.run() }
        let held = try await frontend.checkout()
        let client = Task { try await frontend.checkout() }
        await eventually { pool.waitingCount == 1 }
        let shutdown = Task { await frontend.shutdown() }
        await #expect(throws: FuturelockError.poolShutdown(pool: "gone")) { try await client.value }
        await #expect(throws: FuturelockError.poolShutdown(pool: "gone")) { try await frontend.checkout() }
        await loop.value
        held.release()
        await shutdown.value
        #expect(pool.openCount == 0 && held.connection.isClosed)
    }

    @Test(.timeLimit(.minutes(1))) func frontend_cancelledLoop_closesChannelSoNobodyWaitsForEver() async throws {
        let factory = ScriptedFactory()
        let pool = try factory.pool(name: "orphan", capacity: 1, ledger: ledger)
        let frontend = try PoolFrontend(pool: pool)
        let loop = Task { await frontend.run() }
        await eventually { frontend.requests.waitingReceiverCount == 1 }
        loop.cancel()
        await loop.value
        await #expect(throws: FuturelockError.poolShutdown(pool: "orphan")) { try await frontend.checkout() }
    }

    @Test(.timeLimit(.minutes(1))) func frontend_reservedRequestSlot_blocksEveryClient_theIncidentShape() async throws {
        let factory = ScriptedFactory()
        let pool = try factory.pool(name: "incident", capacity: 4, ledger: ledger)
        let frontend = try PoolFrontend(pool: pool)
        let loop = Task { await frontend.run() }
        // The losing arm of a race reserved the only request slot and is no longer driven.
        let permit = try await frontend.requests.reserve()
        let innocent = Task { try await frontend.checkout() }
        await eventually { frontend.requests.waitingSenderCount == 1 }
        // The same task asks again: it queues behind its own permit (bounded here by a timeout).
        await #expect(throws: FuturelockError.timedOut(resource: "incident", after: .milliseconds(50))) {
            try await frontend.checkout(timeout: .milliseconds(50))
        }
        let snapshot = ledger.snapshot()
        let slot = try #require(snapshot.holdings.first { $0.resource == frontend.requests.id })
        #expect(slot.kind == .sendSlot && slot.holderTask == TaskID.current)
        #expect(snapshot.waits.contains { $0.resource == frontend.requests.id && $0.kind == .send })
        #expect(pool.leasedCount == 0 && pool.waitingCount == 0)  // the pool itself is idle
        // Using the permit unblocks everyone.
        let mine = try await frontend.checkout(using: permit)
        let theirs = try await innocent.value
        mine.release()
        theirs.release()
        await frontend.shutdown()
        await loop.value
    }

    // MARK: stress

    @Test(.timeLimit(.minutes(2))) func stress_randomCancellationAndFactoryFailures_losesAndDuplicatesNothing() async throws {
        let capacity = 4
        let factory = StressFactory(failureRate: 0.15)
        let pool = try ConnectionPool<TestConnection>(
            name: "stress", capacity: capacity, ledger: ledger,
            factory: { try await factory.make() }, close: { await factory.close($0) })
        let overlaps = Counter()
        let overCapacity = Counter()
        let leasedClosed = Counter()
        let completed = Counter()
        let cancelled = Counter()
        let failed = Counter()
        let timedOut = Counter()

        var tasks: [Task<Void, Never>] = []
        for index in 0..<4_000 {
            tasks.append(Task {
                for round in 0..<4 {
                    do {
                        let lease: ConnectionPool<TestConnection>.Lease
                        switch (index + round) % 5 {
                        case 0: lease = try await pool.checkout(timeout: .milliseconds(50))
                        case 1: guard let idle = pool.tryCheckout() else { continue }; lease = idle
                        default: lease = try await pool.checkout()
                        }
                        let connection = lease.connection
                        if connection.inUse.exchange(true, ordering: .acquiringAndReleasing) { overlaps.increment() }
                        if connection.isClosed { leasedClosed.increment() }
                        if factory.alive.value > capacity { overCapacity.increment() }
                        await Task.yield()
                        connection.inUse.store(false, ordering: .releasing)
                        if Int.random(in: 0..<10) == 0 { lease.returnBroken() } else { lease.release() }
                        completed.increment()
                    } catch is CancellationError {
                        cancelled.increment()
                    } catch is FactoryError {
                        failed.increment()
                    } catch {
                        timedOut.increment()  // nothing is held
                    }
                }
            })
            if index % 7 == 0, let victim = tasks.randomElement() { victim.cancel() }
        }
        for task in tasks { await task.value }

        #expect(pool.leasedCount == 0 && pool.waitingCount == 0 && pool.creatingCount == 0)
        await pool.shutdown()
        await eventually { pool.openCount == 0 }
        // Typical run: ~8,000 completed, ~1,500 cancelled, ~100 factory errors, ~2,500 timeouts.
        #expect(completed.value > 0 && cancelled.value > 0 && failed.value > 0 && timedOut.value >= 0)
        #expect(overlaps.value == 0, "a connection was leased to two tasks at once")
        #expect(leasedClosed.value == 0, "a closed connection was leased")
        #expect(overCapacity.value == 0 && factory.maxAlive.value <= capacity)
        #expect(factory.doubleCloses.value == 0)
        #expect(factory.made.count == factory.closed.value, "every connection made was closed exactly once")
        #expect(factory.made.allSatisfy { $0.closeCount.load(ordering: .relaxed) == 1 })
        #expect(factory.alive.value == 0)
        #expect(ledger.problems.isEmpty)
        let snapshot = ledger.snapshot()
        #expect(snapshot.holdings.isEmpty && snapshot.waits.isEmpty)
    }
}

/// The stress test's factory: fails at random, yields to let others interleave, and counts as the
/// scripted one does.
private final class StressFactory: Sendable {
    private let made_ = Lock<[TestConnection]>([])
    private let serial = Atomic<Int>(0)
    private let failureRate: Double
    let alive = Counter()
    let maxAlive = Counter()
    let closed = Counter()
    let doubleCloses = Counter()

    init(failureRate: Double) { self.failureRate = failureRate }

    var made: [TestConnection] { made_.withLock { $0 } }

    func make() async throws -> TestConnection {
        maxAlive.raise(to: alive.increment())
        await Task.yield()
        if Double.random(in: 0..<1) < failureRate {
            alive.decrement()
            throw FactoryError(call: -1)
        }
        let connection = TestConnection(id: serial.wrappingAdd(1, ordering: .relaxed).newValue)
        made_.withLock { $0.append(connection) }
        return connection
    }

    func close(_ connection: TestConnection) async {
        await Task.yield()
        if connection.closeCount.wrappingAdd(1, ordering: .acquiringAndReleasing).oldValue > 0 {
            doubleCloses.increment()
        }
        alive.decrement()
        closed.increment()
    }
}
