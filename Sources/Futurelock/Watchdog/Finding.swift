/// One problem the watchdog found, with everything a person needs to act on it.
public struct Finding: Sendable, Hashable, Codable {
    /// What kind of problem.
    public enum Kind: String, Sendable, Codable, CaseIterable {
        /// A task waits for a resource held inside its own tree by work it no longer drives.
        case futurelock
        /// A task waits for something it already holds.
        case selfDeadlock
        /// A cycle of waits across tasks.
        case deadlock
        /// A long wait or a long hold with no cycle: a warning, never a lock.
        case stall
        /// A holding that nobody can release any more.
        case leak

        /// A one-fragment summary of the kind.
        public var title: String {
            switch self {
            case .futurelock: return "futurelock: a task waits behind work it no longer drives"
            case .selfDeadlock: return "self-deadlock: a task waits for what it already holds"
            case .deadlock: return "deadlock: tasks wait for each other in a cycle"
            case .stall: return "stall: a long wait or hold (no cycle found)"
            case .leak: return "leak: a holding nobody can release"
            }
        }

        /// Whether the finding means the waiter can never proceed.
        public var isLock: Bool { self == .futurelock || self == .selfDeadlock || self == .deadlock }
    }

    /// How the watchdog knows.
    public enum Certainty: String, Sendable, Codable {
        /// Proved from the ledger and the task tree, confirmed on two snapshots.
        case certain
        /// Inferred with a heuristic; `evidence` and `gracePeriod` say which.
        case suspected
    }

    /// A task (or scope) involved in a finding.
    public struct Party: Sendable, Hashable, Codable {
        /// The task.
        public var task: TaskID
        /// The innermost node (scope or task).
        public var node: NodeID
        /// The path from the root, e.g. `["task 12", "request", "task 14"]`.
        public var path: [String]
        /// Where it acquired or started waiting.
        public var site: CallSite
        /// How long it has held or waited, in seconds, when the snapshot was taken.
        public var age: Double
        /// For waiters: position in the queue (0 = head).
        public var position: Int?
        /// Symbolicated acquisition backtrace, when captured and symbolicated.
        public var backtrace: [String]?

        public init(task: TaskID, node: NodeID, path: [String], site: CallSite, age: Double,
                    position: Int? = nil, backtrace: [String]? = nil) {
            self.task = task; self.node = node; self.path = path; self.site = site; self.age = age
            self.position = position; self.backtrace = backtrace
        }

        /// `task 12 › request › task 14`
        public var pathDescription: String { path.joined(separator: " › ") }
    }

    /// Waiters queued behind the blocked one, grouped by the site they wait at.
    public struct QueueGroup: Sendable, Hashable, Codable {
        public var site: CallSite
        public var count: Int
        public init(site: CallSite, count: Int) { self.site = site; self.count = count }
    }

    /// The resource involved.
    public struct Resource: Sendable, Hashable, Codable {
        public var id: ResourceID
        public var kind: ResourceKind
        public var name: String
        public init(id: ResourceID, kind: ResourceKind, name: String) {
            self.id = id; self.kind = kind; self.name = name
        }
        /// `semaphore 'db'`
        public var label: String { "\(kind.rawValue) '\(name)'" }
    }

    public var kind: Kind
    public var certainty: Certainty
    /// Facts the classification rests on.
    public var evidence: [String]
    /// For suspected findings: the grace period (seconds) the evidence had to persist.
    public var gracePeriod: Double?
    public var resource: Resource
    /// Who holds the resource (for a deadlock: the holder of the first edge of the cycle).
    public var holder: Party?
    /// Who is blocked.
    public var waiter: Party?
    /// For deadlocks: every wait edge of the cycle, as "waiter waits for resource held by holder".
    public var cycle: [String]
    /// How many other waiters queue on the same resource.
    public var queued: Int
    /// Those waiters grouped by call site, largest group first.
    public var queuedBySite: [QueueGroup]
    /// One line.
    public var summary: String
    /// Full sentences: what happened and why it cannot resolve itself.
    public var explanation: String
    /// What to change in the code.
    public var fix: String
    /// Identifies the finding across checks while it persists.
    public var key: String

    public init(kind: Kind, certainty: Certainty, evidence: [String], gracePeriod: Double?, resource: Resource,
                holder: Party?, waiter: Party?, cycle: [String], queued: Int, queuedBySite: [QueueGroup],
                summary: String, explanation: String, fix: String, key: String) {
        self.kind = kind; self.certainty = certainty; self.evidence = evidence; self.gracePeriod = gracePeriod
        self.resource = resource; self.holder = holder; self.waiter = waiter; self.cycle = cycle
        self.queued = queued; self.queuedBySite = queuedBySite; self.summary = summary
        self.explanation = explanation; self.fix = fix; self.key = key
    }
}
