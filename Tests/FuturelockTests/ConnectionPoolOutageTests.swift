import Synchronization
import Testing
@testable import Futurelock

/// A database outage, simulated: the pool is warm and busy, then the server goes away for 2 s (every
/// query on an open connection fails, every connection attempt fails), then comes back. The pool must
/// not turn the outage into a connection storm, must recover on its own soon after the server is back,
/// and must lose no lease and no unit of capacity. The figures are printed for the note.
@Suite("ConnectionPool under an outage")
struct ConnectionPoolOutageTests {
    private struct ServerDown: Error {}

    /// The simulated server: up, or down between two instants.
    private final class Server: Sendable {
        let start = ContinuousClock.now
        let downFrom: Duration
        let downUntil: Duration
        let attempts = Atomic<Int>(0)
        let attemptsWhileDown = Atomic<Int>(0)
        let open = Atomic<Int>(0)
        let maxOpen = Atomic<Int>(0)
        let closed = Atomic<Int>(0)

        init(downFrom: Duration, downUntil: Duration) { self.downFrom = downFrom; self.downUntil = downUntil }

        var elapsed: Duration { start.duration(to: .now) }
        var isDown: Bool { let t = elapsed; return t >= downFrom && t < downUntil }

        func connect() throws -> Int {
            attempts.wrappingAdd(1, ordering: .relaxed)
            if isDown {
                attemptsWhileDown.wrappingAdd(1, ordering: .relaxed)
                throw ServerDown()
            }
            let now = open.wrappingAdd(1, ordering: .relaxed).newValue
            var seen = maxOpen.load(ordering: .relaxed)
            while now > seen, !maxOpen.compareExchange(expected: seen, desired: now, ordering: .relaxed).exchanged {
                seen = maxOpen.load(ordering: .relaxed)
            }
            return attempts.load(ordering: .relaxed)
        }

        func close(_: Int) {
            open.wrappingSubtract(1, ordering: .relaxed)
            closed.wrappingAdd(1, ordering: .relaxed)
        }
    }

    private final class Tally: Sendable {
        let checkedOut = Atomic<Int>(0)
        let returned = Atomic<Int>(0)
        let firstSuccessAfterOutage = Lock<Duration?>(nil)
        let errors = Lock<[String: Int]>([:])
    }

    @Test(.timeLimit(.minutes(1))) func twoSecondOutage_fewAttempts_quickRecovery_nothingLost() async throws {
        let server = Server(downFrom: .milliseconds(300), downUntil: .milliseconds(2300))
        var configuration = ConnectionPool<Int>.Configuration()
        configuration.minimumConnections = 8
        let pool = try ConnectionPool(name: "db", capacity: 8, configuration: configuration, ledger: Ledger(),
                                      factory: { try server.connect() }, close: { server.close($0) })
        let tally = Tally()
        let clients = 64
        let runFor: Duration = .milliseconds(3800)

        let maintenance = Task { await pool.run() }
        await withTaskGroup(of: Void.self) { group in
            for _ in 0..<clients {
                group.addTask {
                    while server.elapsed < runFor {
                        do {
                            let lease = try await pool.checkout(timeout: .seconds(1))
                            tally.checkedOut.wrappingAdd(1, ordering: .relaxed)
                            // A query: it fails while the server is down, which breaks the connection.
                            if server.isDown {
                                lease.returnBroken()
                            } else {
                                if server.elapsed >= server.downUntil {
                                    tally.firstSuccessAfterOutage.withLock { $0 = $0 ?? server.elapsed }
                                }
                                try? await Task.sleep(for: .milliseconds(1))
                                lease.release()
                            }
                            tally.returned.wrappingAdd(1, ordering: .relaxed)
                        } catch {
                            let key = error is ServerDown ? "server down (factory error)" : "\(error)"
                            tally.errors.withLock { $0[key, default: 0] += 1 }
                            // A client backs off a little after an error, as a service would answer 503.
                            try? await Task.sleep(for: .milliseconds(10))
                        }
                    }
                }
            }
        }
        maintenance.cancel()
        await maintenance.value
        await pool.shutdown(gracePeriod: .seconds(5))

        let recovered = try #require(tally.firstSuccessAfterOutage.withLock { $0 }, "the pool never recovered")
        let recovery = recovered - server.downUntil
        let whileDown = server.attemptsWhileDown.load(ordering: .relaxed)
        print("""
            [outage] 2 s outage, 64 clients, capacity 8, default back-off (100 ms doubling to 1 s, ±20 %), \
            2 attempts at once: connection attempts while down \(whileDown), in all \(server.attempts.load(ordering: .relaxed)); \
            recovered \(recovery) after the server came back; leases checked out \(tally.checkedOut.load(ordering: .relaxed)), \
            returned \(tally.returned.load(ordering: .relaxed)); most connections open at once \(server.maxOpen.load(ordering: .relaxed)); \
            errors \(tally.errors.withLock { $0 })
            """)
        #expect(tally.checkedOut.load(ordering: .relaxed) == tally.returned.load(ordering: .relaxed), "a lease was lost")
        #expect(server.open.load(ordering: .relaxed) == 0, "a connection was left open after shutdown")
        #expect(server.maxOpen.load(ordering: .relaxed) <= 8)
        #expect(pool.openCount == 0 && pool.leasedCount == 0 && pool.creatingCount == 0)
        // No storm: 64 clients retrying every ~10 ms for 2 s would make thousands of attempts.
        #expect(whileDown <= 40, "connection storm: \(whileDown) attempts while the server was down")
        // Recovery is bounded by the back-off's maximum (1 s, +20 % jitter) plus scheduling.
        #expect(recovery < .milliseconds(1500), "recovered only after \(recovery)")
    }
}
