import Foundation
import Futurelock
import FuturelockPostgres
import Logging
import PostgresNIO
import Testing

/// The server `Tests/run-tests.sh` starts (see `Tests/postgres-server.sh`).
enum TestServer {
    struct NotRunning: Error, CustomStringConvertible {
        var description: String {
            "no PostgreSQL server for the tests: FUTURELOCK_PG_PORT is not set. Run `bash Tests/run-tests.sh`, which starts one on loopback."
        }
    }

    static func configuration(capacity: Int = 8) throws -> PostgresPoolConfiguration {
        let environment = ProcessInfo.processInfo.environment
        guard let port = environment["FUTURELOCK_PG_PORT"].flatMap(Int.init) else { throw NotRunning() }
        var configuration = PostgresPoolConfiguration(host: environment["FUTURELOCK_PG_HOST"] ?? "127.0.0.1", port: port,
                                                      username: environment["FUTURELOCK_PG_USER"] ?? "futurelock",
                                                      database: "postgres")
        configuration.connectTimeout = .seconds(5)
        return configuration
    }

    static let logger = Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() })
}

@Suite("FuturelockPostgres against a real server", .serialized)
struct PostgresPoolTests {
    let logger = TestServer.logger

    @Test(.timeLimit(.minutes(2))) func queries_underConcurrency_hundredsOfTasksOverAPoolOfEight() async throws {
        let ledger = Ledger()
        let pool = try ConnectionPool.postgres(capacity: 8, configuration: try TestServer.configuration(), ledger: ledger,
                                               logger: logger)
        let logger = self.logger
        let sum = try await withThrowingTaskGroup(of: Int.self, returning: Int.self) { group in
            for i in 0..<300 {
                group.addTask {
                    try await pool.withConnection { connection in
                        var value = 0
                        for try await row in try await connection.query("SELECT \(i)::int8 + 1", logger: logger).decode(Int.self) {
                            value = row
                        }
                        return value
                    }
                }
            }
            return try await group.reduce(0, +)
        }
        #expect(sum == (1...300).reduce(0, +), "every query answered with its own value")
        #expect(pool.openCount <= 8 && pool.leasedCount == 0 && pool.waitingCount == 0)
        #expect(pool.statistics.connectionAttempts <= 8 && pool.statistics.failedAttempts == 0)
        await pool.shutdown(gracePeriod: .seconds(5))
        #expect(pool.openCount == 0)
    }

    /// A server that is not there: the checkout gets PostgresNIO's error at once — not after its
    /// timeout — and the pool holds nothing afterwards.
    @Test(.timeLimit(.minutes(2))) func serverDown_theCheckoutFailsAtOnceWithTheDriversError() async throws {
        var configuration = try TestServer.configuration()
        configuration.port = 1  // nothing listens on port 1 of loopback
        let pool = try ConnectionPool.postgres(capacity: 2, configuration: configuration, ledger: Ledger(), logger: logger)
        let start = ContinuousClock.now
        await #expect(throws: PSQLError.self) { try await pool.checkout(timeout: .seconds(20)) }
        #expect(start.duration(to: .now) < .seconds(10), "the error must not wait for the timeout")
        #expect(pool.openCount == 0 && pool.creatingCount == 0 && pool.leasedCount == 0)
        #expect(pool.statistics.failedAttempts == 1)
        await pool.shutdown(gracePeriod: .zero)
    }
}
