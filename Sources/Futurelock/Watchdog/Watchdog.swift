import CoreMetrics
import Dispatch
import Logging
import Synchronization
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Watches a ledger for futurelocks, deadlocks, stalls and leaks.
///
/// Use it two ways: call ``check()`` on demand, or `await run()` in a task to check every
/// ``Configuration/interval`` and early when the oldest wait passes ``Configuration/waitThreshold``;
/// or both. It never cancels or kills anything: it logs
/// each finding once while it persists (and its resolution), calls your handler, and can write the
/// dump of the moment to a file.
///
/// ## Certainty
/// A lock is reported `certain` only when it is proved: the detector finds it in a snapshot, and
/// every holding and wait it rests on was already present, unchanged, in an earlier snapshot taken at
/// least ``Configuration/confirmation`` before. Each primitive is read atomically, but different
/// primitives are read microseconds apart; two agreeing snapshots mean all those edges existed at one
/// common instant between them. The delay guards against the one thing the ledger cannot see: a
/// holding passed to another task that has not claimed it yet (use `handOff()`/`claim()` when you pass
/// one on). Until it is confirmed, a lock is reported as `suspected`, and the upgrade to `certain` is
/// reported as news.
public final class Watchdog: Sendable {
    /// How often and how the watchdog checks.
    public struct Configuration: Sendable {
        /// Time between periodic checks. Detection latency is at most two intervals.
        public var interval: Duration
        /// A wait older than this triggers an early check and is marked `!!!` in dumps.
        public var waitThreshold: Duration
        /// The classification thresholds.
        public var policy: DetectionPolicy
        /// Where to write the dump when a new finding appears (`nil`: no file).
        public var dumpPath: String?
        /// The format of that file.
        public var dumpFormat: DumpFormat
        /// How long a lock must persist before it is reported `certain`: it must be found on two
        /// snapshots at least this far apart, every holding and wait it rests on unchanged. Until then
        /// it is reported `suspected` ("awaiting confirmation"). Zero confirms on two back-to-back
        /// snapshots, which proves the wait-for edges existed at one instant but not that ownership was
        /// not in the middle of moving between tasks.
        public var confirmation: Duration
        /// Turns captured acquisition backtraces (return addresses) into readable frames for findings.
        /// `FuturelockSymbols` provides one backed by libdw: `configuration.useSymbolication()`.
        public var symbolicate: (@Sendable ([UInt]) -> [String])?
        /// Captures the process's native thread stacks; called when a new lock is found, and the
        /// stacks go into that report's dump. `FuturelockSymbols` provides one: `useSymbolication()`.
        public var captureNativeThreads: (@Sendable () -> [NativeThreadRecord])?
        /// Where the watchdog's metrics go (default: the process's bootstrapped `MetricsSystem`;
        /// `nil` records none). Per resource, after every check: gauges `futurelock_held`,
        /// `futurelock_waiting` and `futurelock_oldest_wait_seconds` (dimensions `resource`, `kind`);
        /// per finding kind: gauge `futurelock_findings` (current) and counter
        /// `futurelock_findings_reported_total` (dimensions `kind`, `certainty`).
        public var metrics: (any MetricsFactory)? = MetricsSystem.factory
        /// While ``Watchdog/run()`` runs, this signal makes it check at once and write the dump of the
        /// moment to ``signalDumpPath`` — as a JVM prints its threads on `kill -QUIT`:
        /// `kill -USR1 <pid>`. The signal is handled by a dispatch signal source, never in a signal
        /// handler; its default action (which would end the process) is suppressed only while a
        /// watchdog listens. `nil` listens for none.
        public var dumpSignal: Int32? = SIGUSR1
        /// Where a dump asked for by ``dumpSignal`` goes, in ``dumpFormat``. `nil`: ``dumpPath`` if
        /// set, else `futurelock-<pid>.txt` (or `.jsonl`, `.dot`) in the temporary directory.
        public var signalDumpPath: String?

        /// Defaults: check every second, 1 s wait threshold, default policy, no dump file.
        public init(interval: Duration = .seconds(1), waitThreshold: Duration = .seconds(1),
                    policy: DetectionPolicy = DetectionPolicy(), dumpPath: String? = nil,
                    dumpFormat: DumpFormat = .text, confirmation: Duration = .milliseconds(100)) {
            self.interval = interval
            self.waitThreshold = waitThreshold
            self.policy = policy
            self.dumpPath = dumpPath
            self.dumpFormat = dumpFormat
            self.confirmation = max(confirmation, .zero)
        }
    }

    /// The ledger being watched.
    public let ledger: Ledger
    /// The configuration.
    public let configuration: Configuration
    private let logger: Logger
    private let handler: (@Sendable (Report) -> Void)?
    private let state = Lock<State>(State())

    private struct State {
        var previous: LedgerSnapshot?
        var reported: [String: Finding] = [:]
        var checks = 0
        var dumpSignalListeners = 0
    }

    /// Creates a watchdog.
    ///
    /// - Parameters:
    ///   - ledger: The ledger to watch (default: the process-wide one).
    ///   - configuration: Interval, thresholds, dump file.
    ///   - logger: Where findings are logged (errors for locks, warnings for stalls and leaks).
    ///   - handler: Called with the report whenever a finding appears or resolves.
    public init(ledger: Ledger = .shared, configuration: Configuration = Configuration(),
                logger: Logger = Logger(label: "futurelock.watchdog"),
                handler: (@Sendable (Report) -> Void)? = nil) {
        self.ledger = ledger
        self.configuration = configuration
        self.logger = logger
        self.handler = handler
    }

    /// How many checks have run.
    public var checksRun: Int { state.withLock { $0.checks } }

    /// Checks now and returns what holds.
    @discardableResult
    public func check() -> Report {
        let policy = configuration.policy
        let confirmation = configuration.confirmation
        var snapshot = ledger.snapshot()
        var candidates = Detector.candidates(in: snapshot, policy: policy)
        var anchor = state.withLock { $0.previous }
        if confirmation == .zero,
           candidates.contains(where: { $0.finding.certainty == .certain && $0.finding.kind.isLock }) {
            // No persistence asked for: prove simultaneity with a second look right away.
            anchor = snapshot
            snapshot = ledger.snapshot()
            candidates = Detector.candidates(in: snapshot, policy: policy)
        }
        var findings = Self.confirm(candidates, in: snapshot, against: anchor, confirmation: confirmation)
        if let symbolicate = configuration.symbolicate {
            for index in findings.indices {
                guard let addresses = findings[index].holder?.backtrace?.compactMap(Self.parseAddress),
                      !addresses.isEmpty else { continue }
                findings[index].holder?.backtrace = symbolicate(addresses)
            }
        }
        let report = state.withLock { state -> Report in
            state.checks += 1
            if state.previous.map({ snapshot.takenAt.duration(since: $0.takenAt) >= confirmation }) ?? true {
                state.previous = snapshot
            }
            let current = Dictionary(findings.map { ($0.key, $0) }, uniquingKeysWith: { a, _ in a })
            let new = findings.filter { finding in
                guard let earlier = state.reported[finding.key] else { return true }
                return earlier.certainty == .suspected && finding.certainty == .certain
            }
            let resolved = state.reported.values.filter { current[$0.key] == nil }.sorted { $0.key < $1.key }
            state.reported = current
            return Report(snapshot: snapshot, findings: findings, new: new, resolved: resolved)
        }
        var published = report
        if report.new.contains(where: { $0.kind.isLock }), let capture = configuration.captureNativeThreads {
            published.nativeThreads = capture()
        }
        publish(published)
        return published
    }

    /// Writes the report's dump to `path` in the configured format, replacing the file atomically.
    private func writeDump(_ report: Report, to path: String) throws {
        try report.dump.render(configuration.dumpFormat, waitThreshold: configuration.waitThreshold)
            .write(toFile: path, atomically: true, encoding: .utf8)
    }

    static func parseAddress(_ text: String) -> UInt? {
        text.hasPrefix("0x") ? UInt(text.dropFirst(2), radix: 16) : nil
    }

    /// Keeps a lock `certain` only when everything it rests on was already there, unchanged, in
    /// `anchor`, taken at least `confirmation` earlier; otherwise it is reported as suspected until
    /// the next check confirms it.
    static func confirm(_ candidates: [Detector.Candidate], in snapshot: LedgerSnapshot,
                        against anchor: LedgerSnapshot?, confirmation: Duration) -> [Finding] {
        let usable = anchor.flatMap { anchor in
            snapshot.takenAt.duration(since: anchor.takenAt) >= confirmation ? anchor : nil
        }
        return candidates.map { candidate in
            var finding = candidate.finding
            guard finding.certainty == .certain, finding.kind.isLock else { return finding }
            if let usable, confirms(usable, [candidate]) { return finding }
            finding.certainty = .suspected
            finding.evidence.append("awaiting confirmation: certain once the same holdings and waits are seen again at least \(confirmation) later")
            return finding
        }
    }

    static func confirms(_ earlier: LedgerSnapshot, _ candidates: [Detector.Candidate]) -> Bool {
        let holdings = Set(earlier.holdings.map(Detector.holdingKey))
        let waits = Set(earlier.waits.map(Detector.waitKey))
        return candidates.allSatisfy { $0.proof.holdings.isSubset(of: holdings) && $0.proof.waits.isSubset(of: waits) }
    }

    private func record(_ report: Report, into factory: any MetricsFactory) {
        let snapshot = report.snapshot
        var oldest: [ResourceID: MonotonicInstant] = [:]
        for wait in snapshot.waits where WaitForAnalysis.blocks(wait.kind) {
            oldest[wait.resource] = min(oldest[wait.resource] ?? wait.since, wait.since)
        }
        for resource in snapshot.resources {
            let dimensions = [("resource", resource.name), ("kind", resource.kind.rawValue)]
            Gauge(label: "futurelock_held", dimensions: dimensions, factory: factory).record(resource.held)
            Gauge(label: "futurelock_waiting", dimensions: dimensions, factory: factory).record(resource.waiting)
            let age = oldest[resource.id].map { snapshot.takenAt.duration(since: $0).secondsDouble } ?? 0
            Gauge(label: "futurelock_oldest_wait_seconds", dimensions: dimensions, factory: factory).record(age)
        }
        for kind in Finding.Kind.allCases {
            let current = report.findings.filter { $0.kind == kind }.count
            Gauge(label: "futurelock_findings", dimensions: [("kind", kind.rawValue)], factory: factory).record(current)
        }
        for finding in report.new {
            Counter(label: "futurelock_findings_reported_total",
                    dimensions: [("kind", finding.kind.rawValue), ("certainty", finding.certainty.rawValue)],
                    factory: factory).increment()
        }
    }

    private func publish(_ report: Report) {
        if let factory = configuration.metrics { record(report, into: factory) }
        for finding in report.new {
            let metadata: Logger.Metadata = [
                "futurelock.kind": "\(finding.kind.rawValue)",
                "futurelock.certainty": "\(finding.certainty.rawValue)",
                "futurelock.resource": "\(finding.resource.name)",
                "futurelock.queued": "\(finding.queued)",
            ]
            let message: Logger.Message = "\(finding.kind.rawValue) (\(finding.certainty.rawValue)): \(finding.summary). Fix: \(finding.fix)"
            if finding.kind.isLock { logger.error(message, metadata: metadata) } else { logger.warning(message, metadata: metadata) }
        }
        for finding in report.resolved {
            logger.info("resolved: \(finding.kind.rawValue) on \(finding.resource.label)",
                        metadata: ["futurelock.kind": "\(finding.kind.rawValue)"])
        }
        guard !report.new.isEmpty || !report.resolved.isEmpty else { return }
        if !report.new.isEmpty, let path = configuration.dumpPath {
            do {
                try writeDump(report, to: path)
            } catch {
                logger.error("could not write the dump to \(path): \(error)")
            }
        }
        handler?(report)
    }

    /// Checks every interval, and early when the oldest wait passes the wait threshold, until the
    /// calling task is cancelled.
    public func run() async {
        // Parked results are proved by reading the runtime once its reader has passed its one-time
        // self-test (a few milliseconds); start it now, without holding up the first checks.
        RuntimeInspection.start()
        let signalSource = listenForDumpSignal()
        if signalSource != nil { state.withLock { $0.dumpSignalListeners += 1 } }
        defer {
            if let signalSource {
                signalSource.stop()
                state.withLock { $0.dumpSignalListeners -= 1 }
            }
        }
        let tick = min(configuration.interval, max(configuration.waitThreshold / 2, .milliseconds(10)))
        var sinceFull = Duration.zero
        var lastEarlyFor: MonotonicInstant?
        while !Task.isCancelled {
            do { try await Task.sleep(for: tick) } catch { return }
            sinceFull += tick
            if sinceFull >= configuration.interval {
                sinceFull = .zero
                check()
                continue
            }
            // Early check: the oldest wait just crossed the threshold.
            if let oldest = ledger.oldestWait(), oldest != lastEarlyFor,
               MonotonicInstant.now.duration(since: oldest) >= configuration.waitThreshold {
                lastEarlyFor = oldest
                sinceFull = .zero
                check()
            }
        }
    }
}

// MARK: - A dump on demand, from outside

extension Watchdog {
    /// Whether a ``run()`` of this watchdog is listening for ``Configuration/dumpSignal`` right now.
    public var isListeningForDumpSignal: Bool { state.withLock { $0.dumpSignalListeners > 0 } }

    /// Where a dump asked for by the signal goes.
    public var signalDumpDestination: String {
        if let path = configuration.signalDumpPath ?? configuration.dumpPath { return path }
        let suffix: String
        switch configuration.dumpFormat {
        case .text: suffix = "txt"
        case .jsonLines: suffix = "jsonl"
        case .dot: suffix = "dot"
        }
        return FileManager.default.temporaryDirectory
            .appendingPathComponent("futurelock-\(getpid()).\(suffix)").path
    }

    /// Checks now and writes the dump of the moment to ``signalDumpDestination`` — what the dump
    /// signal does; callable directly too. Returns the path written, or `nil` (and logs why) when the
    /// file could not be written.
    @discardableResult
    public func writeDumpNow(reason: String = "asked for") -> String? {
        let report = check()
        let path = signalDumpDestination
        do {
            try writeDump(report, to: path)
        } catch {
            logger.error("could not write the dump (\(reason)) to \(path): \(error)")
            return nil
        }
        let findings = report.findings.map { "\($0.kind.rawValue) (\($0.certainty.rawValue))" }
        logger.notice("dump (\(reason)) written to \(path): \(findings.isEmpty ? "no findings" : findings.joined(separator: ", "))",
                      metadata: ["futurelock.dump": "\(path)"])
        return path
    }

    fileprivate func listenForDumpSignal() -> DumpSignalListener? {
        guard let number = configuration.dumpSignal else { return nil }
        return DumpSignalListener(signal: number) { [self] in
            writeDumpNow(reason: "signal \(number)")
        }
    }
}

/// A dispatch signal source for the dump signal. The signal's own action is set to "ignore" while at
/// least one listener exists in the process (so it no longer ends the process, and the source sees
/// it), and the previous action is put back when the last one stops.
final class DumpSignalListener {
    private let number: Int32
    private let source: any DispatchSourceSignal

    private static let listeners = Lock<[Int32: (count: Int, previous: sighandler_t?)]>([:])

    init(signal number: Int32, handler: @escaping @Sendable () -> Void) {
        self.number = number
        Self.listeners.withLock { listeners in
            if let existing = listeners[number] {
                listeners[number] = (existing.count + 1, existing.previous)
            } else {
                listeners[number] = (1, signal(number, SIG_IGN))
            }
        }
        source = DispatchSource.makeSignalSource(signal: number, queue: .global(qos: .utility))
        source.setEventHandler(handler: handler)
        source.resume()
    }

    func stop() {
        source.cancel()
        Self.listeners.withLock { listeners in
            guard let existing = listeners[number] else { return }
            if existing.count > 1 {
                listeners[number] = (existing.count - 1, existing.previous)
            } else {
                listeners[number] = nil
                signal(number, existing.previous)
            }
        }
    }
}
