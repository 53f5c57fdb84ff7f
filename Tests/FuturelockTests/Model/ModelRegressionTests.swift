// Shrunk counterexamples the model tests found, kept as plain deterministic tests of the state
// machines (each names the model test and the rule it broke).

import Testing
@testable import Futurelock

@Suite("Model regressions")
struct ModelRegressionTests {
    /// Found by `semaphoreModel_forgedContinuations` (shrunk: `acquire(1), acquire(4), acquire(2),
    /// takeIDEarly, acquire(3), permit.drop, permit.release, acquire(1)[staleID]` at capacity 4).
    ///
    /// A waiter takes its id before it locks; when a waiter with a smaller id reaches the lock second
    /// it is queued in id order (`WaiterQueue` — its id is its place in line), so it can land *ahead
    /// of* the head. With several permits per request the head may be blocked with permits free (it
    /// asks for more than are free). If the late waiter asks for no more than is free it is now a head
    /// that fits — yet `enqueue` only tried the fast path (which refuses while anyone queues) and
    /// suspended it. It then waits for an unrelated release, although its permits are free: the
    /// documented invariant "while waiters queue, `available` > 0 only if the head asks for more than
    /// are free" is broken, and if the holders wait for this task the wait never ends.
    @Test("Semaphore Model regression: a waiter queued ahead of a blocked head is granted when it fits")
    func semaphoreModel_lateWaiterAheadOfBlockedHead_isGrantedWhenItFits() {
        let tokens = Tokens<Int32>(TokenLedger(real: false)) { .slot($0) }
        var machine = Semaphore.StateMachine(capacity: 2)
        #expect(machine.tryAcquire(nil, count: 1) != nil)  // one of two permits held, one free

        // Waiter B took id 2, reached the lock first and asks for both permits: it queues (1 free).
        guard case .suspended = machine.enqueue(id: 2, tokens.make().continuation, stamp: nil, count: 2,
                                                isCancelled: false) else {
            Issue.record("B should queue")
            return
        }
        // Waiter A took id 1 before B took 2, but reaches the lock second; it asks for one permit.
        let action = machine.enqueue(id: 1, tokens.make().continuation, stamp: nil, count: 1, isCancelled: false)

        // A is first in line and its permit is free: it must be granted, not left waiting.
        var granted = false
        if case .resumeGranted = action { granted = true }
        #expect(granted, "A (id 1, asks 1) was queued ahead of B with a permit free")
        #expect(machine.waiters.isEmpty || machine.headRequest > machine.available,
                "head asks \(machine.headRequest) while \(machine.available) permits are free")
    }

    /// Found by `poolModel_forgedContinuations` (shrunk: `checkout, startCreation, factory.success,
    /// lease.returnBroken, checkout, checkout, closeFinished, startCreation, startCreation` at
    /// capacity 3 with `maximumConcurrentConnectionAttempts` 1).
    ///
    /// The file header: "At most `maximumConcurrentConnectionAttempts` factory calls run at once."
    /// When the attempt limit (not the capacity) is what stops a checkout from creating, `take` still
    /// hands out the unit of a connection waiting to be closed (`.replace`); its closer keeps the unit
    /// as a creation right (`closeFinished(keepRight: true)` raises `creating` without looking at the
    /// limit) and `startCreation` lets it proceed — a second factory call while the first runs. With
    /// k broken connections returned during an outage, k + limit attempts can run at once.
    @Test("ConnectionPool Model regression: a replacement does not exceed maximumConcurrentConnectionAttempts")
    func poolModel_replacementRespectsTheAttemptLimit() {
        var configuration = ConnectionPool<Int>.Configuration()
        configuration.idleTimeout = nil
        configuration.maximumLifetime = nil
        configuration.maximumConcurrentConnectionAttempts = 1
        var machine = ConnectionPool<Int>.StateMachine(capacity: 3, configuration: configuration)
        let now = ContinuousClock.now
        var running = 0

        // Connection 0 is made, leased, and comes back broken: it waits to be closed.
        guard case .create = machine.checkout(nil, now: now),
              case .proceed = machine.startCreation(isCancelled: false, now: now),
              case .leased(let handed, _) = machine.creationSucceeded(0, stamp: nil, now: now, isCancelled: false),
              case .returned = machine.releaseBroken(slot: handed.slot, lease: handed.id, now: now) else {
            Issue.record("setup: expected create, proceed, leased, returned")
            return
        }
        // Checkout A may create (1 of 3 units used, 0 attempts running): its attempt runs.
        guard case .create = machine.checkout(nil, now: now),
              case .proceed = machine.startCreation(isCancelled: false, now: now) else {
            Issue.record("setup: checkout A should create")
            return
        }
        running += 1
        // Checkout B: the attempt limit is reached, so it must not start a factory call now.
        if case .replace = machine.checkout(nil, now: now) {
            _ = machine.closeFinished(now: now, keepRight: true)
            if case .proceed = machine.startCreation(isCancelled: false, now: now) { running += 1 }
        }
        #expect(running <= configuration.maximumConcurrentConnectionAttempts,
                "\(running) factory calls run at once; the limit is \(configuration.maximumConcurrentConnectionAttempts)")
    }
}
