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
    private let state: Mutex<State>
    let alive = Counter()
    let maxAlive = Counter()
    let closed = Counter()
    let doubleCloses = Counter()

    init(failing: Set<Int> = [], gates: [Int: Gate] = [:]) {
        state = Mutex(State(failing: failing, gates: gates))
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

    func pool(name: String = "pool", capacity: Int, ledger: Ledger) throws -> ConnectionPool<TestConnection> {
        try ConnectionPool(name: name, capacity: capacity, ledger: ledger,
                           factory: { try await self.make() }, close: { await self.close($0) })
    }
}

// MARK: - State machine harness

private typealias Machine = ConnectionPool<Int>.StateMachine

/// A state machine under a lock, with helpers that queue real continuations as waiters.
private final class MachineBox: Sendable {
    let machine: Mutex<Machine>
    init(capacity: Int) { machine = Mutex(Machine(capacity: capacity)) }

    func with<R: Sendable>(_ body: (inout Machine) -> R) -> R { machine.withLock { body(&$0) } }

    /// Queues a waiter in a new task; the task ends with what the waiter is woken with.
    func waiter(id: UInt64) -> Task<Machine.Grant, any Error> {
        Task {
            try await withUnsafeThrowingContinuation { (continuation: Machine.Continuation) in
                switch self.with({ $0.enqueue(id: id, continuation, stamp: nil, isCancelled: false) }) {
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
                switch self.with({ $0.enqueue(id: id, continuation, stamp: nil, isCancelled: isCancelled) }) {
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
}

private extension Machine.Grant {
    var isCreate: Bool { if case .create = self { return true } else { return false } }
    var connection: Int? { if case .connection(let connection, _) = self { return connection } else { return nil } }
}

private func expectLeased(_ action: Machine.CheckoutAction, _ expected: Int,
                          sourceLocation: SourceLocation = #_sourceLocation) {
    guard case .leased(let connection, _) = action else {
        Issue.record("expected .leased(\(expected)), got \(action)", sourceLocation: sourceLocation)
        return
    }
    #expect(connection == expected, sourceLocation: sourceLocation)
}

// MARK: - Tests

@Suite("ConnectionPool")
struct ConnectionPoolTests {
    let ledger = Ledger(configuration: .init(eventHistoryPerResource: 256))

    // MARK: state machine, driven directly

    @Test func machine_checkout_reservesCapacityThenWaits() {
        var machine = Machine(capacity: 2)
        #expect(machine.available == 2)
        guard case .create = machine.checkout(nil) else { Issue.record("expected .create"); return }
        guard case .create = machine.checkout(nil) else { Issue.record("expected .create"); return }
        #expect(machine.creating == 2 && machine.available == 0)
        guard case .mustWait = machine.checkout(nil) else { Issue.record("expected .mustWait"); return }
        #expect(machine.tryCheckout(nil) == nil)
    }

    @Test func machine_creationSucceeded_leasesToCreatorAndReleaseIdles() throws {
        let ledger = Ledger()
        let stamp = ledger.stamp(fileID: #fileID, line: #line, function: #function)
        var machine = Machine(capacity: 1)
        _ = machine.checkout(stamp)
        guard case .leased(let slot) = machine.creationSucceeded(7, stamp: stamp, isCancelled: false) else {
            Issue.record("expected .leased"); return
        }
        #expect(machine.open == 1 && machine.creating == 0 && machine.held == 1 && machine.available == 0)
        #expect(machine.holding(slot)?.stamp.site.line == stamp?.site.line)
        guard case .idled = machine.release(slot: slot, connection: 7) else { Issue.record("expected .idled"); return }
        #expect(machine.idle == [7] && machine.held == 0 && machine.available == 1)
        expectLeased(machine.checkout(stamp), 7)
        #expect(machine.idle.isEmpty && machine.held == 1)
    }

    @Test func machine_tryCheckout_takesIdleOnlyAndNeverCreates() {
        var machine = Machine(capacity: 2)
        #expect(machine.tryCheckout(nil) == nil)
        #expect(machine.creating == 0)
        _ = machine.checkout(nil)
        guard case .leased(let slot) = machine.creationSucceeded(3, stamp: nil, isCancelled: false) else {
            Issue.record("expected .leased"); return
        }
        #expect(slot == Machine.untrackedSlot)
        _ = machine.release(slot: slot, connection: 3)
        #expect(machine.tryCheckout(nil)?.0 == 3)
    }

    @Test(.timeLimit(.minutes(1))) func machine_release_handsOffToHeadWaiterInFIFOOrder() async throws {
        let box = MachineBox(capacity: 1)
        _ = box.with { $0.checkout(nil) }
        _ = box.with { $0.creationSucceeded(1, stamp: nil, isCancelled: false) }
        let waiters = await box.queueWaiters([10, 11, 12])
        #expect(box.with { $0.available } == 0)
        for (index, waiter) in waiters.enumerated() {
            let action = box.with { $0.release(slot: Machine.untrackedSlot, connection: 1) }
            guard case .handOff(let continuation, let grant, _) = action else {
                Issue.record("expected a hand-off to waiter \(index)"); return
            }
            #expect(box.with { $0.waiters.count } == waiters.count - index - 1)
            continuation.resume(returning: grant)
            #expect(try await waiter.value.connection == 1)
        }
        guard case .idled = box.with({ $0.release(slot: Machine.untrackedSlot, connection: 1) }) else {
            Issue.record("expected .idled"); return
        }
    }

    @Test(.timeLimit(.minutes(1))) func machine_failedCreation_givesCreationRightToHeadWaiter() async throws {
        let box = MachineBox(capacity: 1)
        _ = box.with { $0.checkout(nil) }
        let waiters = await box.queueWaiters([1, 2])
        let head = try #require(box.with { $0.abandonCreation() })
        #expect(box.with { $0.creating } == 1)
        #expect(box.with { $0.waiters.count } == 1)
        head.resume(returning: .create)
        #expect(try await waiters[0].value.isCreate)
        // With nobody left to take it, a freed unit of capacity becomes creatable again.
        let next = try #require(box.with { $0.abandonCreation() })
        next.resume(returning: .create)
        #expect(try await waiters[1].value.isCreate)
        #expect(box.with { $0.abandonCreation() } == nil)
        #expect(box.with { ($0.creating, $0.available) } == (0, 1))
    }

    @Test(.timeLimit(.minutes(1))) func machine_brokenConnection_keepsCapacityUntilClosed() async throws {
        let box = MachineBox(capacity: 1)
        _ = box.with { $0.checkout(nil) }
        _ = box.with { $0.creationSucceeded(1, stamp: nil, isCancelled: false) }
        let waiter = await box.queueWaiters([5])[0]
        box.with { $0.releaseBroken(slot: Machine.untrackedSlot) }
        // Still counted until the close callback returns: no replacement yet.
        #expect(box.with { ($0.open, $0.closing, $0.held, $0.waiters.count) } == (1, 1, 0, 1))
        let head = try #require(box.with { $0.closeFinished() })
        #expect(box.with { ($0.open, $0.closing, $0.creating) } == (0, 0, 1))
        head.resume(returning: .create)
        #expect(try await waiter.value.isCreate)
        // The same without a waiter: the capacity goes back to unused.
        var machine = Machine(capacity: 1)
        _ = machine.checkout(nil)
        _ = machine.creationSucceeded(2, stamp: nil, isCancelled: false)
        machine.releaseBroken(slot: Machine.untrackedSlot)
        #expect(machine.available == 0)
        #expect(machine.closeFinished() == nil)
        #expect(machine.available == 1)
    }

    @Test(.timeLimit(.minutes(1))) func machine_cancel_removesOnlyQueuedWaiters() async throws {
        let box = MachineBox(capacity: 1)
        _ = box.with { $0.checkout(nil) }
        let waiters = await box.queueWaiters([1, 2])
        let cancelled = try #require(box.with { $0.cancel(id: 1) })
        cancelled.resume(throwing: CancellationError())
        await #expect(throws: CancellationError.self) { try await waiters[0].value }
        #expect(box.with { $0.cancel(id: 1) } == nil)
        // The remaining waiter is now the head.
        let head = try #require(box.with { $0.abandonCreation() })
        head.resume(returning: .create)
        #expect(try await waiters[1].value.isCreate)
    }

    @Test(.timeLimit(.minutes(1))) func machine_enqueue_whenCancelledFreeOrShutDown_resumesAtOnce() async throws {
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

    @Test(.timeLimit(.minutes(1))) func machine_cancelledCreator_leavesConnectionForHeadWaiterOrIdle() async throws {
        let box = MachineBox(capacity: 1)
        _ = box.with { $0.checkout(nil) }
        let waiter = await box.queueWaiters([9])[0]
        let action = box.with { $0.creationSucceeded(4, stamp: nil, isCancelled: true) }
        guard case .keptForOthers(let handOff?) = action else { Issue.record("expected a hand-off"); return }
        handOff.0.resume(returning: .connection(4, handOff.1))
        #expect(try await waiter.value.connection == 4)
        #expect(box.with { ($0.open, $0.held, $0.idle) } == (1, 1, []))

        var machine = Machine(capacity: 1)
        _ = machine.checkout(nil)
        guard case .keptForOthers(nil) = machine.creationSucceeded(5, stamp: nil, isCancelled: true) else {
            Issue.record("expected the connection to stay idle"); return
        }
        #expect(machine.idle == [5] && machine.held == 0)
    }

    @Test(.timeLimit(.minutes(1))) func machine_startCreation_checksShutdownAndCancellation() async throws {
        var machine = Machine(capacity: 1)
        _ = machine.checkout(nil)
        guard case .proceed = machine.startCreation(isCancelled: false) else { Issue.record("expected .proceed"); return }
        guard case .cancelled(next: nil) = machine.startCreation(isCancelled: true) else {
            Issue.record("expected .cancelled"); return
        }
        #expect(machine.creating == 0 && machine.available == 1)

        let box = MachineBox(capacity: 1)
        _ = box.with { $0.checkout(nil) }
        let waiter = await box.queueWaiters([1])[0]
        guard case .cancelled(next: let next?) = box.with({ $0.startCreation(isCancelled: true) }) else {
            Issue.record("expected the right to pass to the waiter"); return
        }
        next.resume(returning: .create)
        #expect(try await waiter.value.isCreate)
        _ = box.with { $0.shutdown() }
        guard case .shutDown = box.with({ $0.startCreation(isCancelled: false) }) else {
            Issue.record("expected .shutDown"); return
        }
        #expect(box.with { $0.creating } == 0)
    }

    @Test(.timeLimit(.minutes(1))) func machine_shutdown_failsWaitersAndClosesLaterReturns() async throws {
        let box = MachineBox(capacity: 3)
        for connection in 1...3 {
            _ = box.with { $0.checkout(nil) }
            _ = box.with { $0.creationSucceeded(connection, stamp: nil, isCancelled: false) }
        }
        let waiters = await box.queueWaiters([1, 2])
        // Connection 1 goes to the head waiter; the second waiter still queues at shutdown.
        guard case .handOff(let continuation, let grant, _) = box.with({
            $0.release(slot: Machine.untrackedSlot, connection: 1)
        }) else { Issue.record("expected a hand-off"); return }
        continuation.resume(returning: grant)
        #expect(try await waiters[0].value.connection == 1)
        let action = try #require(box.with { $0.shutdown() })
        #expect(action.close.isEmpty && action.fail.count == 1)
        for continuation in action.fail { continuation.resume(throwing: FuturelockError.poolShutdown(pool: "m")) }
        await #expect(throws: FuturelockError.poolShutdown(pool: "m")) { try await waiters[1].value }
        #expect(box.with { $0.shutdown() } == nil)
        guard case .shutDown = box.with({ $0.checkout(nil) }) else { Issue.record("expected .shutDown"); return }
        #expect(box.with { $0.tryCheckout(nil) } == nil)
        guard case .close(2) = box.with({ $0.release(slot: Machine.untrackedSlot, connection: 2) }) else {
            Issue.record("expected the returned connection to be closed"); return
        }
        #expect(box.with { $0.closeFinished() } == nil)
        #expect(box.with { ($0.open, $0.available, $0.isShutdown) } == (2, 0, true))
    }

    @Test func machine_shutdown_returnsIdleConnectionsAndClosesLateCreations() {
        var machine = Machine(capacity: 2)
        _ = machine.checkout(nil)
        _ = machine.creationSucceeded(1, stamp: nil, isCancelled: false)
        _ = machine.release(slot: Machine.untrackedSlot, connection: 1)
        _ = machine.checkout(nil)  // idle 1
        _ = machine.checkout(nil)  // create
        _ = machine.release(slot: Machine.untrackedSlot, connection: 1)
        let action = machine.shutdown()
        #expect(action?.close == [1])
        #expect(machine.idle.isEmpty && machine.closing == 1)
        guard case .close(2) = machine.creationSucceeded(2, stamp: nil, isCancelled: false) else {
            Issue.record("a creation that ends after shutdown must be closed"); return
        }
        _ = machine.closeFinished()
        _ = machine.closeFinished()
        #expect(machine.open == 0 && machine.closing == 0 && machine.creating == 0)
    }

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

    @Test(.timeLimit(.minutes(1))) func returnBroken_withoutWaiters_freesCapacity() async throws {
        let factory = ScriptedFactory()
        let pool = try factory.pool(capacity: 1, ledger: ledger)
        let lease = try await pool.checkout()
        lease.returnBroken()
        await eventually { pool.openCount == 0 }
        #expect(factory.closed.value == 1)
        let next = try await pool.checkout()
        #expect(next.connection.id == 1)
        next.release()
    }

    @Test(.timeLimit(.minutes(1))) func shutdown_failsWaitersAndRejectsLaterCheckouts() async throws {
        let factory = ScriptedFactory()
        let pool = try factory.pool(name: "closing", capacity: 1, ledger: ledger)
        let held = try await pool.checkout()
        let waiters = (0..<3).map { _ in Task { try await pool.checkout() } }
        await eventually { pool.waitingCount == 3 }
        await pool.shutdown()
        for waiter in waiters {
            await #expect(throws: FuturelockError.poolShutdown(pool: "closing")) { try await waiter.value }
        }
        await #expect(throws: FuturelockError.poolShutdown(pool: "closing")) { try await pool.checkout() }
        #expect(pool.tryCheckout() == nil)
        #expect(pool.waitingCount == 0 && pool.isShutdown)
        // The lease still out stays usable and is closed when it comes back.
        #expect(!held.connection.isClosed)
        held.release()
        await eventually { pool.openCount == 0 }
        #expect(held.connection.isClosed)
        #expect(factory.closed.value == 1)
    }

    @Test(.timeLimit(.minutes(1))) func shutdown_closesIdleConnectionsAndIsIdempotent() async throws {
        let factory = ScriptedFactory()
        let pool = try factory.pool(capacity: 3, ledger: ledger)
        let a = try await pool.checkout()
        let b = try await pool.checkout()
        let c = try await pool.checkout()
        a.release()
        b.release()
        await pool.shutdown()
        #expect(a.connection.isClosed && b.connection.isClosed && !c.connection.isClosed)
        #expect(factory.closed.value == 2)
        await pool.shutdown()
        #expect(factory.closed.value == 2 && factory.doubleCloses.value == 0)
        c.returnBroken()
        await eventually { factory.closed.value == 3 }
        #expect(pool.openCount == 0)
        let resource = try #require(ledger.snapshot().resources.first { $0.id == pool.id })
        #expect(resource.closed && resource.available == 0 && resource.held == 0)
    }

    @Test(.timeLimit(.minutes(1))) func shutdown_duringCreation_closesTheNewConnection() async throws {
        let gate = Gate()
        let factory = ScriptedFactory(gates: [0: gate])
        let pool = try factory.pool(name: "late", capacity: 1, ledger: ledger)
        let creator = Task { try await pool.checkout() }
        await eventually { factory.calls == 1 }
        await pool.shutdown()
        gate.open()
        await #expect(throws: FuturelockError.poolShutdown(pool: "late")) { try await creator.value }
        #expect(factory.closed.value == 1 && pool.openCount == 0)
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
        held.returnBroken()  // once closed, `first` gets the right to create
        await eventually { pool.waitingCount == 1 }
        #expect(pool.creatingCount == 1)
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
        await frontend.shutdown()
        await #expect(throws: FuturelockError.poolShutdown(pool: "gone")) { try await client.value }
        await #expect(throws: FuturelockError.poolShutdown(pool: "gone")) { try await frontend.checkout() }
        await loop.value
        held.release()
        await eventually { pool.openCount == 0 }
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
    private let made_ = Mutex<[TestConnection]>([])
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
