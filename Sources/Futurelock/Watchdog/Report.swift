/// The outcome of one watchdog check.
public struct Report: Sendable {
    /// The snapshot the findings were computed from.
    public var snapshot: LedgerSnapshot
    /// Every finding that holds now, most severe first.
    public var findings: [Finding]
    /// Findings first reported by this check (each finding is reported once while it persists).
    public var new: [Finding]
    /// Findings reported earlier that no longer hold.
    public var resolved: [Finding]
    /// Native thread stacks captured when a new lock was found (when the watchdog is configured to).
    public var nativeThreads: [NativeThreadRecord] = []

    public init(snapshot: LedgerSnapshot, findings: [Finding], new: [Finding] = [], resolved: [Finding] = []) {
        self.snapshot = snapshot
        self.findings = findings
        self.new = new
        self.resolved = resolved
    }

    /// Whether any finding means a task can never proceed (futurelock, self-deadlock, deadlock).
    public var hasLock: Bool { findings.contains { $0.kind.isLock } }

    /// The dump of this report (snapshot plus findings), ready to render.
    public var dump: Dump { Dump(snapshot: snapshot, findings: findings, nativeThreads: nativeThreads) }
}
