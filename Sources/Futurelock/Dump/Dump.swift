/// A snapshot with its findings: what the dumps render and what the JSON Lines reader reads back.
public struct Dump: Sendable {
    /// The ledger state.
    public var snapshot: LedgerSnapshot
    /// What the watchdog found in it.
    public var findings: [Finding]
    /// Native thread stacks of the process at the moment of the dump (empty unless captured).
    public var nativeThreads: [NativeThreadRecord]

    public init(snapshot: LedgerSnapshot, findings: [Finding], nativeThreads: [NativeThreadRecord] = []) {
        self.snapshot = snapshot
        self.findings = findings
        self.nativeThreads = nativeThreads
    }

    /// Renders the dump.
    ///
    /// - Parameter waitThreshold: waits and holds older than this are marked `!!!` in text.
    public func render(_ format: DumpFormat, waitThreshold: Duration = .seconds(1)) throws -> String {
        switch format {
        case .text: return TextDump.render(self, waitThreshold: waitThreshold)
        case .jsonLines: return try JSONLinesDump.write(self)
        case .dot: return DotDump.render(self)
        }
    }
}

/// The formats a dump can be rendered in.
public enum DumpFormat: String, Sendable, CaseIterable, Codable {
    /// For people: findings first, then an await-tree per root task.
    case text
    /// For tools: one JSON object per line (see Docs/Guides/DumpFormat.md).
    case jsonLines = "json"
    /// Graphviz: the wait-for graph and the task tree.
    case dot
}

/// One native thread of the process, unwound and symbolicated (by FuturelockSymbols, through libdw).
public struct NativeThreadRecord: Sendable, Hashable, Codable {
    /// Kernel thread id.
    public var tid: Int32
    /// The thread's name (`/proc/PID/task/TID/comm`).
    public var name: String
    /// One line per frame, innermost first, e.g. `0x… in Futurelock.Semaphore.acquire() at Semaphore.swift:42`.
    public var frames: [String]
    /// Why unwinding stopped early, if it did.
    public var error: String?

    public init(tid: Int32, name: String, frames: [String], error: String? = nil) {
        self.tid = tid; self.name = name; self.frames = frames; self.error = error
    }
}
