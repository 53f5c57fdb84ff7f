import Logging
import Synchronization
import Testing
@testable import Futurelock

/// Futurelocks in code nobody annotated, found through the runtime's structured task tree, and the
/// hand-offs that look like locks but are not. Every scenario here is real tasks on real primitives.
@Suite("Runtime task tree")
struct RuntimeTreeTests {
    let ledger = Ledger()
    let quiet = Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() })

    /// Runs `scenario` until the watchdog reports a certain lock, and returns it (cancelling the
    /// scenario, whose primitives then unwind). The test's time limit ends a search that never succeeds.
    private func certainLock(once ready: @escaping @Sendable () -> Bool = { true },
                             _ scenario: @escaping @Sendable () async throws -> Void) async throws -> (Finding, Report) {
        #expect(await TaskTree.verifyRuntimeInspection(), "\(TaskTree.runtimeInspectionStatus ?? "self-test pending")")
        let watchdog = Watchdog(ledger: ledger, configuration: .init(confirmation: .zero), logger: quiet)
        let task = Task { try await scenario() }
        var found: (Finding, Report)?
        await eventually(ready)
        while found == nil, !Task.isCancelled {
            let report = watchdog.check()
            if let finding = report.findings.first(where: { $0.kind.isLock && $0.certainty == .certain }) {
                found = (finding, report)
            } else {
                await Task.yield()
            }
        }
        task.cancel()
        _ = await task.result
        return try #require(found)
    }

    /// Runs `scenario` to completion under a watchdog that checks all the while with a zero grace
    /// period (so every suspicion shows at once), and returns every lock finding seen.
    private func locksWhileRunning(_ scenario: @escaping @Sendable () async throws -> Void,
                                   checksBeforeRelease: Int = 20, release: @escaping @Sendable () -> Void) async throws -> [Finding] {
        #expect(await TaskTree.verifyRuntimeInspection())
        let watchdog = Watchdog(ledger: ledger, configuration: .init(policy: DetectionPolicy(gracePeriod: .zero), confirmation: .zero),
                                logger: quiet)
        let task = Task { try await scenario() }
        var seen: [Finding] = []
        for _ in 0..<checksBeforeRelease {
            seen += watchdog.check().findings.filter(\.kind.isLock)
            await Task.yield()
        }
        release()
        try await task.value
        seen += watchdog.check().findings.filter(\.kind.isLock)
        return seen
    }

    // MARK: - Structured forms, un-annotated: certain

    @Test(.timeLimit(.minutes(1))) func taskGroup_parkedPermit_isACertainFuturelockWithoutAnnotation() async throws {
        let db = try Semaphore(name: "db", permits: 1, ledger: ledger)
        let (finding, _) = try await certainLock {
            try await withThrowingTaskGroup(of: Permit.self) { group in
                group.addTask { try await db.acquire() }
                while db.availablePermits > 0 { try Task.checkCancellation(); await Task.yield() }
                try await db.acquire().release()
            }
        }
        #expect(finding.kind == .futurelock)
        #expect(finding.summary.contains("finished group child task"))
        #expect(finding.evidence.contains { $0.contains("(group child), which has finished") })
        #expect(finding.holder?.site.fileID.hasSuffix("RuntimeTreeTests.swift") == true)
    }

    @Test(.timeLimit(.minutes(1))) func asyncLet_unawaitedLease_isACertainFuturelockWithoutAnnotation() async throws {
        let pool = try ConnectionPool<Int>(name: "pg", capacity: 1, ledger: ledger, factory: { 7 })
        let (finding, _) = try await certainLock {
            async let prefetched = pool.checkout()
            while pool.leasedCount == 0 {
                try Task.checkCancellation(); await Task.yield()
            }
            try await pool.checkout().release()
            try await prefetched.release()
        }
        #expect(finding.kind == .futurelock)
        #expect(finding.evidence.contains { $0.contains("(async let), which has finished") })
        await pool.shutdown()
    }

    @Test(.timeLimit(.minutes(1))) func discardingGroup_childBlockedBehindItsParent_isACertainFuturelock() async throws {
        let config = try Semaphore(name: "config", permits: 1, ledger: ledger)
        let db = try Semaphore(name: "db", permits: 1, ledger: ledger)
        let (finding, _) = try await certainLock {
            try await config.withPermit {
                try await withThrowingDiscardingTaskGroup { group in
                    group.addTask { try await db.withPermit { try await config.withPermit {} } }
                    while db.availablePermits > 0 { try Task.checkCancellation(); await Task.yield() }
                    try await db.withPermit {}
                }
            }
        }
        #expect(finding.kind == .futurelock)
        #expect(finding.summary.contains("held by its own child task, which is blocked behind it"))
        #expect(finding.resource.name == "db")
    }

    @Test(.timeLimit(.minutes(1))) func nestedGroups_grandchildsPermitReturnedUpAndParked_isCertain() async throws {
        let db = try Semaphore(name: "db", permits: 1, ledger: ledger)
        let (finding, report) = try await certainLock {
            try await withThrowingTaskGroup(of: Permit.self) { outer in
                outer.addTask {
                    try await withThrowingTaskGroup(of: Permit.self) { inner in
                        inner.addTask { try await db.acquire() }
                        return try await inner.next()!
                    }
                }
                while db.availablePermits > 0 { try Task.checkCancellation(); await Task.yield() }
                try await db.acquire().release()
            }
        }
        #expect(finding.kind == .futurelock)
        // The grandchild acquired; the runtime tree relates it to the waiter through its parent.
        let holder = try #require(finding.holder)
        let waiter = try #require(finding.waiter)
        #expect(holder.path.count == 3 && holder.path.first == waiter.path.first)
        let parked = try #require(report.snapshot.holdings.first?.parked)
        #expect(parked.parent == waiter.task && parked.child != holder.task)
    }

    @Test(.timeLimit(.minutes(1))) func nestedGroups_lockOneLevelDown_namesTheChildAsWaiter() async throws {
        let db = try Semaphore(name: "db", permits: 1, ledger: ledger)
        let (finding, _) = try await certainLock {
            try await withThrowingTaskGroup(of: Void.self) { outer in
                outer.addTask {
                    try await withThrowingTaskGroup(of: Permit.self) { inner in
                        inner.addTask { try await db.acquire() }
                        while db.availablePermits > 0 { try Task.checkCancellation(); await Task.yield() }
                        try await db.acquire().release()
                    }
                }
                try await outer.waitForAll()
            }
        }
        #expect(finding.kind == .futurelock)
        #expect(finding.waiter?.path.count == 2, "the waiter is the outer group's child")
    }

    @Test(.timeLimit(.minutes(2))) func reservationReturnedByAChild_with50000SendersQueuedBehind_isCertainAndCountsThem() async throws {
        let requests = try BoundedChannel<Int>(name: "requests", capacity: 1, ledger: ledger)
        let innocents = 50_000
        let culpritWaits = Gate()
        let (finding, _) = try await certainLock(once: { requests.waitingSenderCount == innocents + 1 }) {
            try await withThrowingDiscardingTaskGroup { clients in
                clients.addTask {
                    try await withThrowingTaskGroup(of: SendPermit<Int>.self) { race in
                        race.addTask { try await requests.reserve() }
                        while requests.availableSlots > 0 { try Task.checkCancellation(); await Task.yield() }
                        culpritWaits.open()
                        try await requests.send(1)
                    }
                }
                await culpritWaits.wait()
                for number in 0..<innocents {
                    clients.addTask { try await requests.send(number) }
                }
            }
        }
        #expect(finding.kind == .futurelock)
        #expect(finding.queued == innocents)
        #expect(finding.queuedBySite.count == 1)
    }

    // MARK: - What the proof must not accept, and what it must survive

    @Test(.timeLimit(.minutes(1))) func proof_aPermitOfAnotherLedgersSemaphoreWithTheSameIdsIsNotTakenForOurs() async throws {
        // Two ledgers number their resources alike: both semaphores are resource 1, both permits slot 0.
        let other = Ledger(logger: quiet)
        let ours = try Semaphore(name: "ours", permits: 1, ledger: ledger)
        let theirs = try Semaphore(name: "theirs", permits: 1, ledger: other)
        #expect(ours.id == theirs.id)
        let gate = Gate()
        let locks = try await locksWhileRunning({
            try await withThrowingTaskGroup(of: Permit?.self) { group in
                group.addTask { try await ours.withPermit { await gate.wait() }; return nil }   // running
                group.addTask { try await theirs.acquire() }                                     // finished
                while ours.availablePermits > 0 || theirs.availablePermits > 0 {
                    try Task.checkCancellation(); await Task.yield()
                }
                try await ours.acquire().release()
                for try await permit in group { permit?.release() }
            }
        }, release: gate.open)
        #expect(!locks.contains { $0.certainty == .certain }, "\(locks.map(\.summary))")
    }

    final class Shelf: Sendable {
        let kept = Lock<Permit?>(nil)
    }

    @Test(.timeLimit(.minutes(1))) func proof_aParkedPermitSomeoneElseAlsoHoldsIsNotCertain() async throws {
        let db = try Semaphore(name: "db", permits: 1, ledger: ledger)
        let shelf = Shelf()
        let locks = try await locksWhileRunning({
            try await withThrowingTaskGroup(of: Permit.self) { group in
                group.addTask {
                    let permit = try await db.acquire()
                    shelf.kept.withLock { $0 = permit }        // a second owner, which will release it
                    return permit
                }
                while db.availablePermits > 0 { try Task.checkCancellation(); await Task.yield() }
                try await db.acquire().release()
                _ = try await group.next()
            }
        }, release: { shelf.kept.withLock { $0?.release(); $0 = nil } })
        #expect(!locks.contains { $0.certainty == .certain }, "\(locks.map(\.summary))")
    }

    final class Owner: Sendable {}

    struct Carrier: Sendable {
        weak var observer: Owner?
        unowned let owner: Owner
        let checksum: UInt128
        let permit: Permit?
    }

    @Test(.timeLimit(.minutes(1))) func proof_resultsWithWeakUnownedWideAndOptionalFieldsAreReadSafelyAndProved() async throws {
        let db = try Semaphore(name: "db", permits: 1, ledger: ledger)
        let owner = Owner()
        let (finding, report) = try await certainLock {
            try await withThrowingTaskGroup(of: Carrier.self) { group in
                group.addTask { Carrier(observer: owner, owner: owner, checksum: 42, permit: try await db.acquire()) }
                group.addTask { Carrier(observer: nil, owner: owner, checksum: .max, permit: nil) }
                while db.availablePermits > 0 { try Task.checkCancellation(); await Task.yield() }
                try await db.acquire().release()
            }
        }
        withExtendedLifetime(owner) {}
        #expect(finding.kind == .futurelock)
        #expect(report.snapshot.holdings.first?.parked?.references == 1)
    }

    @Test(.timeLimit(.minutes(1))) func proof_a16ByteAlignedResultIsFoundWhereTheRuntimePutsIt() async throws {
        let db = try Semaphore(name: "db", permits: 1, ledger: ledger)
        let (finding, _) = try await certainLock {
            try await withThrowingTaskGroup(of: (SIMD4<Int32>, Permit).self) { group in
                group.addTask { (SIMD4(1, 2, 3, 4), try await db.acquire()) }
                while db.availablePermits > 0 { try Task.checkCancellation(); await Task.yield() }
                try await db.acquire().release()
            }
        }
        #expect(finding.kind == .futurelock)
    }

    @Test(.timeLimit(.minutes(1))) func claimedHolding_keepsItsNewOwnersAncestry_soAParkedOneIsStillProved() async throws {
        // The child receives its permit from a channel (a claim) and returns it; the parent waits.
        let db = try Semaphore(name: "db", permits: 1, ledger: ledger)
        let delivery = try BoundedChannel<Permit>(name: "delivery", capacity: 1, ledger: ledger)
        let (finding, _) = try await certainLock {
            try await delivery.send(try await db.acquire())
            try await withThrowingTaskGroup(of: Permit?.self) { group in
                group.addTask { try await delivery.receive() }
                while delivery.bufferedCount > 0 { try Task.checkCancellation(); await Task.yield() }
                try await db.acquire().release()
            }
        }
        #expect(finding.kind == .futurelock)
    }

    @Test(.timeLimit(.minutes(1))) func timedAcquireThatWaited_isClaimedWithItsAncestry_andProved() async throws {
        let db = try Semaphore(name: "db", permits: 1, ledger: ledger)
        let (finding, _) = try await certainLock {
            let first = try await db.acquire()
            try await withThrowingTaskGroup(of: Permit.self) { group in
                group.addTask { try await db.acquire(timeout: .seconds(60)) }   // waits, then is handed it
                while db.waitingCount == 0 { try Task.checkCancellation(); await Task.yield() }
                first.release()
                while db.availablePermits > 0 || db.waitingCount > 0 { try Task.checkCancellation(); await Task.yield() }
                try await db.acquire().release()
            }
        }
        #expect(finding.kind == .futurelock)
    }

    @Test(.timeLimit(.minutes(1))) func ledgerNotReadingTheRuntime_recordsNoAncestry() async throws {
        let scoped = Ledger(configuration: .init(readsRuntimeTaskTree: false), logger: quiet)
        let db = try Semaphore(name: "db", permits: 1, ledger: scoped)
        let snapshot = try await withThrowingTaskGroup(of: Permit.self) { group in
            group.addTask { try await db.acquire() }
            let permit = try await group.next()!
            defer { permit.release() }
            return scoped.snapshot()
        }
        #expect(snapshot.nodes.allSatisfy { $0.taskKind == nil && $0.link != .structured })
    }

    // MARK: - The tree itself

    @Test(.timeLimit(.minutes(1))) func snapshot_linksStructuredChildrenAndNotUnstructuredTasks() async throws {
        let lock = try Semaphore(name: "tree", permits: 3, ledger: ledger)
        let gate = Gate()
        let parentID = Locked<TaskID>(.none)
        let scenario = Task {
            parentID.withLock { $0 = TaskID.current }
            async let fromAsyncLet: Void = lock.withPermit { await gate.wait() }
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await lock.withPermit { await gate.wait() } }
                let detached = Task { try await lock.withPermit { await gate.wait() } }
                while lock.availablePermits > 0 { try Task.checkCancellation(); await Task.yield() }
                let snapshot = ledger.snapshot()
                #expect(snapshot.taskTree?.contains("task tree from the Swift runtime") == true)
                let nodes = Dictionary(snapshot.nodes.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
                let kinds = snapshot.holdings.compactMap { nodes[$0.holder] }
                let parent = NodeID.task(parentID.value)
                #expect(kinds.contains { $0.taskKind == .asyncLet && $0.parent == parent && $0.link == .structured })
                #expect(kinds.contains { $0.taskKind == .groupChild && $0.parent == parent && $0.link == .structured })
                #expect(kinds.contains { $0.taskKind == .unstructured && $0.parent == nil })
                gate.open()
                try await detached.value
            }
            try await fromAsyncLet
        }
        try await scenario.value
    }

    // MARK: - Hand-offs: no certain lock

    @Test(.timeLimit(.minutes(1))) func handOff_permitCapturedByATaskThatReleasesIt_isNeverCertain() async throws {
        let workers = try Semaphore(name: "workers", permits: 1, ledger: ledger)
        let gate = Gate()
        let locks = try await locksWhileRunning({
            let permit = try await workers.acquire()
            Task { await gate.wait(); permit.release() }
            try await workers.acquire().release()          // waits for the job
        }, release: gate.open)
        #expect(!locks.contains { $0.certainty == .certain }, "\(locks.map(\.summary))")
    }

    @Test(.timeLimit(.minutes(1))) func handOff_permitThroughAnAsyncStream_isNeverCertain() async throws {
        let slots = try Semaphore(name: "slots", permits: 1, ledger: ledger)
        let gate = Gate()
        let locks = try await locksWhileRunning({
            let (stream, continuation) = AsyncStream.makeStream(of: Permit.self)
            let worker = Task { for await permit in stream { await gate.wait(); permit.release() } }
            continuation.yield(try await slots.acquire())
            try await slots.acquire().release()
            continuation.finish()
            await worker.value
        }, release: gate.open)
        #expect(!locks.contains { $0.certainty == .certain }, "\(locks.map(\.summary))")
    }

    @Test(.timeLimit(.minutes(1))) func handOff_permitThroughABoundedChannel_isRecordedAndNotALock() async throws {
        let gpu = try Semaphore(name: "gpu", permits: 1, ledger: ledger)
        let work = try BoundedChannel<Permit>(name: "work", capacity: 2, ledger: ledger)
        let gate = Gate()
        let locks = try await locksWhileRunning({
            let worker = Task { for try await permit in work { await gate.wait(); permit.release() } }
            try await work.send(try await gpu.acquire())
            try await gpu.acquire().release()
            work.close()
            try await worker.value
        }, release: gate.open)
        #expect(locks.isEmpty, "\(locks.map(\.summary))")
    }

    @Test(.timeLimit(.minutes(1))) func handOff_childPassesItsPermitToASibling_isNotALock() async throws {
        let lock = try Semaphore(name: "index", permits: 1, ledger: ledger)
        let gate = Gate()
        let locks = try await locksWhileRunning({
            let (passed, continuation) = AsyncStream.makeStream(of: Permit.self)
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { continuation.yield(try await lock.acquire()); continuation.finish() }
                group.addTask { for await permit in passed { await gate.wait(); permit.release() } }
                while lock.availablePermits > 0 { try Task.checkCancellation(); await Task.yield() }
                try await lock.acquire().release()
                try await group.waitForAll()
            }
        }, release: gate.open)
        #expect(!locks.contains { $0.certainty == .certain }, "\(locks.map(\.summary))")
    }

    @Test(.timeLimit(.minutes(1))) func nearMiss_runningChildHoldingBriefly_isNotALock() async throws {
        let lock = try Semaphore(name: "cache", permits: 1, ledger: ledger)
        let gate = Gate()
        let locks = try await locksWhileRunning({
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await lock.withPermit { await gate.wait() } }
                while lock.availablePermits > 0 { try Task.checkCancellation(); await Task.yield() }
                try await lock.acquire().release()
                try await group.waitForAll()
            }
        }, release: gate.open)
        #expect(locks.isEmpty, "\(locks.map(\.summary))")
    }

    // MARK: - Without the runtime tree

    @Test(.timeLimit(.minutes(1))) func fallback_withoutTheRuntimeTree_saysSoAndNeverClaimsCertainty() async throws {
        let scoped = Ledger(configuration: .init(readsRuntimeTaskTree: false), logger: quiet)
        #expect(!scoped.taskTreeSource.isAvailable)
        let db = try Semaphore(name: "db", permits: 1, ledger: scoped)
        let watchdog = Watchdog(ledger: scoped, configuration: .init(policy: DetectionPolicy(gracePeriod: .zero),
                                                                     confirmation: .zero), logger: quiet)
        let task = Task {
            try await TaskTree.scope("request") {
                try await withThrowingTaskGroup(of: Tracked<Permit>.self) { group in
                    group.addTask { try await TaskTree.child("fetch") { try await db.acquire() } }
                    while db.availablePermits > 0 { try Task.checkCancellation(); await Task.yield() }
                    try await db.acquire().release()
                }
            }
        }
        var finding: Finding?
        while finding == nil, !Task.isCancelled {
            finding = watchdog.check().findings.first { $0.kind == .futurelock }
            await Task.yield()
        }
        let report = watchdog.check()
        task.cancel()
        _ = await task.result
        #expect(finding?.certainty == .suspected)
        #expect(report.snapshot.taskTree?.contains("named scopes only") == true)
        let text = try report.dump.render(.text, waitThreshold: .seconds(1))
        #expect(text.contains("named scopes only"))
    }
}
