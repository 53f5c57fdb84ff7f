// A Futurelock `ConnectionPool` of PostgresNIO connections: the pool a service swaps in for its own,
// with every lease recorded in the ledger. Kept in a target of its own so the core does not pay for
// PostgresNIO's build.

import Futurelock
import Logging
import PostgresNIO
import Synchronization

/// How to reach PostgreSQL, and how the pool manages its connections.
public struct PostgresPoolConfiguration: Sendable {
    public var host: String
    public var port: Int
    public var username: String
    public var password: String?
    public var database: String?
    /// TLS: off by default, which suits a server on loopback or a private network; use
    /// `.require(...)` or `.prefer(...)` with PostgresNIO's TLS configuration otherwise.
    public var tls: PostgresConnection.Configuration.TLS
    /// How long one connection attempt may take (the pool never interrupts a factory call itself).
    public var connectTimeout: Duration
    /// The pool's own settings: idle timeout, lifetime, health checks, attempts and back-off.
    public var pool: ConnectionPool<PostgresConnection>.Configuration

    public init(host: String = "127.0.0.1", port: Int = 5432, username: String, password: String? = nil,
                database: String? = nil, tls: PostgresConnection.Configuration.TLS = .disable,
                connectTimeout: Duration = .seconds(10),
                pool: ConnectionPool<PostgresConnection>.Configuration = .init()) {
        self.host = host; self.port = port; self.username = username; self.password = password
        self.database = database; self.tls = tls; self.connectTimeout = connectTimeout; self.pool = pool
    }

    var connection: PostgresConnection.Configuration {
        var configuration = PostgresConnection.Configuration(host: host, port: port, username: username,
                                                             password: password, database: database, tls: tls)
        let timeout = connectTimeout.components
        configuration.options.connectTimeout = .nanoseconds(timeout.seconds * 1_000_000_000 + timeout.attoseconds / 1_000_000_000)
        return configuration
    }
}

extension ConnectionPool where Connection == PostgresConnection {
    /// A pool of PostgreSQL connections.
    ///
    /// - Each connection is opened with `configuration`; a failed attempt throws PostgresNIO's error
    ///   (`PSQLError`) from the checkout that made it, and the pool backs off before the next attempt.
    /// - An idle connection is checked with `SELECT 1` before it is handed out (see
    ///   ``ConnectionPool/Configuration/healthCheckAfterIdle``); one that fails is closed and replaced.
    /// - Throw `BrokenConnection(error)` from a `withConnection` body when a query shows the connection
    ///   itself is broken; it is closed and its capacity freed.
    public static func postgres(name: String = "postgres", capacity: Int, configuration: PostgresPoolConfiguration,
                                ledger: Ledger = .shared,
                                logger: Logger = Logger(label: "futurelock.postgres")) throws(FuturelockError)
        -> ConnectionPool<PostgresConnection> {
        let connection = configuration.connection
        let ids = ConnectionIDs()
        return try ConnectionPool(
            name: name, capacity: capacity, configuration: configuration.pool, ledger: ledger,
            factory: {
                try await PostgresConnection.connect(configuration: connection,
                                                     id: ids.next(),
                                                     logger: logger)
            },
            close: { connection in try? await connection.close() },
            healthCheck: { connection in
                do {
                    for try await _ in try await connection.query("SELECT 1", logger: logger) {}
                    return true
                } catch {
                    return false
                }
            })
    }
}

/// Numbers the pool's connections for PostgresNIO's logs.
private final class ConnectionIDs: Sendable {
    private let last = Atomic<Int>(0)
    func next() -> Int { last.wrappingAdd(1, ordering: .relaxed).newValue }
}
