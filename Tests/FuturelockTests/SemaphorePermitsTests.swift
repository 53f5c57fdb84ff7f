import Logging
import Testing
@testable import Futurelock

/// Several permits at once, adding and forgetting permits: tokio's `acquire_many`, `add_permits`,
/// `forget_permits` and `SemaphorePermit::forget`, each next to the rule it checks.
@Suite("Semaphore: several permits")
struct SemaphorePermitsTests {
    let ledger = Ledger(configuration: .init(eventHistoryPerResource: 64))

    @Test(.timeLimit(.minutes(1))) func acquirePermits_takesAndReturnsThemTogether() async throws {
        let semaphore = try Semaphore(name: "bulk", permits: 4, ledger: ledger)
        let three = try await semaphore.acquire(permits: 3)
        #expect(three.count == 3)
        #expect(semaphore.availablePermits == 1)
        #expect(try semaphore.tryAcquire(permits: 2) == nil)
        let one = try #require(try semaphore.tryAcquire(permits: 1))
        #expect(semaphore.availablePermits == 0)
        three.release()
        #expect(semaphore.availablePermits == 3)
        one.release()
        #expect(semaphore.availablePermits == 4 && semaphore.capacity == 4)
    }

    /// FIFO with requests of different sizes: a queued large request blocks the small ones behind it,
    /// so it is never starved, and one release serves every head waiter that fits.
    @Test(.timeLimit(.minutes(1))) func largeRequestAtTheHead_isNotStarvedBySmallOnes() async throws {
        let semaphore = try Semaphore(name: "fair", permits: 4, ledger: ledger)
        let held = try await semaphore.acquire(permits: 2)
        let order = Locked<[String]>([])
        let large = Task {
            let permit = try await semaphore.acquire(permits: 3)
            order.withLock { $0.append("large") }
            return permit
        }
        await eventually { semaphore.waitingCount == 1 }
        // Two permits are free, but a newcomer may not take even one past the queued request.
        #expect(semaphore.availablePermits == 2)
        #expect(semaphore.tryAcquire() == nil)
        #expect(try semaphore.tryAcquire(permits: 1) == nil)
        let small = Task {
            let permit = try await semaphore.acquire()
            order.withLock { $0.append("small") }
            return permit
        }
        await eventually { semaphore.waitingCount == 2 }
        held.release()
        let largePermit = try await large.value
        let smallPermit = try await small.value
        #expect(order.value.first == "large")
        #expect(Set(order.value) == ["large", "small"])
        #expect(semaphore.availablePermits == 0 && semaphore.waitingCount == 0)
        largePermit.release()
        smallPermit.release()
        #expect(semaphore.availablePermits == 4)
    }

    @Test(.timeLimit(.minutes(1))) func cancellingALargeHead_servesTheSmallerWaitersBehindIt() async throws {
        let semaphore = try Semaphore(name: "cancel-head", permits: 4, ledger: ledger)
        let held = try await semaphore.acquire(permits: 2)
        let large = Task { try await semaphore.acquire(permits: 3) }
        await eventually { semaphore.waitingCount == 1 }
        let small = Task { try await semaphore.acquire(permits: 2) }
        await eventually { semaphore.waitingCount == 2 }
        large.cancel()
        await #expect(throws: CancellationError.self) { try await large.value }
        let smallPermit = try await small.value
        #expect(smallPermit.count == 2 && semaphore.availablePermits == 0)
        smallPermit.release()
        held.release()
        #expect(semaphore.availablePermits == 4)
    }

    @Test(.timeLimit(.minutes(1))) func addPermits_growsTheSemaphoreAndServesTheHead() async throws {
        let semaphore = try Semaphore(name: "grow", permits: 2, ledger: ledger)
        let held = try await semaphore.acquire(permits: 2)
        let waiter = Task { try await semaphore.acquire(permits: 2) }
        await eventually { semaphore.waitingCount == 1 }
        try semaphore.addPermits(1)
        #expect(semaphore.capacity == 3 && semaphore.availablePermits == 1 && semaphore.waitingCount == 1)
        try semaphore.addPermits(1)
        let permit = try await waiter.value
        #expect(semaphore.capacity == 4 && semaphore.availablePermits == 0)
        permit.release()
        held.release()
        #expect(semaphore.availablePermits == 4)
        try semaphore.addPermits(0)
        #expect(semaphore.capacity == 4)
    }

    @Test func forgetPermits_removesOnlyFreePermits() async throws {
        let semaphore = try Semaphore(name: "shrink", permits: 4, ledger: ledger)
        let held = try #require(semaphore.tryAcquire())
        #expect(try semaphore.forgetPermits(10) == 3)
        #expect(semaphore.capacity == 1 && semaphore.availablePermits == 0)
        #expect(try semaphore.forgetPermits(1) == 0)
        held.release()
        #expect(semaphore.capacity == 1 && semaphore.availablePermits == 1)
    }

    @Test(.timeLimit(.minutes(1))) func forgettingBelowAQueuedRequest_failsItWithATypedError() async throws {
        let semaphore = try Semaphore(name: "shrink-waiters", permits: 4, ledger: ledger)
        let held = try await semaphore.acquire(permits: 2)
        let large = Task { try await semaphore.acquire(permits: 3) }
        await eventually { semaphore.waitingCount == 1 }
        let small = Task { try await semaphore.acquire() }
        await eventually { semaphore.waitingCount == 2 }
        #expect(try semaphore.forgetPermits(1) == 1)
        // Three permits in all and two held: the large request still fits in the total, so it waits.
        #expect(semaphore.waitingCount == 2)
        #expect(try semaphore.forgetPermits(1) == 1)
        await #expect(throws: FuturelockError.permitRequestExceedsCapacity(semaphore: "shrink-waiters",
                                                                          requested: 3, capacity: 2)) {
            try await large.value
        }
        // The small one behind it was blocked only by the large head; nothing is free, so it waits on.
        #expect(semaphore.waitingCount == 1)
        held.release()
        let permit = try await small.value
        permit.release()
        #expect(semaphore.capacity == 2 && semaphore.availablePermits == 2)
    }

    @Test func permitForget_removesItsPermitsForGood() async throws {
        let semaphore = try Semaphore(name: "forget", permits: 3, ledger: ledger)
        let two = try #require(try semaphore.tryAcquire(permits: 2))
        two.forget()
        #expect(two.isReleased)
        #expect(semaphore.capacity == 1 && semaphore.availablePermits == 1)
        two.forget()
        two.release()
        #expect(semaphore.capacity == 1 && semaphore.availablePermits == 1, "a second forget or release changes nothing")
        let problems = ledger.snapshot().problems.filter { $0.kind == .doubleRelease }
        #expect(problems.count == 2)
        #expect(ledger.snapshot().holdings.isEmpty)
    }

    @Test func badCounts_throwTypedErrorsAndChangeNothing() async throws {
        let semaphore = try Semaphore(name: "bad", permits: 4, ledger: ledger)
        await #expect(throws: FuturelockError.invalidPermitCount(semaphore: "bad", value: 0)) {
            try await semaphore.acquire(permits: 0)
        }
        #expect(throws: FuturelockError.invalidPermitCount(semaphore: "bad", value: -1)) {
            try semaphore.tryAcquire(permits: -1)
        }
        await #expect(throws: FuturelockError.permitRequestExceedsCapacity(semaphore: "bad", requested: 5, capacity: 4)) {
            try await semaphore.acquire(permits: 5)
        }
        #expect(throws: FuturelockError.permitRequestExceedsCapacity(semaphore: "bad", requested: 5, capacity: 4)) {
            try semaphore.tryAcquire(permits: 5)
        }
        await #expect(throws: FuturelockError.permitRequestExceedsCapacity(semaphore: "bad", requested: 5, capacity: 4)) {
            try await semaphore.acquire(permits: 5, timeout: .seconds(30))
        }
        await #expect(throws: FuturelockError.invalidPermitCount(semaphore: "bad", value: 0)) {
            try await semaphore.withPermits(0) {}
        }
        #expect(throws: FuturelockError.invalidPermitCount(semaphore: "bad", value: -2)) { try semaphore.addPermits(-2) }
        #expect(throws: FuturelockError.invalidPermitCount(semaphore: "bad", value: -2)) { try semaphore.forgetPermits(-2) }
        #expect(throws: FuturelockError.invalidPermitCount(semaphore: "bad", value: Semaphore.maxPermits)) {
            try semaphore.addPermits(Semaphore.maxPermits)
        }
        #expect(semaphore.capacity == 4 && semaphore.availablePermits == 4 && semaphore.waitingCount == 0)
        let message = FuturelockError.permitRequestExceedsCapacity(semaphore: "bad", requested: 5, capacity: 4).description
        #expect(message.contains("addPermits"))
    }

    @Test(.timeLimit(.minutes(1))) func closeFailsAQueuedBulkRequest() async throws {
        let semaphore = try Semaphore(name: "close-bulk", permits: 2, ledger: ledger)
        let held = try await semaphore.acquire()
        let waiter = Task { try await semaphore.acquire(permits: 2) }
        await eventually { semaphore.waitingCount == 1 }
        semaphore.close()
        await #expect(throws: FuturelockError.semaphoreClosed(semaphore: "close-bulk")) { try await waiter.value }
        held.release()
        #expect(semaphore.availablePermits == 2)
    }

    @Test(.timeLimit(.minutes(1))) func timedBulkAcquire_givesUpWithNothingHeld() async throws {
        let semaphore = try Semaphore(name: "timed-bulk", permits: 2, ledger: ledger)
        let held = try await semaphore.acquire()
        await #expect(throws: FuturelockError.timedOut(resource: "timed-bulk", after: .milliseconds(20))) {
            try await semaphore.acquire(permits: 2, timeout: .milliseconds(20))
        }
        #expect(semaphore.waitingCount == 0 && semaphore.availablePermits == 1)
        held.release()
        let both = try await semaphore.acquire(permits: 2, timeout: .seconds(5))
        #expect(both.count == 2)
        both.release()
    }

    /// The ledger records a bulk holding once, with its size, and a bulk wait with what it asks for.
    @Test(.timeLimit(.minutes(1))) func ledgerRecordsUnitsOfHoldingsAndWaits() async throws {
        let semaphore = try Semaphore(name: "units", permits: 3, ledger: ledger)
        let held = try await semaphore.acquire(permits: 2)
        let waiter = Task { try await semaphore.acquire(permits: 2) }
        await eventually { semaphore.waitingCount == 1 }
        let snapshot = ledger.snapshot()
        let holding = try #require(snapshot.holdings.first { $0.resource == semaphore.id })
        #expect(holding.units == 2 && holding.unitCount == 2)
        let wait = try #require(snapshot.waits.first { $0.resource == semaphore.id })
        #expect(wait.units == 2)
        let resource = try #require(snapshot.resources.first { $0.id == semaphore.id })
        #expect(resource.held == 2 && resource.available == 1 && resource.headRequest == 2 && resource.blocksHead)
        held.release()
        let permit = try await waiter.value
        permit.release()
    }

    /// A task holding two of three permits (scoped) that asks for two more is stuck for good even
    /// though one permit is free: the watchdog sees the head request, not just "nothing free".
    @Test(.timeLimit(.minutes(1))) func bulkSelfDeadlock_withAPermitFree_isCertain() async throws {
        let semaphore = try Semaphore(name: "bulk-self", permits: 3, ledger: ledger)
        let task = Task {
            try await semaphore.withPermits(2) {
                try await semaphore.acquire(permits: 2).release()
            }
        }
        await eventually { semaphore.waitingCount == 1 }
        let watchdog = Watchdog(ledger: ledger, configuration: .init(confirmation: .zero),
                                logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }))
        let finding = try #require(watchdog.check().findings.first)
        #expect(finding.kind == .selfDeadlock && finding.certainty == .certain)
        let text = TextDump.render(Dump(snapshot: ledger.snapshot(), findings: []), waitThreshold: .seconds(1))
        #expect(text.contains("holds permit ×2 (scoped)"))
        #expect(text.contains("waits to acquire 2 permits of"))
        task.cancel()
        await #expect(throws: CancellationError.self) { try await task.value }
        #expect(semaphore.availablePermits == 3)
    }

    /// With one of three permits free and a one-permit holder that is not stuck, nothing is reported.
    @Test(.timeLimit(.minutes(1))) func bulkWait_behindAHolderThatIsNotStuck_isNoFinding() async throws {
        let semaphore = try Semaphore(name: "bulk-fine", permits: 3, ledger: ledger)
        let held = try await semaphore.acquire(permits: 2)
        let waiter = Task { try await semaphore.acquire(permits: 2) }
        await eventually { semaphore.waitingCount == 1 }
        let watchdog = Watchdog(ledger: ledger, configuration: .init(confirmation: .zero),
                                logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }))
        #expect(watchdog.check().findings.isEmpty)
        held.release()
        try await waiter.value.release()
    }
}
