import Logging
import Synchronization

/// Whether the watchdog may read suspended waiters' children (``RuntimeTaskInspector``), decided once
/// per process by a self-test that forms real futurelocks and checks that the reader proves them.
///
/// The ancestry recorded on the hot path needs only the parent link and the job flags, which the
/// runtime's debugger symbols vouch for. The inspector reads more — status records, the task-group
/// object, the future fragment — whose layout the debugger version number does not pin down as
/// tightly. So before it is trusted, the self-test runs it on tasks whose shape it knows: a task-group
/// child (one with a 16-byte-aligned result too) and an `async let` child that each finish holding a
/// permit while their parent waits for it, and a `Task` whose handle its creator keeps. Only if the
/// children's are proved, a discarding group is told apart from an accumulating one, and a
/// continuation is its task, are proofs used (frame scans need the handle shape too); otherwise findings that would rest on them stay `suspected`, and the reason is kept in
/// ``TaskTree/runtimeInspectionStatus``.
enum RuntimeInspection {
    /// When a ledger's snapshots may inspect waiters.
    enum Mode: Sendable {
        /// Never (the ledger does not read the runtime).
        case never
        /// Once the self-test has passed (every ledger users make).
        case whenVerified
        /// Always, with this accumulating-group type word (the self-test's own ledger).
        case trusting(groupType: UInt)
    }

    enum Status: Sendable {
        case notStarted
        case running
        /// Parked results can be proved; `framesReadable` says whether frame scans passed too.
        case verified(groupType: UInt, framesReadable: Bool)
        case failed(String)
    }

    static let status = Lock<Status>(.notStarted)

    /// The self-test, started on first use.
    static let selfTest: Task<Status, Never> = Task.detached {
        status.withLock { $0 = .running }
        let outcome = await runSelfTest()
        status.withLock { $0 = outcome }
        if case .failed(let reason) = outcome, RuntimeTaskLayout.current.availability.isAvailable {
            Logger(label: "futurelock.ledger").notice("the runtime task reader failed its self-test, so no futurelock in un-annotated code will be reported as certain: \(reason)")
        }
        return outcome
    }

    /// Starts the self-test if it has not started.
    static func start() { _ = selfTest }

    /// The accumulating-group type word to inspect with, or `nil` when `mode` does not allow
    /// inspecting now. Starts the self-test the first time it is asked.
    static func groupType(for mode: Mode) -> UInt? {
        switch mode {
        case .never:
            return nil
        case .trusting(let groupType):
            return groupType
        case .whenVerified:
            let current = status.withLock { $0 }
            switch current {
            case .verified(let groupType, _): return groupType
            case .notStarted: _ = selfTest; return nil
            case .running, .failed: return nil
            }
        }
    }

    /// Whether waiters' frames may be scanned (for `.trusting`, always).
    static func scansFrames(for mode: Mode) -> Bool {
        switch mode {
        case .never: return false
        case .trusting: return true
        case .whenVerified:
            if case .verified(_, true) = status.withLock({ $0 }) { return true }
            return false
        }
    }

    private static let loggedUnavailable = Atomic<Bool>(false)

    static func logUnavailableOnce(_ availability: RuntimeTreeAvailability, to logger: Logger) {
        guard !loggedUnavailable.exchange(true, ordering: .relaxed) else { return }
        logger.notice("\(availability.description); futurelocks in un-annotated code are reported as suspected at best — name sub-operations with TaskTree.scope/TaskTree.child for clearer dumps")
    }

    // MARK: - The self-test

    private static func runSelfTest() async -> Status {
        guard RuntimeTaskLayout.current.availability.isAvailable else {
            return .failed(RuntimeTaskLayout.current.availability.description)
        }
        // Resolve the lookups the readers use here, not first under some primitive's lock.
        _ = (RuntimeFrameScanner.slabMetadata, RuntimeFrameScanner.taskMetadata, SafeMemory.isAvailable)
        // A waiter's task is found through its continuation: check that it is the task itself.
        let continuationIsTask = await withUnsafeContinuation { (continuation: UnsafeContinuation<Bool, Never>) in
            continuation.resume(returning: taskAddress(of: continuation) == currentTaskAddress())
        }
        guard continuationIsTask else { return .failed("a continuation is not its task") }
        let accumulating = await withTaskGroup(of: Void.self) { _ in
            RuntimeTaskInspector.innermostGroupTypeOfCurrentTask()
        }
        let throwing = try? await withThrowingTaskGroup(of: Void.self) { _ in
            RuntimeTaskInspector.innermostGroupTypeOfCurrentTask()
        }
        let discarding = await withDiscardingTaskGroup(returning: UInt?.self) { _ in
            RuntimeTaskInspector.innermostGroupTypeOfCurrentTask()
        }
        guard let accumulating, accumulating != 0, throwing == accumulating else {
            return .failed("task groups were not found among a task's status records")
        }
        guard let discarding, discarding != accumulating else {
            return .failed("discarding and accumulating task groups could not be told apart")
        }
        for shape in [ParkedShape.groupChild, .asyncLet, .alignedResult] {
            // A busy pool can starve the scenario: one retry before giving up for the process.
            if let failure = await prove(shape, groupType: accumulating) {
                if let again = await prove(shape, groupType: accumulating) { return .failed(again + " (first try: \(failure))") }
            }
        }
        let framesReadable = await prove(.taskHandle, groupType: accumulating) == nil
        return .verified(groupType: accumulating, framesReadable: framesReadable)
    }

    enum ParkedShape { case groupChild, asyncLet, alignedResult, taskHandle }

    /// Forms a futurelock of `shape` on a private semaphore and checks that a snapshot proves the
    /// child's parked permit and relates the child to its parent; `nil` when it does.
    private static func prove(_ shape: ParkedShape, groupType: UInt) async -> String? {
        let quiet = Logger(label: "futurelock.runtime-self-test", factory: { _ in SwiftLogNoOpLogHandler() })
        let ledger = Ledger(configuration: .init(), logger: quiet, inspection: .trusting(groupType: groupType))
        guard let semaphore = try? Semaphore(name: "runtime-self-test", permits: 1, ledger: ledger) else {
            return "could not create the test semaphore"
        }
        let parent = Task.detached {
            switch shape {
            case .groupChild:
                try await withThrowingTaskGroup(of: Permit.self) { group in
                    group.addTask { try await semaphore.acquire() }
                    while semaphore.availablePermits > 0 { try Task.checkCancellation(); await Task.yield() }
                    try await semaphore.acquire().release()
                }
            case .alignedResult:
                // A result aligned to 16 bytes sits at the next 16-byte address, not offset.
                try await withThrowingTaskGroup(of: (SIMD4<Int32>, Permit).self) { group in
                    group.addTask { (SIMD4(1, 2, 3, 4), try await semaphore.acquire()) }
                    while semaphore.availablePermits > 0 { try Task.checkCancellation(); await Task.yield() }
                    try await semaphore.acquire().release()
                }
            case .asyncLet:
                async let held = semaphore.acquire()
                while semaphore.availablePermits > 0 { try Task.checkCancellation(); await Task.yield() }
                try await semaphore.acquire().release()
                try await held.release()
            case .taskHandle:
                let held = Task { try await semaphore.acquire() }
                while semaphore.availablePermits > 0 { try Task.checkCancellation(); await Task.yield() }
                try await semaphore.acquire().release()
                try await held.value.release()
            }
        }
        defer { parent.cancel() }
        let deadline = ContinuousClock.now + .seconds(5)
        var last = "the lock did not form"
        while ContinuousClock.now < deadline {
            let snapshot = ledger.snapshot()
            if let wait = snapshot.waits.first, let holding = snapshot.holdings.first {
                if case .taskHandle = shape {
                    if holding.handle?.waiter == wait.waiterTask, holding.handle?.holderState == .finished { return nil }
                    last = "the task handle was not found in the waiting task's frames"
                } else {
                    let nodes = Dictionary(snapshot.nodes.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
                    let related = nodes[holding.holder]?.parent == .task(wait.waiterTask)
                    if holding.parked?.child == holding.holderTask, related { return nil }
                    last = related ? "the parked permit was not proved" : "the child was not related to its parent"
                }
            }
            try? await Task.sleep(for: .milliseconds(2))
        }
        parent.cancel()
        _ = await parent.result
        return "\(shape): \(last)"
    }
}

extension TaskTree {
    /// Whether the watchdog proves parked results by reading suspended waiters' children, and if not,
    /// why: `nil` while the one-time self-test has not finished (it starts with the first snapshot).
    public static var runtimeInspectionStatus: String? {
        switch RuntimeInspection.status.withLock({ $0 }) {
        case .notStarted, .running: return nil
        case .verified(_, let frames):
            return "verified: parked results are read from the runtime" + (frames ? "; waiters' frames are scanned for task handles" : "; waiters' frames cannot be scanned for task handles")
        case .failed(let reason): return "unavailable: \(reason)"
        }
    }

    /// Waits for the one-time self-test of the runtime reader (a few milliseconds) and says whether
    /// parked results can be proved. The watchdog's `run()` starts it without waiting; call this before
    /// calling `check()` yourself if you want proofs from the first check on.
    @discardableResult
    public static func verifyRuntimeInspection() async -> Bool {
        if case .verified = await RuntimeInspection.selfTest.value { return true }
        return false
    }
}
