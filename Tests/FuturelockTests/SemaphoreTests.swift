import Synchronization
import Testing
@testable import Futurelock

@Suite("Semaphore")
struct SemaphoreTests {
    let ledger = Ledger(configuration: .init(eventHistoryPerResource: 64))

    @Test func init_whenPermitsNotPositive_throwsInvalidCapacity() {
        #expect(throws: FuturelockError.invalidCapacity(resource: "s", value: 0)) {
            try Semaphore(name: "s", permits: 0, ledger: ledger)
        }
        #expect(throws: FuturelockError.invalidCapacity(resource: "s", value: -3)) {
            try Semaphore(name: "s", permits: -3, ledger: ledger)
        }
        let message = FuturelockError.invalidCapacity(resource: "s", value: 0).description
        #expect(message.contains("at least 1"))
    }

    @Test(.timeLimit(.minutes(1))) func acquireRelease_uncontended_restoresPermits() async throws {
        let semaphore = try Semaphore(name: "s", permits: 2, ledger: ledger)
        let a = try await semaphore.acquire()
        let b = try await semaphore.acquire()
        #expect(semaphore.availablePermits == 0)
        #expect(semaphore.tryAcquire() == nil)
        a.release()
        #expect(semaphore.availablePermits == 1)
        b.release()
        #expect(semaphore.availablePermits == 2)
        #expect(a.isReleased && b.isReleased)
    }

    @Test(.timeLimit(.minutes(1))) func release_whenWaitersQueue_handsOffInFIFOOrder() async throws {
        let semaphore = try Semaphore(name: "fifo", permits: 1, ledger: ledger)
        let first = try await semaphore.acquire()
        let order = Locked<[Int]>([])
        var tasks: [Task<Void, any Error>] = []
        for index in 0..<8 {
            tasks.append(Task {
                let permit = try await semaphore.acquire()
                order.withLock { $0.append(index) }
                permit.release()
            })
            // Make the arrival order explicit: wait until this waiter is queued before the next starts.
            await eventually { semaphore.waitingCount == index + 1 }
        }
        first.release()
        for task in tasks { try await task.value }
        #expect(order.value == Array(0..<8))
        #expect(semaphore.availablePermits == 1)
    }

    @Test(.timeLimit(.minutes(1))) func release_whenWaiterQueued_newcomerCannotBarge() async throws {
        let semaphore = try Semaphore(name: "no-barging", permits: 1, ledger: ledger)
        let executor = ManualExecutor()
        let held = try await semaphore.acquire()
        let waiter = Task(executorPreference: executor) { try await semaphore.acquire() }
        executor.drain()
        #expect(semaphore.waitingCount == 1)
        held.release()
        // The permit now belongs to the waiter even though it has not run yet.
        #expect(semaphore.tryAcquire() == nil)
        #expect(semaphore.availablePermits == 0)
        executor.drain()
        let permit = try await waiter.value
        permit.release()
        #expect(semaphore.availablePermits == 1)
    }

    @Test(.timeLimit(.minutes(1))) func cancel_whileQueued_removesWaiterAndThrows() async throws {
        let semaphore = try Semaphore(name: "cancel", permits: 1, ledger: ledger)
        let held = try await semaphore.acquire()
        let waiter = Task { try await semaphore.acquire() }
        await eventually { semaphore.waitingCount == 1 }
        waiter.cancel()
        await #expect(throws: CancellationError.self) { try await waiter.value }
        #expect(semaphore.waitingCount == 0)
        held.release()
        #expect(semaphore.availablePermits == 1)
        #expect(ledger.snapshot().waits.isEmpty)
    }

    @Test(.timeLimit(.minutes(1))) func acquire_whenAlreadyCancelled_throwsWithoutTakingAPermitFromTheQueue() async throws {
        let semaphore = try Semaphore(name: "pre-cancelled", permits: 1, ledger: ledger)
        let held = try await semaphore.acquire()
        let task = Task {
            withUnsafeCurrentTask { $0?.cancel() }
            return try await semaphore.acquire()
        }
        await #expect(throws: CancellationError.self) { try await task.value }
        #expect(semaphore.waitingCount == 0)
        held.release()
        #expect(semaphore.availablePermits == 1)
    }

    @Test(.timeLimit(.minutes(1))) func cancel_afterHandOff_passesPermitToNextWaiter() async throws {
        let semaphore = try Semaphore(name: "cancel-after-handoff", permits: 1, ledger: ledger)
        let executor = ManualExecutor()
        let held = try await semaphore.acquire()
        let first = Task(executorPreference: executor) { try await semaphore.acquire() }
        executor.drain()
        let second = Task(executorPreference: executor) { try await semaphore.acquire() }
        executor.drain()
        #expect(semaphore.waitingCount == 2)

        held.release()            // hands the permit to `first`, which has not run yet
        first.cancel()            // …and is cancelled before it does
        #expect(semaphore.waitingCount == 1)
        executor.drain()          // `first` wakes, sees the cancellation, passes the permit on

        await #expect(throws: CancellationError.self) { try await first.value }
        let permit = try await second.value
        #expect(semaphore.availablePermits == 0)
        permit.release()
        #expect(semaphore.availablePermits == 1)
        let kinds = ledger.snapshot().events.map(\.kind)
        #expect(kinds.contains(.cancelled))
    }

    @Test(.timeLimit(.minutes(1))) func release_twice_isReportedAndNotDoubleCounted() async throws {
        let semaphore = try Semaphore(name: "double", permits: 1, ledger: ledger)
        let permit = try await semaphore.acquire()
        permit.release()
        permit.release()
        #expect(semaphore.availablePermits == 1)
        #expect(throws: FuturelockError.alreadyReleased(resource: "double")) { try permit.releaseChecked() }
        let problems = ledger.problems
        #expect(problems.count == 2)
        #expect(problems.allSatisfy { $0.kind == .doubleRelease && $0.resourceName == "double" })
        #expect(problems.first?.releasedAt?.fileID.hasSuffix("SemaphoreTests.swift") == true)
    }

    @Test(.timeLimit(.minutes(1))) func drop_withoutRelease_releasesAndReportsAcquisitionSite() async throws {
        let semaphore = try Semaphore(name: "dropped", permits: 1, ledger: ledger)
        let line: UInt = #line + 1
        _ = try await semaphore.acquire()
        #expect(semaphore.availablePermits == 1)
        let problem = try #require(ledger.problems.first)
        #expect(problem.kind == .droppedWithoutRelease)
        #expect(problem.acquiredAt?.line == line)
        #expect(problem.acquiredAt?.fileID == "FuturelockTests/SemaphoreTests.swift")
        #expect(problem.message.contains("dropped without release"))
    }

    @Test(.timeLimit(.minutes(1))) func drop_withoutRelease_handsPermitToWaiter() async throws {
        let semaphore = try Semaphore(name: "dropped-to-waiter", permits: 1, ledger: ledger)
        var holder: Permit? = try await semaphore.acquire()
        let waiter = Task { try await semaphore.acquire() }
        await eventually { semaphore.waitingCount == 1 }
        #expect(holder != nil)
        holder = nil
        let permit = try await waiter.value
        permit.release()
        #expect(semaphore.availablePermits == 1)
        #expect(ledger.problems.map(\.kind) == [.droppedWithoutRelease])
    }

    @Test(.timeLimit(.minutes(1))) func withPermit_whenBodyThrows_releases() async throws {
        struct Boom: Error {}
        let semaphore = try Semaphore(name: "scoped", permits: 1, ledger: ledger)
        await #expect(throws: Boom.self) {
            try await semaphore.withPermit { throw Boom() }
        }
        #expect(semaphore.availablePermits == 1)
        let value = try await semaphore.withPermit { semaphore.availablePermits }
        #expect(value == 0)
        #expect(ledger.problems.isEmpty)
    }

    @Test(.timeLimit(.minutes(1))) func acquireTimeout_whenHeld_timesOutAndLeavesNoWaiter() async throws {
        let semaphore = try Semaphore(name: "timeout", permits: 1, ledger: ledger)
        let held = try await semaphore.acquire()
        await #expect(throws: FuturelockError.timedOut(resource: "timeout", after: .milliseconds(20))) {
            try await semaphore.acquire(timeout: .milliseconds(20))
        }
        #expect(semaphore.waitingCount == 0)
        await #expect(throws: FuturelockError.invalidTimeout(resource: "timeout", timeout: .seconds(-1))) {
            try await semaphore.acquire(timeout: .seconds(-1))
        }
        held.release()
        let permit = try await semaphore.acquire(timeout: .seconds(30))
        permit.release()
        #expect(semaphore.availablePermits == 1)
    }

    @Test(.timeLimit(.minutes(1))) func snapshot_recordsHolderSiteAndQueuedWaiters() async throws {
        let semaphore = try Semaphore(name: "recorded", permits: 1, ledger: ledger)
        let line: UInt = #line + 1
        let held = try await semaphore.acquire()
        let holderTask = TaskID.current
        let waiters = (0..<3).map { _ in Task { try await semaphore.acquire() } }
        await eventually { semaphore.waitingCount == 3 }

        let snapshot = ledger.snapshot()
        let resource = try #require(snapshot.resources.first { $0.name == "recorded" })
        #expect(resource.kind == .semaphore && resource.capacity == 1 && resource.available == 0)
        #expect(resource.held == 1 && resource.waiting == 3)
        let holding = try #require(snapshot.holdings.first)
        #expect(holding.holderTask == holderTask)
        #expect(holding.site.line == line)
        #expect(holding.kind == .permit)
        #expect(snapshot.waits.map(\.position).sorted() == [0, 1, 2])
        #expect(Set(snapshot.waits.map(\.waiterTask)).count == 3)
        #expect(!snapshot.waits.contains { $0.waiterTask == holderTask })

        for waiter in waiters { waiter.cancel() }
        for waiter in waiters { _ = try? await waiter.value }
        held.release()
        #expect(ledger.snapshot().holdings.isEmpty)
    }

    @Test(.timeLimit(.minutes(1))) func release_fromAnotherTask_recordsTransfer() async throws {
        let semaphore = try Semaphore(name: "moved", permits: 1, ledger: ledger)
        let permit = try await semaphore.acquire()
        let acquirer = TaskID.current
        let claimer = await Task.detached {
            permit.claim()
            return TaskID.current
        }.value
        let holding = try #require(ledger.snapshot().holdings.first)
        #expect(holding.holderTask == claimer)
        #expect(holding.acquiredBy == acquirer)
        permit.release()
        #expect(ledger.snapshot().events.contains { $0.kind == .transfer })
    }

    @Test func disabledLedger_recordsNothing() async throws {
        let semaphore = try Semaphore(name: "quiet", permits: 1, ledger: .disabled)
        let permit = try await semaphore.acquire()
        #expect(Ledger.disabled.snapshot().holdings.isEmpty)
        #expect(Ledger.disabled.snapshot().resources.isEmpty)
        permit.release()
        #expect(semaphore.availablePermits == 1)
    }

    @Test(.timeLimit(.minutes(2))) func stress_randomCancellation_losesAndDuplicatesNothing() async throws {
        let capacity = 3
        let semaphore = try Semaphore(name: "stress", permits: capacity, ledger: ledger)
        let inside = Counter()
        let maxInside = Counter()
        let granted = Counter()
        let cancelled = Counter()
        let total = 3000
        await withTaskGroup(of: Void.self) { group in
            var tasks: [Task<Void, Never>] = []
            for index in 0..<total {
                let task = Task {
                    do {
                        let permit = try await semaphore.acquire()
                        let now = inside.increment()
                        maxInside.raise(to: now)
                        if index % 7 == 0 { await Task.yield() }
                        inside.decrement()
                        granted.increment()
                        permit.release()
                    } catch {
                        cancelled.increment()
                    }
                }
                tasks.append(task)
                if index % 5 == 0, let victim = tasks.randomElement() { victim.cancel() }
            }
            for task in tasks { group.addTask { await task.value } }
        }
        #expect(granted.value + cancelled.value == total)
        #expect(cancelled.value > 0)
        #expect(maxInside.value <= capacity)
        #expect(semaphore.availablePermits == capacity)
        #expect(semaphore.waitingCount == 0)
        let snapshot = ledger.snapshot()
        #expect(snapshot.holdings.isEmpty && snapshot.waits.isEmpty)
        #expect(ledger.problems.isEmpty)
    }

    // MARK: Closing

    @Test(.timeLimit(.minutes(1))) func close_failsWaitersAndLaterAcquires_heldPermitsStillRelease() async throws {
        let semaphore = try Semaphore(name: "gate", permits: 1, ledger: ledger)
        let closed = FuturelockError.semaphoreClosed(semaphore: "gate")
        let held = try await semaphore.acquire()
        let executor = ManualExecutor()
        let waiter = Task(executorPreference: executor) { try await semaphore.acquire() }
        executor.drain()
        #expect(semaphore.waitingCount == 1)
        semaphore.close()
        semaphore.close()                                          // harmless
        executor.drain()
        await #expect(throws: closed) { try await waiter.value }
        #expect(semaphore.isClosed && semaphore.waitingCount == 0)
        held.release()                                             // a permit held before still releases
        #expect(semaphore.availablePermits == 1)
        #expect(semaphore.tryAcquire() == nil, "closed: nothing is granted, even with a permit free")
        await #expect(throws: closed) { _ = try await semaphore.acquire() }
        await #expect(throws: closed) { _ = try await semaphore.acquire(timeout: .seconds(3600)) }
        await #expect(throws: closed) { try await semaphore.withPermit {} }
        #expect(closed.description.contains("closed"))
        #expect(ledger.snapshot().resources.first { $0.name == "gate" }?.closed == true)
    }

}

