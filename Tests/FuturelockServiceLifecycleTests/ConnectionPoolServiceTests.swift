import Futurelock
import FuturelockServiceLifecycle
import Logging
import ServiceLifecycle
import ServiceLifecycleTestKit
import Synchronization
import Testing

@Suite("Connection pool service")
struct ConnectionPoolServiceTests {
    private final class Server: Sendable {
        let opened = Atomic<Int>(0)
        let closed = Atomic<Int>(0)
        func connect() -> Int { opened.wrappingAdd(1, ordering: .relaxed).newValue }
        func close(_: Int) { closed.wrappingAdd(1, ordering: .relaxed) }
    }

    /// The service warms the pool up while it runs, and on graceful shutdown waits for the lease still
    /// out, then closes every connection before it returns.
    @Test(.timeLimit(.minutes(1))) func gracefulShutdown_waitsForLeasesAndClosesEverything() async throws {
        let server = Server()
        var configuration = ConnectionPool<Int>.Configuration()
        configuration.minimumConnections = 2
        configuration.maintenanceInterval = .milliseconds(10)
        let pool = try ConnectionPool(name: "db", capacity: 4, configuration: configuration, ledger: Ledger(),
                                      factory: { server.connect() }, close: { server.close($0) })
        try await testGracefulShutdown { trigger in
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await ConnectionPoolService(pool, gracePeriod: .seconds(30)).run() }
                while pool.openCount < 2, !Task.isCancelled { await Task.yield() }
                let lease = try await pool.checkout()
                trigger.triggerGracefulShutdown()
                while !pool.isShutdown, !Task.isCancelled { await Task.yield() }
                #expect(pool.openCount >= 1, "the lease still out keeps its connection during the grace period")
                lease.release()
                try await group.waitForAll()
            }
        }
        #expect(pool.openCount == 0)
        #expect(server.opened.load(ordering: .relaxed) == server.closed.load(ordering: .relaxed))
        #expect(pool.statistics.leasesRevoked == 0)
    }
}
