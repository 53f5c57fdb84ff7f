import Synchronization
import Testing
@testable import Futurelock

/// The task tree as the ledger reconstructs it from task ids and the task-local node chain.
@Suite("Task tree")
struct TaskTreeTests {
    let ledger = Ledger()

    /// Holds a permit of a fresh semaphore until `gate` opens; returns the semaphore for inspection.
    private func holdUntil(_ gate: Gate, _ semaphore: Semaphore) async throws {
        let permit = try await semaphore.acquire()
        await gate.wait()
        permit.release()
    }

    private func node(_ id: NodeID, in snapshot: LedgerSnapshot) throws -> TreeNodeRecord {
        try #require(snapshot.nodes.first { $0.id == id })
    }

    /// The names/ids from a node up to its root, innermost first.
    private func chain(from id: NodeID, in snapshot: LedgerSnapshot) throws -> [String] {
        var result: [String] = []
        var current: NodeID? = id
        while let here = current {
            let record = try node(here, in: snapshot)
            result.append(record.name ?? "task")
            current = record.parent
        }
        return result
    }

    @Test func taskID_isStableWithinATaskAndDistinctAcrossTasks() async {
        let mine = TaskID.current
        #expect(mine != .none)
        #expect(TaskID.current == mine)
        let other = await Task.detached { TaskID.current }.value
        #expect(other != mine)
    }

    @Test(.timeLimit(.minutes(1))) func nestedScopes_recordInnermostScopeWithParents() async throws {
        let semaphore = try Semaphore(name: "s", permits: 1, ledger: ledger)
        let gate = Gate()
        let holder = Task.detached {
            try await TaskTree.scope("outer") {
                try await TaskTree.scope("inner") { try await self.holdUntil(gate, semaphore) }
            }
        }
        await eventually { semaphore.availablePermits == 0 }
        let snapshot = ledger.snapshot()
        let holding = try #require(snapshot.holdings.first)
        guard case .scope = holding.holder else { Issue.record("holder is not a scope"); return }
        #expect(try chain(from: holding.holder, in: snapshot) == ["inner", "outer", "task"])
        let scope = try node(holding.holder, in: snapshot)
        #expect(scope.state == .running && scope.task == holding.holderTask)
        gate.open()
        try await holder.value
    }

    @Test(.timeLimit(.minutes(1))) func taskGroupChild_isChildOfTheScopeThatSpawnedIt() async throws {
        let semaphore = try Semaphore(name: "s", permits: 1, ledger: ledger)
        let gate = Gate()
        let parentTask = Locked<TaskID>(.none)
        let holder = Task.detached {
            try await TaskTree.scope("request") {
                parentTask.withLock { $0 = .current }
                try await withThrowingTaskGroup(of: Void.self) { group in
                    group.addTask { try await self.holdUntil(gate, semaphore) }
                    try await group.waitForAll()
                }
            }
        }
        await eventually { semaphore.availablePermits == 0 }
        let snapshot = ledger.snapshot()
        let holding = try #require(snapshot.holdings.first)
        #expect(holding.holder == .task(holding.holderTask))
        #expect(holding.holderTask != parentTask.value)
        #expect(try chain(from: holding.holder, in: snapshot) == ["task", "request", "task"])
        let scope = try node(try #require(try node(holding.holder, in: snapshot).parent), in: snapshot)
        #expect(scope.task == parentTask.value)
        gate.open()
        try await holder.value
    }

    @Test(.timeLimit(.minutes(1))) func asyncLetChild_isChildOfTheEnclosingScope() async throws {
        let semaphore = try Semaphore(name: "s", permits: 1, ledger: ledger)
        let gate = Gate()
        let holder = Task.detached {
            try await TaskTree.scope("request") {
                async let held: Void = self.holdUntil(gate, semaphore)
                try await held
            }
        }
        await eventually { semaphore.availablePermits == 0 }
        let snapshot = ledger.snapshot()
        let holding = try #require(snapshot.holdings.first)
        #expect(try chain(from: holding.holder, in: snapshot) == ["task", "request", "task"])
        gate.open()
        try await holder.value
    }

    @Test(.timeLimit(.minutes(1))) func unstructuredTask_inheritsTheScope_butDetachedStartsANewRoot() async throws {
        let inherited = try Semaphore(name: "inherited", permits: 1, ledger: ledger)
        let detached = try Semaphore(name: "detached", permits: 1, ledger: ledger)
        let gate = Gate()
        let spawned = Locked<[Task<Void, any Error>]>([])
        try await TaskTree.scope("request") {
            let a = Task { try await self.holdUntil(gate, inherited) }
            let b = Task.detached { try await self.holdUntil(gate, detached) }
            spawned.withLock { $0 = [a, b] }
        }
        await eventually { inherited.availablePermits == 0 && detached.availablePermits == 0 }
        let snapshot = ledger.snapshot()
        let inheritedHolding = try #require(snapshot.holdings.first { $0.resource == inherited.id })
        let detachedHolding = try #require(snapshot.holdings.first { $0.resource == detached.id })
        #expect(try chain(from: inheritedHolding.holder, in: snapshot) == ["task", "request", "task"])
        #expect(try chain(from: detachedHolding.holder, in: snapshot) == ["task"])
        gate.open()
        for task in spawned.value { try await task.value }
    }

    @Test(.timeLimit(.minutes(1))) func scope_afterItReturns_isConsumed() async throws {
        let semaphore = try Semaphore(name: "s", permits: 1, ledger: ledger)
        let permit = try await TaskTree.scope("fetch") { try await semaphore.acquire() }
        let snapshot = ledger.snapshot()
        let holding = try #require(snapshot.holdings.first)
        let scope = try node(holding.holder, in: snapshot)
        #expect(scope.name == "fetch")
        #expect(scope.state == .consumed)
        #expect(scope.closedAt != nil)
        permit.release()
    }

    @Test(.timeLimit(.minutes(1))) func eventHistory_recordsGrantWaitHandOffAndRelease() async throws {
        let ledger = Ledger(configuration: .init(eventHistoryPerResource: 16))
        let semaphore = try Semaphore(name: "events", permits: 1, ledger: ledger)
        let held = try await semaphore.acquire()
        let waiter = Task { try await semaphore.acquire() }
        await eventually { semaphore.waitingCount == 1 }
        held.release()
        // Released by this task, not the waiter that acquired it: the move of ownership is recorded.
        try await waiter.value.release()
        let kinds = ledger.snapshot().events.map(\.kind)
        #expect(kinds == [.grant, .waitStart, .release, .handoff, .waitEnd, .transfer, .release])
        let sequences = ledger.snapshot().events.map(\.sequence)
        #expect(sequences == sequences.sorted())
    }
}
