import Logging
import MetricsTestKit
import Testing
@testable import Futurelock

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

@Suite("Watchdog")
struct WatchdogTests {
    let ledger = Ledger()
    let quiet = Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() })

    /// A task that holds `lock` and waits for it again (a real self-deadlock); cancel it to end it.
    /// The outer hold is scoped (`withPermit`), so the permit provably never left the task.
    private func selfDeadlock(_ lock: Semaphore) -> Task<Void, any Error> {
        Task {
            try await TaskTree.scope("reload") {
                try await lock.withPermit {
                    try await lock.acquire().release()
                }
            }
        }
    }

    @Test(.timeLimit(.minutes(1))) func check_onRealSelfDeadlock_isCertainReportedOnceAndResolved() async throws {
        let lock = try Semaphore(name: "config", permits: 1, ledger: ledger)
        let reports = Locked<[Report]>([])
        let watchdog = Watchdog(ledger: ledger, configuration: .init(confirmation: .zero), logger: quiet,
                                handler: { report in reports.withLock { $0.append(report) } })
        #expect(watchdog.check().findings.isEmpty)

        let task = selfDeadlock(lock)
        await eventually { lock.waitingCount == 1 }
        let first = watchdog.check()
        let finding = try #require(first.findings.first)
        #expect(finding.kind == .selfDeadlock)
        #expect(finding.certainty == .certain)
        #expect(first.new.map(\.key) == [finding.key])

        let second = watchdog.check()
        #expect(second.findings.map(\.key) == [finding.key])
        #expect(second.new.isEmpty, "a finding is reported once while it persists")

        task.cancel()
        _ = await task.result
        let third = watchdog.check()
        #expect(third.findings.isEmpty)
        #expect(third.resolved.map(\.key) == [finding.key])
        // The handler saw the appearance and the resolution, not the repeat.
        #expect(reports.value.count == 2)
    }

    @Test(.timeLimit(.minutes(1))) func check_writesTheDumpOfTheMomentToTheConfiguredFile() async throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("futurelock-\(UInt64.random(in: 0...UInt64.max)).jsonl").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        let lock = try Semaphore(name: "config", permits: 1, ledger: ledger)
        let watchdog = Watchdog(ledger: ledger, configuration: .init(dumpPath: path, dumpFormat: .jsonLines, confirmation: .zero),
                                logger: quiet)
        let task = selfDeadlock(lock)
        await eventually { lock.waitingCount == 1 }
        watchdog.check()
        task.cancel()
        _ = await task.result
        let text = try #require(FileManager.default.contents(atPath: path).map { String(decoding: $0, as: UTF8.self) })
        let dump = try JSONLinesDump.read(text)
        #expect(dump.findings.map(\.kind) == [.selfDeadlock])
        #expect(dump.snapshot.waits.count == 1)
    }

    @Test(.timeLimit(.minutes(1))) func run_detectsALockThatFormsWhileRunning() async throws {
        let lock = try Semaphore(name: "config", permits: 1, ledger: ledger)
        let found = AsyncStream<Finding>.makeStream()
        let watchdog = Watchdog(
            ledger: ledger, configuration: .init(interval: .milliseconds(50), waitThreshold: .milliseconds(50),
                                                 confirmation: .milliseconds(50)),
            logger: quiet, handler: { report in for finding in report.new { found.continuation.yield(finding) } })
        let running = Task { await watchdog.run() }
        let task = selfDeadlock(lock)
        var iterator = found.stream.makeAsyncIterator()
        var finding = try #require(await iterator.next())
        #expect(finding.kind == .selfDeadlock)
        if finding.certainty == .suspected {
            // First sighting; the next check that sees it again 50 ms later reports the upgrade.
            #expect(finding.evidence.last?.contains("awaiting confirmation") == true)
            finding = try #require(await iterator.next())
        }
        #expect(finding.kind == .selfDeadlock && finding.certainty == .certain)
        running.cancel()
        task.cancel()
        _ = await task.result
        await running.value
        #expect(watchdog.checksRun >= 1)
    }

    @Test(.timeLimit(.minutes(1))) func race_releasesTheLosersHoldingsBeforeReturning() async throws {
        enum Arm: Sendable { case fetched(Permit), timedOut }
        let db = try Semaphore(name: "db", permits: 1, ledger: ledger)
        let acquired = Gate()
        let arms: [@Sendable () async throws -> Arm] = [
            { let permit = try await db.acquire(); acquired.open(); return Arm.fetched(permit) },
            { await acquired.wait(); return Arm.timedOut },
        ]
        let winner = try await TaskTree.race("fetch-or-timeout", arms, discard: { (arm: Arm) in
            if case .fetched(let permit) = arm { permit.release() }
        })
        if case .fetched(let permit) = winner { permit.release() }
        // Whichever arm won, nothing is left held: the second acquire cannot futurelock.
        #expect(db.availablePermits == 1)
        let again = try await db.acquire(timeout: .seconds(5))
        again.release()
        #expect(ledger.problems.isEmpty)
    }

    @Test func confirm_requiresTheSameEdgesAtLeastTheConfirmationDelayEarlier() throws {
        var fixture = SnapshotFixture()
        let lock = fixture.resource(1, "config")
        let task = fixture.task(7)
        fixture.hold(lock, by: task, task: 7, line: 1, age: 5, pinned: true)
        fixture.wait(lock, by: task, task: 7, line: 2, age: 5)
        let later = fixture.snapshot
        let candidates = Detector.candidates(in: later, policy: DetectionPolicy())
        var earlierFixture = fixture
        earlierFixture.now = fixture.ago(0.2)
        let earlier = earlierFixture.snapshot
        var tooRecentFixture = fixture
        tooRecentFixture.now = fixture.ago(0.01)
        let tooRecent = tooRecentFixture.snapshot
        var differentFixture = earlierFixture
        differentFixture.waits.removeAll()
        let different = differentFixture.snapshot
        let delay = Duration.milliseconds(100)

        #expect(Watchdog.confirm(candidates, in: later, against: earlier, confirmation: delay).map(\.certainty) == [.certain])
        #expect(Watchdog.confirm(candidates, in: later, against: tooRecent, confirmation: delay).map(\.certainty) == [.suspected])
        #expect(Watchdog.confirm(candidates, in: later, against: different, confirmation: delay).map(\.certainty) == [.suspected])
        #expect(Watchdog.confirm(candidates, in: later, against: nil, confirmation: delay).map(\.certainty) == [.suspected])
    }

    @Test(.timeLimit(.minutes(1))) func handedOffPermit_isNeverBlamedOnTheTaskItLeft() async throws {
        let lock = try Semaphore(name: "config", permits: 1, ledger: ledger)
        let watchdog = Watchdog(ledger: ledger, configuration: .init(confirmation: .zero), logger: quiet)
        let handed = Locked<Permit?>(nil)
        let task = Task {
            let permit = try await lock.acquire()
            permit.handOff()                    // another task will release it
            handed.withLock { $0 = permit }
            try await lock.acquire().release()  // waits, but not on itself
        }
        await eventually { lock.waitingCount == 1 }
        #expect(watchdog.check().findings.filter(\.kind.isLock).isEmpty)
        let holding = try #require(ledger.snapshot().holdings.first)
        #expect(holding.holderTask == .none)
        handed.value?.release()
        try await task.value
    }

    @Test(.timeLimit(.minutes(1))) func metrics_gaugesPerResourceAndACounterPerNewFinding() async throws {
        let metrics = TestMetrics()
        var configuration = Watchdog.Configuration(confirmation: .zero)
        configuration.metrics = metrics
        let lock = try Semaphore(name: "config", permits: 1, ledger: ledger)
        let watchdog = Watchdog(ledger: ledger, configuration: configuration, logger: quiet)
        let task = selfDeadlock(lock)
        await eventually { lock.waitingCount == 1 }
        watchdog.check()
        watchdog.check()
        let dimensions = [("resource", "config"), ("kind", "semaphore")]
        #expect(try metrics.expectGauge("futurelock_held", dimensions).lastValue == 1)
        #expect(try metrics.expectGauge("futurelock_waiting", dimensions).lastValue == 1)
        #expect(try metrics.expectGauge("futurelock_findings", [("kind", "selfDeadlock")]).lastValue == 1)
        // Reported once while it persists, though checked twice.
        #expect(try metrics.expectCounter("futurelock_findings_reported_total",
                                          [("kind", "selfDeadlock"), ("certainty", "certain")]).totalValue == 1)
        task.cancel()
        _ = await task.result
        watchdog.check()
        #expect(try metrics.expectGauge("futurelock_findings", [("kind", "selfDeadlock")]).lastValue == 0)
        #expect(try metrics.expectGauge("futurelock_waiting", dimensions).lastValue == 0)
    }

    @Test(.timeLimit(.minutes(1))) func oldestWait_seesWaitersOfEveryPrimitiveKind() async throws {
        #expect(ledger.oldestWait() == nil)
        let channel = try BoundedChannel<Int>(name: "jobs", capacity: 1, ledger: ledger)
        let slot = try await channel.reserve()
        let sender = Task { try await channel.send(1) }
        await eventually { channel.waitingSenderCount == 1 }
        #expect(ledger.oldestWait() != nil)
        sender.cancel()
        _ = await sender.result
        slot.release()
        #expect(ledger.oldestWait() == nil)

        let pool = try ConnectionPool<Int>(name: "db", capacity: 1, ledger: ledger, factory: { 7 })
        let lease = try await pool.checkout()
        let waiter = Task { try await pool.checkout() }
        await eventually { pool.waitingCount == 1 }
        #expect(ledger.oldestWait() != nil)
        waiter.cancel()
        _ = await waiter.result
        lease.release()
        #expect(ledger.oldestWait() == nil)
        await pool.shutdown()
    }
}
