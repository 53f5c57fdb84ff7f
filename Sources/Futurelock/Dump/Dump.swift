/// A snapshot with its findings: what the dumps render and what the JSON Lines reader reads back.
public struct Dump: Sendable {
    /// The ledger state.
    public var snapshot: LedgerSnapshot
    /// What the watchdog found in it.
    public var findings: [Finding]
    /// Native thread stacks of the process at the moment of the dump (empty unless captured).
    public var nativeThreads: [NativeThreadRecord]
    /// Identical waiters summarised as groups (only in dumps read back from JSON Lines, where they
    /// were grouped when written; a live snapshot lists every waiter).
    public var waitGroups: [WaitGroupRecord]

    public init(snapshot: LedgerSnapshot, findings: [Finding], nativeThreads: [NativeThreadRecord] = [],
                waitGroups: [WaitGroupRecord] = []) {
        self.snapshot = snapshot
        self.findings = findings
        self.nativeThreads = nativeThreads
        self.waitGroups = waitGroups
    }

    /// Renders the dump.
    ///
    /// - Parameter waitThreshold: waits older than this are marked `!!!` in text.
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

/// Identical waiters written as one record: plain tasks (holding nothing, with no children) that wait
/// for the same resource, in the same way, at the same site, under the same parent.
public struct WaitGroupRecord: Sendable, Hashable, Codable {
    public var resource: ResourceID
    public var kind: WaitKind
    public var site: CallSite
    /// The parent node of every waiting task (`nil` for root tasks).
    public var parent: NodeID?
    /// How many tasks wait.
    public var count: Int
    /// The lowest and highest queue positions among them.
    public var firstPosition: Int
    public var lastPosition: Int
    /// When the longest and the shortest of their waits started.
    public var oldestSince: MonotonicInstant
    public var newestSince: MonotonicInstant
    /// A few of the tasks, for reference.
    public var sampleTasks: [TaskID]

    /// Groups the snapshot's identical plain waiters; returns the groups and the node ids they replace.
    static func group(_ snapshot: LedgerSnapshot, threshold: Int, keep: Set<NodeID>) -> ([WaitGroupRecord], Set<NodeID>) {
        var hasChildren = Set<NodeID>()
        for node in snapshot.nodes { if let parent = node.parent { hasChildren.insert(parent) } }
        let holders = Set(snapshot.holdings.map(\.holder))
        var parentOf: [NodeID: NodeID?] = [:]
        for node in snapshot.nodes where node.kind == .task { parentOf[node.id] = node.parent }
        struct Key: Hashable { var resource: ResourceID; var kind: WaitKind; var site: CallSite; var parent: NodeID? }
        var buckets: [Key: [WaitRecord]] = [:]
        var waitsPerNode: [NodeID: Int] = [:]
        for wait in snapshot.waits { waitsPerNode[wait.waiter, default: 0] += 1 }
        for wait in snapshot.waits {
            guard case .task = wait.waiter, let parent = parentOf[wait.waiter], !hasChildren.contains(wait.waiter),
                  !holders.contains(wait.waiter), !keep.contains(wait.waiter), waitsPerNode[wait.waiter] == 1 else { continue }
            buckets[Key(resource: wait.resource, kind: wait.kind, site: wait.site, parent: parent), default: []].append(wait)
        }
        var groups: [WaitGroupRecord] = []
        var replaced = Set<NodeID>()
        for (key, waits) in buckets where waits.count > threshold {
            // Keep the head of the queue individually: it is the one a finding is most likely to name.
            let sorted = waits.sorted { $0.position < $1.position }
            let rest = sorted.dropFirst()
            for wait in rest { replaced.insert(wait.waiter) }
            groups.append(WaitGroupRecord(
                resource: key.resource, kind: key.kind, site: key.site, parent: key.parent, count: rest.count,
                firstPosition: rest.first!.position, lastPosition: rest.last!.position,
                oldestSince: rest.map(\.since).min()!, newestSince: rest.map(\.since).max()!,
                sampleTasks: rest.prefix(5).map(\.waiterTask)))
        }
        return (groups.sorted { ($0.resource, $0.firstPosition) < ($1.resource, $1.firstPosition) }, replaced)
    }
}
