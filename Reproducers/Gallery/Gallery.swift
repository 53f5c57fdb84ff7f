import Futurelock
import Logging

/// Every reproducer, in form order.
public enum Gallery {
    public static let all: [any Reproducer] = [
        TaskGroupRace(), AsyncLetLease(), TaskHandle(), ReadAheadStream(), ReserveSend(), PoolActor(),
        Reentrant(), ABBA(),
        BoundedLoop(), StreamHandOff(), ChannelHandOff(), SiblingHandOff(), RunningChild(),
    ]

    /// The reproducer with this name.
    public static func named(_ name: String) -> (any Reproducer)? { all.first { $0.name == name } }

    /// How a run ended.
    public enum Status: String, Sendable {
        case completed, finding, timedOut = "timed out", failed
    }

    /// The outcome of one run.
    public struct Outcome: Sendable {
        public var reproducer: String
        public var variant: Variant
        public var status: Status
        /// The watchdog's report at the moment it found something (or the final check).
        public var report: Report?
        public var seconds: Double
        public var error: String?

        /// 0 = completed with no finding, 2 = finding reported, 124 = timed out, 1 = the scenario failed.
        public var exitCode: Int32 {
            switch status {
            case .completed: return 0
            case .finding: return 2
            case .timedOut: return 124
            case .failed: return 1
            }
        }
    }

    /// What a variant of `reproducer` must do, in words, and whether `outcome` did it.
    public static func judge(_ outcome: Outcome, of reproducer: any Reproducer) -> (expected: String, ok: Bool) {
        let findings = outcome.report?.findings ?? []
        let lock = findings.first { $0.kind.isLock }
        switch outcome.variant {
        case .plain:
            return ("timed out", outcome.status == .timedOut)
        case .instrumented, .annotated:
            guard let kind = reproducer.expectedKind else {
                return ("completed, no lock", outcome.status == .completed && lock == nil)
            }
            let certainty = reproducer.expectedCertainty(for: outcome.variant)
            return ("\(kind.rawValue) (\(certainty.rawValue))",
                    outcome.status == .finding && lock?.kind == kind && lock?.certainty == certainty)
        case .fixed:
            return ("completed", outcome.status == .completed)
        }
    }

    /// The watchdog settings the gallery uses: quick, so a run takes well under a second.
    public static let watchdogConfiguration = Watchdog.Configuration(
        interval: .milliseconds(100), waitThreshold: .milliseconds(200),
        policy: DetectionPolicy(gracePeriod: .milliseconds(300), stallThreshold: .seconds(30),
                                leakThreshold: .seconds(30)))

    /// Runs one variant of one reproducer.
    ///
    /// The scenario runs in a task; the runner checks with the watchdog every interval (instrumented
    /// and fixed variants). On a lock finding it records the report and cancels the scenario (the
    /// instrumented primitives unwind on cancellation); at the timeout it cancels it too.
    ///
    /// - Parameter configure: adjusts the watchdog's configuration (e.g. to add symbolication and
    ///   native stacks) before the run.
    /// - Parameter captureBacktraces: record a native backtrace at every acquisition (shown,
    ///   symbolicated, under the holder of a finding when the watchdog can symbolicate).
    public static func run(_ reproducer: any Reproducer, variant: Variant, timeout: Duration,
                           captureBacktraces: Bool = false,
                           configure: (inout Watchdog.Configuration) -> Void = { _ in }) async -> Outcome {
        let quiet = Logger(label: "futurelock.reproducer", factory: { _ in SwiftLogNoOpLogHandler() })
        let ledger = Ledger(configuration: .init(isEnabled: variant.isWatched, backtraceEvery: captureBacktraces ? 1 : 0),
                            logger: quiet)
        var configuration = watchdogConfiguration
        configure(&configuration)
        let watchdog = Watchdog(ledger: ledger, configuration: configuration, logger: quiet)
        await TaskTree.verifyRuntimeInspection()
        let start = ContinuousClock.now
        let scenario = Task.detached {
            try await reproducer.run(variant.code, ledger: ledger)
        }
        var status: Status?
        var report: Report?
        var failure: String?
        var seenInARow = 0
        let finished = Flag()
        let watcher = Task.detached {
            _ = await scenario.result
            finished.set()
        }
        while status == nil {
            // The runner's own cadence: one watchdog interval between looks.
            try? await Task.sleep(for: watchdogConfiguration.interval)
            if finished.isSet {
                switch await scenario.result {
                case .success: status = .completed
                case .failure(let error): status = .failed; failure = "\(error)"
                }
                break
            }
            if variant.isWatched {
                // Stop at a certain lock, or once a finding has stood for three checks in a row
                // (a suspected one never becomes certain; give confirmation its chance first).
                let current = watchdog.check()
                let serious = current.findings.filter { $0.kind.isLock || $0.kind == .leak }
                seenInARow = serious.isEmpty ? 0 : seenInARow + 1
                if serious.contains(where: { $0.certainty == .certain }) || seenInARow >= 3 {
                    report = current
                    status = .finding
                    break
                }
            }
            if ContinuousClock.now - start >= timeout { status = .timedOut }
        }
        scenario.cancel()
        // A scenario unwinds on cancellation (the primitives throw); give it a bounded time to, so a
        // scenario that ignores cancellation fails the run instead of hanging the runner.
        let unwindStart = ContinuousClock.now
        while !finished.isSet, ContinuousClock.now - unwindStart < .seconds(10) {
            try? await Task.sleep(for: .milliseconds(10))
        }
        if !finished.isSet {
            status = .failed
            failure = "the scenario did not unwind within 10 s of cancellation"
        } else {
            _ = await scenario.result
        }
        watcher.cancel()
        if status == .completed, variant.isWatched {
            let final = watchdog.check()
            report = final
            if !final.findings.isEmpty { status = .finding }
        }
        let elapsed = (ContinuousClock.now - start).secondsDouble
        return Outcome(reproducer: reproducer.name, variant: variant, status: status ?? .failed, report: report,
                       seconds: elapsed, error: failure)
    }
}
