import Testing
@testable import Futurelock

/// What a holding record keeps alive, and the backtraces it points at.
///
/// A stamp is trivially copyable and refers to its scope node without retaining it; the holding
/// slab retains the node for as long as the holding is recorded. These tests watch the node through a
/// weak reference, so a missing retain (the node freed under a live holding) or a missing release
/// (the node never freed) both fail.
@Suite("Ledger records")
struct LedgerRecordTests {
    /// Acquires inside a scope that ends before the permit is released; returns the permit and a
    /// weak view of the scope's node.
    private func acquireInScope(_ semaphore: Semaphore) async throws -> (Permit, WeakNode) {
        try await TaskTree.scope("short-lived") {
            let node = try #require(TaskTree.currentNode)
            return (try await semaphore.acquire(), WeakNode(node))
        }
    }

    @Test(.timeLimit(.minutes(1)))
    func holding_keepsItsScopeNodeAliveUntilReleased() async throws {
        let ledger = Ledger()
        let semaphore = try Semaphore(name: "s", permits: 1, ledger: ledger)
        let (permit, weak) = try await acquireInScope(semaphore)
        // The scope has returned; only the holding record keeps the node.
        #expect(weak.node != nil, "the holding record must keep its scope node alive")
        let snapshot = ledger.snapshot()
        let holding = try #require(snapshot.holdings.first)
        let record = try #require(snapshot.nodes.first { $0.id == holding.holder })
        #expect(record.name == "short-lived")
        #expect(record.state == .consumed)
        permit.release()
        #expect(weak.node == nil, "releasing the holding must release its scope node")
    }

    @Test(.timeLimit(.minutes(1)))
    func claim_movesTheRetainFromTheOldNodeToTheNew() async throws {
        let ledger = Ledger()
        let semaphore = try Semaphore(name: "s", permits: 1, ledger: ledger)
        let (permit, first) = try await acquireInScope(semaphore)
        let second = try await Task.detached {
            try await TaskTree.scope("claimer") {
                permit.claim()
                return WeakNode(try #require(TaskTree.currentNode))
            }
        }.value
        #expect(first.node == nil, "after the claim nothing should hold the acquiring scope")
        #expect(second.node != nil, "the claiming scope is now the holder's node")
        let holding = try #require(ledger.snapshot().holdings.first)
        guard case .scope = holding.holder else {
            Issue.record("holder is \(holding.holder), expected the claiming scope")
            return
        }
        permit.release()
        #expect(second.node == nil)
    }

    @Test(.timeLimit(.minutes(1)))
    func droppedPermit_releasesItsScopeNode() async throws {
        let ledger = Ledger()
        let semaphore = try Semaphore(name: "s", permits: 1, ledger: ledger)
        var weak: WeakNode?
        do {
            let (permit, node) = try await acquireInScope(semaphore)
            weak = node
            _ = permit
        }
        #expect(weak?.node == nil)
        #expect(ledger.problems.map(\.kind) == [.droppedWithoutRelease])
        #expect(semaphore.availablePermits == 1)
    }

    /// Takes `count` permits, all from the same line, with backtraces captured every `every`th time.
    private func holdAll(_ count: Int, backtraceEvery every: Int) throws -> (Ledger, [Permit]) {
        let ledger = Ledger(configuration: .init(backtraceEvery: every))
        let semaphore = try Semaphore(name: "s", permits: count, ledger: ledger)
        var permits: [Permit] = []
        for _ in 0..<count { permits.append(try #require(semaphore.tryAcquire())) }
        return (ledger, permits)
    }

    @Test(.timeLimit(.minutes(1)))
    func backtraces_areCapturedOnRequestAndInterned() async throws {
        let (ledger, permits) = try holdAll(2, backtraceEvery: 1)
        defer { for permit in permits { permit.release() } }
        let traces = ledger.snapshot().holdings.compactMap(\.backtrace)
        try #require(traces.count == 2)
        #expect(traces.allSatisfy { !$0.isEmpty })
        // Both came from the same line of the same loop: one interned object serves both.
        #expect(traces[0] == traces[1])
        let interned = BacktraceCapture.intern(traces[0])
        #expect(interned?.takeUnretainedValue() === BacktraceCapture.intern(traces[0])?.takeUnretainedValue())
    }

    @Test(.timeLimit(.minutes(1)))
    func backtraces_everyNth() async throws {
        let (ledger, permits) = try holdAll(6, backtraceEvery: 3)
        defer { for permit in permits { permit.release() } }
        #expect(ledger.snapshot().holdings.filter { $0.backtrace != nil }.count == 2)
    }

    @Test(.timeLimit(.minutes(1)))
    func backtraces_offByDefault() throws {
        let ledger = Ledger()
        let semaphore = try Semaphore(name: "s", permits: 1, ledger: ledger)
        let permit = try #require(semaphore.tryAcquire())
        #expect(ledger.snapshot().holdings.first?.backtrace == nil)
        permit.release()
    }
}

/// A weak view of a scope node, to see when it is freed.
final class WeakNode: @unchecked Sendable {
    // Written once in init; read by the test after the writers are done.
    weak var node: ScopeNode?
    init(_ node: ScopeNode) { self.node = node }
}
