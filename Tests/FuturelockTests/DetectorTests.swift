import Testing
@testable import Futurelock

/// Every finding kind, and the near misses that must not be reported, on exact ledger states.
@Suite("Detector")
struct DetectorTests {
    /// P (task 1) › request (scope 10) › child task 2 › `fetch` (scope 11, in `state`) holds `db`;
    /// P waits for `db` in `request`.
    private func parkedChild(state: ScopeNode.State, holdAge: Double = 2, waitAge: Double = 2,
                             proved: Bool = false) -> SnapshotFixture {
        var fixture = SnapshotFixture()
        let db = fixture.resource(1, "db")
        let parent = fixture.task(1)
        let request = fixture.scope(10, "request", task: 1, parent: parent)
        let child = fixture.task(2, parent: request, link: .structured, kind: .groupChild,
                                 state: proved ? .finished : nil)
        let fetch = fixture.scope(11, "fetch", task: 2, parent: child, state: state)
        fixture.hold(db, by: fetch, task: 2, line: 31, age: holdAge,
                     parked: proved ? SnapshotFixture.parked(child: 2, in: 1) : nil)
        fixture.wait(db, by: request, task: 1, line: 40, age: waitAge)
        return fixture
    }

    @Test func futurelock_whenRuntimeProvesTheParkedResult_isCertain() throws {
        let findings = parkedChild(state: .finished, proved: true).findings()
        #expect(findings.count == 1)
        let finding = try #require(findings.first)
        #expect(finding.kind == .futurelock)
        #expect(finding.certainty == .certain)
        #expect(finding.evidence.contains { $0.contains("held only by the result of task 2 (group child)") })
        #expect(finding.holder?.task == TaskID(rawValue: 2))
        #expect(finding.holder?.site.line == 31)
        #expect(finding.holder?.path == ["task 1", "request", "task 2", "fetch"])
        #expect(finding.waiter?.task == TaskID(rawValue: 1))
        #expect(finding.waiter?.site.line == 40)
        #expect(finding.resource.name == "db")
        #expect(finding.summary.contains("'fetch'"))
        #expect(finding.fix.contains("drain the task group"))
        #expect(finding.gracePeriod == nil)
    }

    @Test func futurelock_whenOnlyTheAnnotationSaysFinished_isSuspected() throws {
        let finding = try #require(parkedChild(state: .finished).findings().first)
        #expect(finding.kind == .futurelock)
        #expect(finding.certainty == .suspected)
        #expect(finding.summary.contains("'fetch'"))
        #expect(finding.evidence.contains { $0.contains("its scope 'fetch' has finished") && $0.contains("may have been passed on") })
    }

    @Test func futurelock_whenChildScopeWasCancelled_isReported() {
        #expect(parkedChild(state: .cancelled).findings().map(\.kind) == [.futurelock])
    }

    @Test func futurelock_unannotatedChildTheRuntimeShowsFinishedButUnproved_isSuspectedAfterGrace() throws {
        func fixture(age: Double) -> SnapshotFixture {
            var fixture = SnapshotFixture()
            let db = fixture.resource(1, "db")
            let parent = fixture.task(1)
            let child = fixture.task(2, parent: parent, link: .structured, kind: .asyncLet, state: .finished)
            fixture.hold(db, by: child, task: 2, line: 31, age: age)
            fixture.wait(db, by: parent, task: 1, line: 40, age: age)
            return fixture
        }
        let policy = DetectionPolicy(gracePeriod: .seconds(1))
        #expect(fixture(age: 0.5).findings(policy).isEmpty)
        let finding = try #require(fixture(age: 1.5).findings(policy).first)
        #expect(finding.kind == .futurelock && finding.certainty == .suspected)
        #expect(finding.evidence.contains { $0.contains("the runtime shows finished") })
    }

    @Test func nearMiss_structuredChildTheRuntimeShowsRunning_isNotReported() {
        for state in [RuntimeTaskState.running, .enqueued, .suspended] {
            var fixture = SnapshotFixture()
            let db = fixture.resource(1, "db")
            let parent = fixture.task(1)
            let child = fixture.task(2, parent: parent, link: .structured, kind: .groupChild, state: state)
            fixture.hold(db, by: child, task: 2, line: 31, age: 30)
            fixture.wait(db, by: parent, task: 1, line: 40, age: 30)
            #expect(fixture.findings().filter(\.kind.isLock).isEmpty, "child \(state)")
        }
    }

    @Test func futurelock_grandchildPermitProvedInTheChildsResult_isCertain() throws {
        var fixture = SnapshotFixture()
        let db = fixture.resource(1, "db")
        let parent = fixture.task(1)
        let child = fixture.task(2, parent: parent, link: .structured, kind: .groupChild, state: .finished)
        let grandchild = fixture.task(3, parent: child, link: .structured, kind: .groupChild)
        // The grandchild acquired; its result went up into the child's, which is parked in the parent.
        fixture.hold(db, by: grandchild, task: 3, line: 31, age: 0.1, parked: SnapshotFixture.parked(child: 2, in: 1))
        fixture.wait(db, by: parent, task: 1, line: 40, age: 0.1)
        let finding = try #require(fixture.findings().first)
        #expect(finding.kind == .futurelock && finding.certainty == .certain)
        #expect(finding.holder?.path == ["task 1", "task 2", "task 3"])
    }

    @Test func futurelock_childBlockedBehindItsParent_isAFuturelockNotADeadlock() throws {
        var fixture = SnapshotFixture()
        let config = fixture.resource(1, "config"), db = fixture.resource(2, "db")
        let parent = fixture.task(1)
        let child = fixture.task(2, parent: parent, link: .structured, kind: .asyncLet, state: .suspended)
        fixture.hold(config, by: parent, task: 1, line: 10, age: 2, pinned: true)
        fixture.hold(db, by: child, task: 2, line: 20, age: 2, pinned: true)
        fixture.wait(config, by: child, task: 2, line: 21, age: 2)
        fixture.wait(db, by: parent, task: 1, line: 11, age: 2)
        let finding = try #require(fixture.findings().first)
        #expect(fixture.findings().count == 1)
        #expect(finding.kind == .futurelock && finding.certainty == .certain)
        #expect(finding.waiter?.task == TaskID(rawValue: 1))
        #expect(finding.summary.contains("blocked behind it"))
    }

    @Test func nearMiss_childThatHoldsIsStillRunning_isNotReported() {
        #expect(parkedChild(state: .running).findings().isEmpty)
    }

    @Test func futurelock_unannotatedChildTask_isSuspectedOnlyAfterGracePeriod() throws {
        func fixture(age: Double) -> SnapshotFixture {
            var fixture = SnapshotFixture()
            let db = fixture.resource(1, "db")
            let parent = fixture.task(1)
            let request = fixture.scope(10, "request", task: 1, parent: parent)
            let child = fixture.task(2, parent: request)
            fixture.hold(db, by: child, task: 2, line: 31, age: age)
            fixture.wait(db, by: request, task: 1, line: 40, age: age)
            return fixture
        }
        let policy = DetectionPolicy(gracePeriod: .seconds(1))
        #expect(fixture(age: 0.5).findings(policy).isEmpty)
        let finding = try #require(fixture(age: 1.5).findings(policy).first)
        #expect(finding.kind == .futurelock)
        #expect(finding.certainty == .suspected)
        #expect(finding.gracePeriod == 1)
        #expect(finding.evidence.contains { $0.contains("grace period") })
    }

    private func selfHeld(pinned: Bool, age: Double) -> SnapshotFixture {
        var fixture = SnapshotFixture()
        let lock = fixture.resource(1, "config-lock")
        let task = fixture.task(7)
        let reload = fixture.scope(70, "reload", task: 7, parent: task)
        fixture.hold(lock, by: reload, task: 7, line: 21, age: age, pinned: pinned)
        fixture.wait(lock, by: reload, task: 7, line: 32, age: age)
        return fixture
    }

    @Test func selfDeadlock_whenTaskWaitsForWhatItHoldsPinned_isCertain() throws {
        let fixture = selfHeld(pinned: true, age: 0.1)
        let finding = try #require(fixture.findings().first)
        #expect(fixture.findings().count == 1)
        #expect(finding.kind == .selfDeadlock && finding.certainty == .certain)
        #expect(finding.holder?.site.line == 21 && finding.waiter?.site.line == 32)
    }

    @Test func selfDeadlock_whenTheHoldingIsAPermitObject_isOnlySuspectedAfterGrace() throws {
        // A `Permit` the task holds may have been handed to a `Task {}` that releases it later: the
        // everyday bounded-concurrency loop looks exactly like this.
        let policy = DetectionPolicy(gracePeriod: .seconds(1))
        #expect(selfHeld(pinned: false, age: 0.5).findings(policy).isEmpty)
        let finding = try #require(selfHeld(pinned: false, age: 3).findings(policy).first)
        #expect(finding.kind == .selfDeadlock && finding.certainty == .suspected)
        #expect(finding.evidence.contains { $0.contains("may have handed to another task") && $0.contains("withPermit") })
    }

    @Test func deadlock_ABBA_withPermitObjects_isSuspected() throws {
        var fixture = SnapshotFixture()
        let a = fixture.resource(1, "A"), b = fixture.resource(2, "B")
        let t1 = fixture.task(1), t2 = fixture.task(2)
        fixture.hold(a, by: t1, task: 1, line: 10, age: 2)
        fixture.hold(b, by: t2, task: 2, line: 20, age: 2)
        fixture.wait(b, by: t1, task: 1, line: 11, age: 2)
        fixture.wait(a, by: t2, task: 2, line: 21, age: 2)
        let finding = try #require(fixture.findings().first)
        #expect(finding.kind == .deadlock && finding.certainty == .suspected)
        #expect(finding.evidence.contains { $0.contains("may have handed to another task") })
        #expect(finding.gracePeriod == 1)
        // Younger than the grace period, permit objects prove nothing yet: no finding at all.
        #expect(fixture.findings(DetectionPolicy(gracePeriod: .seconds(5))).filter(\.kind.isLock).isEmpty)
    }

    @Test func deadlock_ABBA_isOneCertainFindingWithTheCycle() throws {
        var fixture = SnapshotFixture()
        let a = fixture.resource(1, "A"), b = fixture.resource(2, "B")
        let t1 = fixture.task(1), t2 = fixture.task(2)
        fixture.hold(a, by: t1, task: 1, line: 10, age: 2, pinned: true)
        fixture.hold(b, by: t2, task: 2, line: 20, age: 2, pinned: true)
        fixture.wait(b, by: t1, task: 1, line: 11, age: 2)
        fixture.wait(a, by: t2, task: 2, line: 21, age: 2)
        let findings = fixture.findings()
        #expect(findings.count == 1)
        let finding = try #require(findings.first)
        #expect(finding.kind == .deadlock && finding.certainty == .certain)
        #expect(finding.cycle.count == 2)
        #expect(finding.summary.contains("2 tasks"))
    }

    @Test func deadlock_threeTaskCycle_withVictimsQueuedBehind() throws {
        var fixture = SnapshotFixture()
        let r = (1...3).map { fixture.resource(UInt64($0), "r\($0)") }
        let tasks = (1...3).map { fixture.task(UInt64($0)) }
        for i in 0..<3 {
            fixture.hold(r[i], by: tasks[i], task: UInt64(i + 1), line: UInt(10 + i), age: 2, pinned: true)
        }
        for i in 0..<3 {
            fixture.wait(r[(i + 1) % 3], by: tasks[i], task: UInt64(i + 1), line: UInt(20 + i), age: 2)
        }
        // Five innocent tasks wait for r1 at two sites.
        for victim in 0..<5 {
            let node = fixture.task(UInt64(100 + victim))
            fixture.wait(r[0], by: node, task: UInt64(100 + victim), line: victim < 3 ? 50 : 60, age: 1)
        }
        let findings = fixture.findings()
        #expect(findings.map(\.kind) == [.deadlock])
        let finding = try #require(findings.first)
        #expect(finding.cycle.count == 3)
        // The five innocents wait on r1, a resource of the cycle: they are counted, grouped by site.
        #expect(finding.queued == 5)
        #expect(finding.queuedBySite.map(\.count) == [3, 2])
    }

    @Test func nearMiss_longButProgressingQueue_isAStallNotALock() throws {
        var fixture = SnapshotFixture()
        let db = fixture.resource(1, "db", capacity: 2)
        let worker1 = fixture.task(1), worker2 = fixture.task(2)
        fixture.hold(db, by: worker1, task: 1, line: 10, age: 8)
        fixture.hold(db, by: worker2, task: 2, line: 10, age: 8)
        for waiter in 0..<50 {
            fixture.wait(db, by: fixture.task(UInt64(100 + waiter)), task: UInt64(100 + waiter), line: 30, age: 7)
        }
        let policy = DetectionPolicy(stallThreshold: .seconds(5))
        let findings = fixture.findings(policy)
        #expect(findings.map(\.kind) == [.stall])
        #expect(findings.first?.queued == 49)
        #expect(findings.first?.queuedBySite == [Finding.QueueGroup(site: SnapshotFixture.site(30), count: 49)])
        // Below the threshold it is not even a stall.
        #expect(fixture.findings(DetectionPolicy(stallThreshold: .seconds(60))).isEmpty)
    }

    @Test func nearMiss_scopeReleasedBeforeParentAcquires_isNotReported() {
        var fixture = SnapshotFixture()
        let db = fixture.resource(1, "db", available: 1)
        let parent = fixture.task(1)
        let request = fixture.scope(10, "request", task: 1, parent: parent)
        _ = fixture.scope(11, "fetch", task: 2, parent: fixture.task(2, parent: request), state: .finished)
        // Nothing held: the fetch released before it finished; the parent holds the permit now.
        fixture.hold(db, by: request, task: 1, line: 12, age: 2)
        #expect(fixture.findings().isEmpty)
    }

    @Test func nearMiss_permitHandedToAnotherTaskOnPurpose_isNotReported() {
        var fixture = SnapshotFixture()
        let db = fixture.resource(1, "db")
        let parent = fixture.task(1)
        let worker = fixture.task(9)           // claimed the permit; not in the parent's tree, not waiting
        fixture.hold(db, by: worker, task: 9, line: 12, age: 2)
        fixture.wait(db, by: parent, task: 1, line: 13, age: 2)
        #expect(fixture.findings().filter(\.kind.isLock).isEmpty)
    }

    @Test func nearMiss_oneOfTwoPermitsHeldByAFreeTask_isNotALock() {
        var fixture = SnapshotFixture()
        let db = fixture.resource(1, "db", capacity: 2)
        let parent = fixture.task(1)
        fixture.hold(db, by: parent, task: 1, line: 10, age: 2)
        fixture.hold(db, by: fixture.task(5), task: 5, line: 11, age: 2)
        fixture.wait(db, by: parent, task: 1, line: 12, age: 2)
        #expect(fixture.findings().filter(\.kind.isLock).isEmpty)
    }

    @Test func receiveWaits_neverFormLocks() {
        var fixture = SnapshotFixture()
        let channel = fixture.resource(1, "jobs", kind: .channel, capacity: 1, available: 1)
        let task = fixture.task(1)
        fixture.wait(channel, by: task, task: 1, line: 5, age: 2, kind: .receive)
        #expect(fixture.findings().filter(\.kind.isLock).isEmpty)
    }

    @Test func futurelock_incidentShape_countsInnocentClientsGroupedBySite() throws {
        var fixture = SnapshotFixture()
        let requests = fixture.resource(1, "pool-requests", kind: .channel)
        let client = fixture.task(1)
        let scope = fixture.scope(10, "client", task: 1, parent: client)
        let arm = fixture.scope(11, "request-connection", task: 2,
                                parent: fixture.task(2, parent: scope, link: .structured, kind: .groupChild, state: .finished),
                                state: .finished)
        fixture.hold(requests, by: arm, task: 2, line: 94, age: 2, kind: .sendSlot,
                     parked: SnapshotFixture.parked(child: 2, in: 1))
        fixture.wait(requests, by: scope, task: 1, line: 114, age: 2, kind: .send)
        for innocent in 0..<1000 {
            let id = UInt64(1000 + innocent)
            fixture.wait(requests, by: fixture.task(id), task: id, line: 75, age: 1, kind: .send)
        }
        let pool = fixture.task(3)
        fixture.wait(requests, by: pool, task: 3, line: 38, age: 2, kind: .receive)
        let findings = fixture.findings()
        #expect(findings.map(\.kind) == [.futurelock])
        let finding = try #require(findings.first)
        #expect(finding.certainty == .certain)
        #expect(finding.queued == 1000)
        #expect(finding.queuedBySite == [Finding.QueueGroup(site: SnapshotFixture.site(75), count: 1000)])
        #expect(finding.fix.contains("SendPermit"))
    }

    @Test func leak_finishedScopeHoldingLongWithNobodyStuck_isSuspectedLeak() throws {
        var fixture = SnapshotFixture()
        let db = fixture.resource(1, "db", capacity: 2, available: 1)
        let parent = fixture.task(1)
        let arm = fixture.scope(11, "loser", task: 2, parent: fixture.task(2, parent: parent), state: .finished)
        fixture.hold(db, by: arm, task: 2, line: 31, age: 20)
        let policy = DetectionPolicy(leakThreshold: .seconds(10))
        let finding = try #require(fixture.findings(policy).first)
        #expect(finding.kind == .leak && finding.certainty == .suspected)
        #expect(fixture.findings(DetectionPolicy(leakThreshold: .seconds(30))).isEmpty)
    }

    @Test func leak_droppedWithoutRelease_isCertain() throws {
        var fixture = SnapshotFixture()
        fixture.resource(1, "db", available: 1)
        fixture.problems.append(LedgerProblem(
            kind: .droppedWithoutRelease, resource: ResourceID(rawValue: 1), resourceName: "db", holdingKind: .permit,
            acquiredAt: SnapshotFixture.site(44), acquiredBy: TaskID(rawValue: 3), releasedAt: nil, releasedBy: nil,
            time: fixture.ago(1)))
        let finding = try #require(fixture.findings().first)
        #expect(finding.kind == .leak && finding.certainty == .certain)
        #expect(finding.holder?.site.line == 44)
    }

    @Test func groupedNumbers_useThousandsSeparators() {
        #expect(Detector.grouped(179_998) == "179,998")
        #expect(Detector.grouped(7) == "7")
        #expect(Detector.grouped(1000) == "1,000")
    }
}
