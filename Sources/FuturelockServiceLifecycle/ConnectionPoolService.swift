import Futurelock
import ServiceLifecycle

/// A ``ConnectionPool`` as a swift-service-lifecycle `Service`: it runs the pool's maintenance loop
/// (idle timeout, warm connections, closing broken ones) until the service group shuts down, then
/// shuts the pool down — waiting up to `gracePeriod` for leases still out — and returns once every
/// connection the pool opened has been closed.
///
/// List it *before* the services that use the pool: a service group shuts its services down in
/// reverse order, so those stop first and their leases are back before the pool closes.
///
/// ```swift
/// let pool = try ConnectionPool(name: "db", capacity: 16, factory: connect, close: close)
/// let group = ServiceGroup(services: [ConnectionPoolService(pool), httpServer], logger: logger)
/// try await group.run()
/// ```
public struct ConnectionPoolService<Connection: Sendable>: Service {
    /// The pool being run.
    public let pool: ConnectionPool<Connection>
    /// How long the shutdown waits for leases still out before closing their connections.
    public let gracePeriod: Duration

    /// Wraps `pool` as a service.
    public init(_ pool: ConnectionPool<Connection>, gracePeriod: Duration = .seconds(30)) {
        self.pool = pool
        self.gracePeriod = gracePeriod
    }

    public func run() async throws {
        let pool = self.pool
        await cancelWhenGracefulShutdown {
            await pool.run()
        }
        // Graceful shutdown or cancellation: close the pool. Cancellation ends the grace period at once.
        await pool.shutdown(gracePeriod: gracePeriod)
    }
}
