import Logging
import Synchronization

/// The ownership ledger: who holds every permit, slot and connection, and who waits for them.
///
/// ## Where the records live
/// There is no central table on the hot path. Each primitive keeps the records of its own holdings
/// and waiters inside its own state, under the lock it takes anyway for the operation; an acquire
/// adds a stamp to a slab slot, a release clears it. The ledger only keeps a registry of the
/// primitives (touched when one is created or destroyed) and, when a snapshot is asked for, visits
/// each primitive once under that primitive's lock. So recording costs the service a task-id read,
/// a task-local read, a coarse clock read and a slab write per operation — and snapshotting, which
/// is O(holdings + waiters), is paid by the watchdog.
///
/// ## Isolation
/// Every primitive takes a `ledger:` argument that defaults to ``Ledger/shared``. Tests make their
/// own ledger so what they assert is not disturbed by other tests; ``Ledger/disabled`` records
/// nothing and exists to measure what recording costs.
public final class Ledger: Sendable {
    /// How much a ledger records.
    public struct Configuration: Sendable {
        /// Whether holdings and waits are recorded at all.
        public var isEnabled: Bool
        /// Capture a native backtrace at every Nth acquisition (0 = never, 1 = always). Off by
        /// default: a capture costs 2–4 µs.
        public var backtraceEvery: Int
        /// How many recent events each resource keeps for the replayable event log (0 = none).
        public var eventHistoryPerResource: Int
        /// How many problems (double releases, dropped holdings) are kept.
        public var problemHistory: Int
        /// Read each holder's and waiter's structured ancestry from the Swift runtime, and
        /// let the watchdog read a suspended waiter's children (see ``TaskTree/runtimeAvailability``).
        /// On by default; where the runtime's tree is unavailable this changes nothing. Off, the tree
        /// comes from named scopes only, and no futurelock in un-annotated code can be proved.
        public var readsRuntimeTaskTree: Bool

        /// Recording on, backtraces off, no event history, the runtime's task tree read.
        public init(isEnabled: Bool = true, backtraceEvery: Int = 0, eventHistoryPerResource: Int = 0,
                    problemHistory: Int = 1024, readsRuntimeTaskTree: Bool = true) {
            self.isEnabled = isEnabled
            self.backtraceEvery = max(0, backtraceEvery)
            self.eventHistoryPerResource = max(0, eventHistoryPerResource)
            self.problemHistory = max(1, problemHistory)
            self.readsRuntimeTaskTree = readsRuntimeTaskTree
        }
    }

    /// The process-wide ledger every primitive uses unless told otherwise.
    public static let shared = Ledger()

    /// A ledger that records no holdings, waits or events (primitives behave the same; the watchdog
    /// sees nothing). Misuse — a double release, a dropped permit — is still logged and kept in
    /// ``problems``, because it is a bug whether or not anyone is watching.
    public static let disabled = Ledger(configuration: Configuration(isEnabled: false))

    /// What this ledger records.
    public let configuration: Configuration

    @usableFromInline let isEnabled: Bool
    @usableFromInline let backtraceEvery: Int
    @usableFromInline let context = TaskContextReader()
    @usableFromInline let clock = CoarseClock()
    /// How the runtime's task tree is read (a layout that reads nothing when it is unavailable or
    /// the configuration turns it off).
    @usableFromInline let runtime: RuntimeTaskLayout
    private let backtraceCounter = Atomic<Int>(0)
    private let resourceSerial = Atomic<UInt64>(0)
    private let eventSerial = Atomic<UInt64>(0)
    private let registry = Lock<[UInt64: UnownedTracked]>([:])
    private let problemLog = Lock<[LedgerProblem]>([])
    private let problemCount = Atomic<Int>(0)
    let logger: Logger

    /// Creates a ledger.
    public convenience init(configuration: Configuration = Configuration(),
                            logger: Logger = Logger(label: "futurelock.ledger")) {
        self.init(configuration: configuration, logger: logger,
                  inspection: configuration.readsRuntimeTaskTree ? .whenVerified : .never)
    }

    init(configuration: Configuration, logger: Logger, inspection: RuntimeInspection.Mode) {
        self.configuration = configuration
        self.isEnabled = configuration.isEnabled
        self.backtraceEvery = configuration.backtraceEvery
        self.logger = logger
        self.runtime = configuration.readsRuntimeTaskTree
            ? .current : .disabled("this ledger is configured not to read it (readsRuntimeTaskTree: false)")
        self.inspection = inspection
        if configuration.isEnabled, configuration.readsRuntimeTaskTree, !runtime.availability.isAvailable {
            RuntimeInspection.logUnavailableOnce(runtime.availability, to: logger)
        }
    }

    /// Where the task tree of this ledger's snapshots comes from.
    public var taskTreeSource: RuntimeTreeAvailability { runtime.availability }

    /// When the watchdog may read suspended waiters' children for this ledger.
    let inspection: RuntimeInspection.Mode

    // MARK: - Recording (used by the primitives)

    @inlinable
    func stamp(fileID: StaticString, line: UInt, function: StaticString) -> OwnerStamp? {
        guard isEnabled else { return nil }
        return OwnerStamp(
            task: context.task, node: context.node,
            site: StaticCallSite(fileID: fileID, line: line, function: function),
            time: clock.now, backtrace: backtraceEvery == 0 ? nil : captureBacktraceIfDue())
    }

    @usableFromInline @inline(never)
    func captureBacktraceIfDue() -> Unmanaged<CapturedBacktrace>? {
        let every = backtraceEvery
        if every > 1, backtraceCounter.wrappingAdd(1, ordering: .relaxed).oldValue % every != 0 { return nil }
        return BacktraceCapture.capture(skipping: 3)
    }

    func nextResourceID() -> ResourceID {
        ResourceID(rawValue: resourceSerial.wrappingAdd(1, ordering: .relaxed).newValue)
    }

    func register(_ resource: some LedgerTracked, id: ResourceID) {
        guard isEnabled else { return }
        registry.withLock { $0[id.rawValue] = UnownedTracked(value: resource) }
    }

    func unregister(_ id: ResourceID) {
        guard isEnabled else { return }
        _ = registry.withLock { $0.removeValue(forKey: id.rawValue) }
    }

    func nextEventSequence() -> UInt64 {
        eventSerial.wrappingAdd(1, ordering: .relaxed).newValue
    }

    /// Reports a second release of a holding of `resource` (the release itself is ignored by the caller).
    @usableFromInline
    func reportDoubleRelease(resource: ResourceID, name: String, kind: HoldingKind,
                             fileID: StaticString, line: UInt, function: StaticString) {
        let stamp = stamp(fileID: fileID, line: line, function: function)
        report(LedgerProblem(
            kind: .doubleRelease, resource: resource, resourceName: name, holdingKind: kind,
            acquiredAt: nil, acquiredBy: nil, releasedAt: stamp?.site.callSite, releasedBy: stamp?.task,
            time: .now))
    }

    /// Reports a holding that was deinitialised without release (the caller has released it).
    func reportDropped(resource: ResourceID, name: String, kind: HoldingKind, entry: HoldingTable.Entry?) {
        report(LedgerProblem(
            kind: .droppedWithoutRelease, resource: resource, resourceName: name, holdingKind: kind,
            acquiredAt: entry?.stamp.site.callSite, acquiredBy: entry?.acquiredBy,
            releasedAt: nil, releasedBy: nil, time: .now))
    }

    func report(_ problem: LedgerProblem) {
        problemCount.wrappingAdd(1, ordering: .relaxed)
        let limit = configuration.problemHistory
        problemLog.withLock { log in
            if log.count >= limit { log.removeFirst(log.count - limit + 1) }
            log.append(problem)
        }
        logger.warning("\(problem.message)", metadata: [
            "futurelock.problem": "\(problem.kind.rawValue)",
            "futurelock.resource": "\(problem.resourceName)",
        ])
    }

    // MARK: - Reading

    /// How many problems (double releases, dropped holdings) have been reported so far.
    public var problemsReported: Int { problemCount.load(ordering: .relaxed) }

    /// The problems kept so far, oldest first.
    public var problems: [LedgerProblem] { problemLog.withLock { $0 } }

    /// When the longest wait on any resource started, or `nil` when nobody waits. O(resources).
    public func oldestWait() -> MonotonicInstant? {
        registry.withLock { entries in entries.values.compactMap { $0.value.oldestWait() }.min() }
    }

    /// Everything the ledger knows right now, as one immutable value.
    ///
    /// Each primitive is visited once under its own lock; the view of one primitive is exact, and the
    /// views of different primitives are taken a few microseconds apart, which the watchdog allows for
    /// by confirming a finding on a second snapshot before it calls it certain.
    public func snapshot() -> LedgerSnapshot {
        let groupType = runtime.availability.isAvailable ? RuntimeInspection.groupType(for: inspection) : nil
        var builder = SnapshotBuilder(layout: runtime, inspectionGroupType: groupType,
                                      scansFrames: groupType != nil && RuntimeInspection.scansFrames(for: inspection))
        // Visited under the registry lock: a primitive being destroyed unregisters in its `deinit`
        // under the same lock, so every primitive visited here is intact.
        registry.withLock { entries in
            for entry in entries.values { entry.value.contribute(to: &builder) }
        }
        let inspectionUnavailable: String?
        if groupType != nil || !runtime.availability.isAvailable {
            inspectionUnavailable = nil
        } else if case .never = inspection {
            inspectionUnavailable = "this ledger does not read the runtime"
        } else {
            inspectionUnavailable = TaskTree.runtimeInspectionStatus ?? "the runtime reader's one-time self-test has not finished yet"
        }
        return builder.build(takenAt: .now, problems: problems, taskTree: runtime.availability.description,
                             inspectionUnavailable: inspectionUnavailable)
    }
}

/// A primitive the ledger can ask for its holdings and waiters.
protocol LedgerTracked: AnyObject, Sendable {
    func contribute(to builder: inout SnapshotBuilder)
    /// When the longest current wait started (a cheap probe: waiters are FIFO, so it is the head's).
    func oldestWait() -> MonotonicInstant?
}

extension LedgerTracked {
    func oldestWait() -> MonotonicInstant? { nil }
}

/// A registry entry. Not `weak`: a weak reference gives the object a side table, and then every
/// retain and release of the primitive — one of each per `Permit` — takes the runtime's slow path
/// (measured: it tripled the cost of an uncontended acquire+release). Instead the primitive removes
/// itself in its `deinit` under the registry lock, and the registry is only dereferenced under that
/// lock, so an entry never outlives its object.
private struct UnownedTracked: @unchecked Sendable {
    // Only read and written under the registry's mutex; the referenced objects are Sendable.
    unowned(unsafe) let value: any LedgerTracked
}
