import Logging
import Synchronization

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Watches a ledger for futurelocks, deadlocks, stalls and leaks.
///
/// Use it three ways: call ``check()`` on demand; `await run()` in a task (or run it as a
/// service-lifecycle `Service`) to check every ``Configuration/interval`` and early when the oldest
/// wait passes ``Configuration/waitThreshold``; or both. It never cancels or kills anything: it logs
/// each finding once while it persists (and its resolution), calls your handler, and can write the
/// dump of the moment to a file.
///
/// ## Certainty
/// A lock is reported `certain` only when it is proved: the detector finds it in a snapshot, and
/// every holding and wait it rests on was already present, unchanged, in an earlier snapshot. Each
/// primitive is read atomically, but different primitives are read microseconds apart; two agreeing
/// snapshots mean all those edges existed at one common instant between them, and a lock that existed
/// once still exists. A candidate that cannot be confirmed is reported as `suspected`.
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

        /// Defaults: check every second, 1 s wait threshold, default policy, no dump file.
        public init(interval: Duration = .seconds(1), waitThreshold: Duration = .seconds(1),
                    policy: DetectionPolicy = DetectionPolicy(), dumpPath: String? = nil,
                    dumpFormat: DumpFormat = .text) {
            self.interval = interval
            self.waitThreshold = waitThreshold
            self.policy = policy
            self.dumpPath = dumpPath
            self.dumpFormat = dumpFormat
        }
    }

    /// The ledger being watched.
    public let ledger: Ledger
    /// The configuration.
    public let configuration: Configuration
    private let logger: Logger
    private let handler: (@Sendable (Report) -> Void)?
    private let state = Mutex<State>(State())

    private struct State {
        var previous: LedgerSnapshot?
        var reported: [String: Finding] = [:]
        var checks = 0
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
        var snapshot = ledger.snapshot()
        var candidates = Detector.candidates(in: snapshot, policy: policy)
        var earlier = state.withLock { $0.previous }
        if candidates.contains(where: { $0.finding.certainty == .certain && $0.finding.kind.isLock }),
           earlier.map({ !Self.confirms($0, candidates) }) ?? true {
            // Prove it: look again, and keep only what both looks agree on.
            earlier = snapshot
            snapshot = ledger.snapshot()
            candidates = Detector.candidates(in: snapshot, policy: policy)
        }
        let findings = candidates.map { candidate -> Finding in
            var finding = candidate.finding
            if finding.certainty == .certain, finding.kind.isLock,
               !(earlier.map { Self.confirms($0, [candidate]) } ?? false) {
                finding.certainty = .suspected
                finding.evidence.append("not yet confirmed on a second snapshot")
            }
            return finding
        }
        let report = state.withLock { state -> Report in
            state.checks += 1
            state.previous = snapshot
            let current = Dictionary(findings.map { ($0.key, $0) }, uniquingKeysWith: { a, _ in a })
            let new = findings.filter { state.reported[$0.key] == nil }
            let resolved = state.reported.values.filter { current[$0.key] == nil }.sorted { $0.key < $1.key }
            state.reported = current
            return Report(snapshot: snapshot, findings: findings, new: new, resolved: resolved)
        }
        publish(report)
        return report
    }

    static func confirms(_ earlier: LedgerSnapshot, _ candidates: [Detector.Candidate]) -> Bool {
        let holdings = Set(earlier.holdings.map(Detector.holdingKey))
        let waits = Set(earlier.waits.map(Detector.waitKey))
        return candidates.allSatisfy { $0.proof.holdings.isSubset(of: holdings) && $0.proof.waits.isSubset(of: waits) }
    }

    private func publish(_ report: Report) {
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
                try report.dump.render(configuration.dumpFormat, waitThreshold: configuration.waitThreshold)
                    .write(toFile: path, atomically: true, encoding: .utf8)
            } catch {
                logger.error("could not write the dump to \(path): \(error)")
            }
        }
        handler?(report)
    }

    /// Checks every interval, and early when the oldest wait passes the wait threshold, until the
    /// calling task is cancelled.
    public func run() async {
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
