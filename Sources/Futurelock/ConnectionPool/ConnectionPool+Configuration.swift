extension ConnectionPool {
    /// How a pool manages its connections over time. Every default is one a service can take as it
    /// is; each field says what it protects against.
    ///
    /// ```swift
    /// var configuration = ConnectionPool<PGConnection>.Configuration()
    /// configuration.minimumConnections = 2          // keep two warm for the first requests
    /// configuration.maximumLifetime = .seconds(600) // recycle every 10 minutes (a proxy rotates)
    /// let pool = try ConnectionPool(name: "db", capacity: 16, configuration: configuration,
    ///                               factory: { try await connect() }, close: { await $0.close() },
    ///                               healthCheck: { (try? await $0.ping()) != nil })
    /// ```
    public struct Configuration: Sendable, Hashable {
        /// Connections kept open while the pool runs, even when idle; ``ConnectionPool/run()`` opens
        /// them in the background, and idle timeouts never close below this number. 0 opens
        /// connections only when a checkout needs one.
        public var minimumConnections: Int = 0

        /// An idle connection beyond ``minimumConnections`` that has not been used for this long is
        /// closed by ``ConnectionPool/run()``, so the pool shrinks after a burst. `nil`: never.
        public var idleTimeout: Duration? = .seconds(60)

        /// A connection older than this is closed instead of being handed out or put back idle, so
        /// connections are recycled (server-side memory, a rotated proxy or credentials). `nil`: never.
        public var maximumLifetime: Duration? = .seconds(30 * 60)

        /// With a health check given to the pool: a connection that has been idle at least this long
        /// is checked before it is handed out; one that fails is closed and replaced. `.zero` checks
        /// every time an idle connection is handed out. Connections handed straight from one lease to
        /// the next waiter are not checked (they were just in use).
        public var healthCheckAfterIdle: Duration = .seconds(1)

        /// The most factory calls in flight at once. Bounds the burst of connection attempts when
        /// many checkouts arrive together — or when the server is down.
        public var maximumConcurrentConnectionAttempts: Int = 2

        /// How long to wait before the next connection attempt after attempts fail.
        public var backoff = Backoff()

        /// How often ``ConnectionPool/run()`` closes expired and broken connections and opens the
        /// minimum.
        public var maintenanceInterval: Duration = .seconds(1)

        /// The defaults above.
        public init() {}

        /// Exponential back-off after failed connection attempts: after *n* consecutive failures the
        /// next attempt waits `initial × multiplier^(n−1)`, at most `maximum`, varied by ±`jitter` (a
        /// fraction) so that many service instances do not retry in step. One success resets it.
        public struct Backoff: Sendable, Hashable {
            public var initial: Duration = .milliseconds(100)
            public var maximum: Duration = .seconds(1)
            public var multiplier: Double = 2
            public var jitter: Double = 0.2

            /// 100 ms, doubling up to 1 s, ±20 %.
            public init() {}

            public init(initial: Duration, maximum: Duration, multiplier: Double = 2, jitter: Double = 0.2) {
                self.initial = initial; self.maximum = maximum; self.multiplier = multiplier; self.jitter = jitter
            }

            /// The delay after `failures` consecutive failures (at least 1), before jitter.
            public func delay(afterFailures failures: Int) -> Duration {
                guard failures > 0 else { return .zero }
                var delay = initial
                for _ in 1..<min(failures, 64) {
                    delay = delay * multiplier
                    if delay >= maximum { return maximum }
                }
                return min(delay, maximum)
            }
        }

        /// Why this configuration cannot be used with `capacity`, or `nil` if it can.
        func problem(capacity: Int) -> String? {
            if minimumConnections < 0 || minimumConnections > capacity {
                return "minimumConnections must be between 0 and the capacity (\(capacity)), got \(minimumConnections)"
            }
            if let idleTimeout, idleTimeout <= .zero { return "idleTimeout must be positive or nil, got \(idleTimeout)" }
            if let maximumLifetime, maximumLifetime <= .zero {
                return "maximumLifetime must be positive or nil, got \(maximumLifetime)"
            }
            if healthCheckAfterIdle < .zero { return "healthCheckAfterIdle must be zero or positive, got \(healthCheckAfterIdle)" }
            if maximumConcurrentConnectionAttempts < 1 {
                return "maximumConcurrentConnectionAttempts must be at least 1, got \(maximumConcurrentConnectionAttempts)"
            }
            if backoff.initial < .zero || backoff.maximum < backoff.initial {
                return "backoff needs 0 ≤ initial ≤ maximum, got \(backoff.initial) and \(backoff.maximum)"
            }
            if !(backoff.multiplier >= 1) || !backoff.multiplier.isFinite {
                return "backoff.multiplier must be at least 1, got \(backoff.multiplier)"
            }
            if !(0...1).contains(backoff.jitter) { return "backoff.jitter must be between 0 and 1, got \(backoff.jitter)" }
            if maintenanceInterval <= .zero { return "maintenanceInterval must be positive, got \(maintenanceInterval)" }
            return nil
        }
    }

    /// Counts since the pool was created (for dashboards and tests).
    public struct Statistics: Sendable, Hashable {
        /// Factory calls started.
        public var connectionAttempts = 0
        /// Factory calls that threw.
        public var failedAttempts = 0
        /// Close callbacks that have returned.
        public var connectionsClosed = 0
        /// Idle connections that failed the health check (and were closed).
        public var failedHealthChecks = 0
        /// Leases whose connection was closed under them because ``ConnectionPool/shutdown(gracePeriod:fileID:line:function:)``
        /// ran out of time.
        public var leasesRevoked = 0
    }
}
