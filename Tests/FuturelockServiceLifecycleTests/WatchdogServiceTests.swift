import Futurelock
import FuturelockServiceLifecycle
import Logging
import ServiceLifecycle
import ServiceLifecycleTestKit
import Testing

@Suite("Watchdog service")
struct WatchdogServiceTests {
    @Test(.timeLimit(.minutes(1))) func run_checksUntilGracefulShutdown() async throws {
        let ledger = Ledger()
        let checked = AsyncStream<Void>.makeStream()
        let quiet = Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() })
        let lock = try Semaphore(name: "config", permits: 1, ledger: ledger)
        // A real lock, so the watchdog has something to report: its handler tells us it is running.
        let stuck = Task {
            let permit = try await lock.acquire()
            defer { permit.release() }
            try await lock.acquire().release()
        }
        let watchdog = Watchdog(
            ledger: ledger, configuration: .init(interval: .milliseconds(20), waitThreshold: .milliseconds(20)),
            logger: quiet, handler: { _ in checked.continuation.yield() })
        try await testGracefulShutdown { trigger in
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await WatchdogService(watchdog).run() }
                var reports = checked.stream.makeAsyncIterator()
                _ = await reports.next()          // the service is running and has reported
                trigger.triggerGracefulShutdown()
                try await group.waitForAll()      // …and it returns on graceful shutdown
            }
        }
        #expect(watchdog.checksRun >= 1)
        stuck.cancel()
        _ = await stuck.result
    }

    @Test(.timeLimit(.minutes(1))) func serviceGroup_runsAndStopsTheWatchdog() async throws {
        let quiet = Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() })
        let watchdog = Watchdog(ledger: Ledger(), configuration: .init(interval: .milliseconds(10)), logger: quiet)
        let group = ServiceGroup(services: [WatchdogService(watchdog)], logger: quiet)
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await group.run() }
            while watchdog.checksRun == 0, !Task.isCancelled { await Task.yield() }
            await group.triggerGracefulShutdown()
            try await tasks.waitForAll()
        }
        #expect(watchdog.checksRun >= 1)
    }
}
