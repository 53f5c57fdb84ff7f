/// A snapshot with its findings: what the dumps render and what the JSON Lines reader reads back.
public struct Dump: Sendable {
    /// The ledger state.
    public var snapshot: LedgerSnapshot
    /// What the watchdog found in it.
    public var findings: [Finding]

    public init(snapshot: LedgerSnapshot, findings: [Finding]) {
        self.snapshot = snapshot
        self.findings = findings
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
