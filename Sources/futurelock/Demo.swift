import ArgumentParser
import Foundation
import Futurelock
import Logging

#if canImport(Glibc)
import Glibc
#endif

/// A stuck service to practise on: a real self-deadlock under a running watchdog that writes the dump
/// of the moment whenever the process receives the dump signal.
struct Demo: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a small stuck service under the watchdog; `kill -USR1 <pid>` makes it write a dump.",
        discussion: """
            One task holds a permit of the semaphore 'config' and waits for it again (a real \
            self-deadlock). The watchdog runs as a service would run it. Send the dump signal \
            (SIGUSR1 unless --signal says otherwise) and the current dump is written to --dump-path \
            and logged. Prints `ready <pid>` once it listens; ends after --seconds, or on SIGINT/SIGTERM.
            """)

    @Option(help: "Where the dump goes (default: futurelock-<pid>.txt or .jsonl in the temporary directory).")
    var dumpPath: String?

    @Option(help: "text or json (JSON Lines).")
    var format: Reproduce.OutputFormat = .text

    @Option(help: "The dump signal's number (SIGUSR1 is 10 on Linux).")
    var signal: Int32 = SIGUSR1

    @Option(help: "Seconds to run before exiting.")
    var seconds: Double = 60

    func validate() throws {
        guard seconds > 0, seconds.isFinite else { throw ValidationError("--seconds must be positive, got \(seconds)") }
        guard signal > 0, signal < 32, signal != SIGKILL, signal != SIGSTOP else {
            throw ValidationError("--signal must be a catchable signal number, got \(signal)")
        }
    }

    func run() async throws {
        let ledger = Ledger()
        let lock = try Semaphore(name: "config", permits: 1, ledger: ledger)
        var configuration = Watchdog.Configuration(
            interval: .milliseconds(200), waitThreshold: .milliseconds(200),
            dumpFormat: format == .json ? .jsonLines : .text, confirmation: .milliseconds(100))
        configuration.dumpSignal = signal
        configuration.signalDumpPath = dumpPath
        let watchdog = Watchdog(ledger: ledger, configuration: configuration,
                                logger: Logger(label: "futurelock.demo"))
        let stuck = Task {
            try await lock.withPermit {
                try await lock.acquire().release()  // the self-deadlock
            }
        }
        let running = Task { await watchdog.run() }
        // The watchdog listens once its run has started; wait for that before saying so.
        while !watchdog.isListeningForDumpSignal { await Task.yield() }
        FileHandle.standardOutput.write(Data("ready \(getpid()) — dumps go to \(watchdog.signalDumpDestination)\n".utf8))
        try? await Task.sleep(for: .milliseconds(Int64(seconds * 1000)))
        running.cancel()
        stuck.cancel()
        await running.value
        _ = await stuck.result
    }
}
