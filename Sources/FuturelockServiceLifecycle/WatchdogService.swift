import Futurelock
import ServiceLifecycle

/// The watchdog as a swift-service-lifecycle `Service`: it checks at its interval (and early on long
/// waits) until the service group shuts down gracefully or is cancelled, then returns.
///
/// ```swift
/// let group = ServiceGroup(services: [httpServer, WatchdogService(Watchdog())], logger: logger)
/// try await group.run()
/// ```
public struct WatchdogService: Service {
    /// The watchdog being run.
    public let watchdog: Watchdog

    /// Wraps `watchdog` as a service.
    public init(_ watchdog: Watchdog) {
        self.watchdog = watchdog
    }

    public func run() async throws {
        let watchdog = self.watchdog
        await cancelWhenGracefulShutdown {
            await watchdog.run()
        }
    }
}
