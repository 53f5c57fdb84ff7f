/// Identifies an instrumented resource (a semaphore, a channel, a pool) within one ledger.
public struct ResourceID: Hashable, Sendable, Comparable, Codable, CustomStringConvertible {
    /// Serial number within the ledger.
    public var rawValue: UInt64
    /// Wraps a serial number.
    public init(rawValue: UInt64) { self.rawValue = rawValue }
    public static func < (lhs: ResourceID, rhs: ResourceID) -> Bool { lhs.rawValue < rhs.rawValue }
    public var description: String { "resource:\(rawValue)" }
    public init(from decoder: any Decoder) throws {
        rawValue = try decoder.singleValueContainer().decode(UInt64.self)
    }
    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(rawValue)
    }
}

/// What kind of primitive a resource is.
public enum ResourceKind: String, Sendable, Codable {
    case semaphore, channel, pool
}

/// One instrumented resource at the moment of the snapshot.
public struct ResourceRecord: Sendable, Hashable, Codable {
    public var id: ResourceID
    public var kind: ResourceKind
    public var name: String
    /// Permits, slots or connections in total.
    public var capacity: Int
    /// Free right now (not held, not buffered).
    public var available: Int
    /// Holdings outstanding (permits, reserved send slots, leased connections).
    public var held: Int
    /// Tasks waiting.
    public var waiting: Int
    /// Messages buffered in a channel (zero for other kinds).
    public var buffered: Int
    /// Closed channel or shut-down pool.
    public var closed: Bool
    /// Units the head waiter asks for, when more than 1 (a semaphore's `acquire(permits:)`): the
    /// resource blocks its queue while fewer than that are free. `nil` means 1.
    public var headRequest: Int?

    public init(id: ResourceID, kind: ResourceKind, name: String, capacity: Int, available: Int,
                held: Int, waiting: Int, buffered: Int = 0, closed: Bool = false, headRequest: Int? = nil) {
        self.id = id; self.kind = kind; self.name = name; self.capacity = capacity
        self.available = available; self.held = held; self.waiting = waiting
        self.buffered = buffered; self.closed = closed; self.headRequest = headRequest
    }

    /// Whether what is free cannot serve the head waiter: nothing free, or less than its request.
    public var blocksHead: Bool { available < max(headRequest ?? 1, 1) }
}

/// What a holding is.
public enum HoldingKind: String, Sendable, Codable {
    /// A semaphore permit.
    case permit
    /// A channel slot reserved with `reserve()` and not yet used to send.
    case sendSlot
    /// A pool connection that is checked out.
    case connection
}

/// One outstanding permit, reserved slot or leased connection.
public struct HoldingRecord: Sendable, Hashable, Codable {
    /// Unique within its resource while outstanding.
    public var id: UInt64
    public var resource: ResourceID
    public var kind: HoldingKind
    /// The innermost tree node that holds it (a scope of the holding task, or the task).
    public var holder: NodeID
    /// The task that holds it.
    public var holderTask: TaskID
    /// Where it was acquired.
    public var site: CallSite
    /// When it was acquired (coarse clock).
    public var since: MonotonicInstant
    /// The task that originally acquired it, when ownership has moved since.
    public var acquiredBy: TaskID?
    /// Captured acquisition backtrace (return addresses), when capture is on.
    public var backtrace: [UInt]?
    /// `true` when it was acquired by a scoped call (`withPermit`, `withConnection`): the holding
    /// object never reached user code, so only the end of that call, in the holder task, releases it.
    /// `nil` means `false` (and is what dumps written before this field existed decode to).
    public var pinned: Bool?
    /// Proof that the holding sits in the parked result of a finished child task, and nowhere else.
    public var parked: ParkedResult?
    /// `true` when holdings acquired at the same site have been released or claimed by tasks other
    /// than their holder before: the code there hands them on (`nil` means `false`).
    public var siteHandsOff: Bool?
    /// A waiting task whose suspended frames refer to the holder's task object — most likely the
    /// `Task` handle it means to await (evidence, not proof: frames keep stale words).
    public var handle: HandleEvidence?
    /// Permits the holding stands for, when more than 1 (`acquire(permits:)`); `nil` means 1.
    public var units: Int?

    public init(id: UInt64, resource: ResourceID, kind: HoldingKind, holder: NodeID, holderTask: TaskID,
                site: CallSite, since: MonotonicInstant, acquiredBy: TaskID? = nil, backtrace: [UInt]? = nil,
                pinned: Bool = false, parked: ParkedResult? = nil, siteHandsOff: Bool = false, units: Int = 1) {
        self.id = id; self.resource = resource; self.kind = kind; self.holder = holder
        self.holderTask = holderTask; self.site = site; self.since = since
        self.acquiredBy = acquiredBy; self.backtrace = backtrace
        self.pinned = pinned ? true : nil; self.parked = parked
        self.siteHandsOff = siteHandsOff ? true : nil
        self.units = units > 1 ? units : nil
    }

    /// How many units the holding is.
    public var unitCount: Int { units ?? 1 }

    /// Whether only the end of the scoped call that acquired it can release it.
    public var isPinned: Bool { pinned ?? false }
}

/// A waiter's frames refer to the task object of a holder that is not its structured child.
public struct HandleEvidence: Sendable, Hashable, Codable {
    /// The waiting task whose frames hold the reference.
    public var waiter: TaskID
    /// What the holder task seemed to be doing, read from memory that may no longer be the task's
    /// (`nil` when it did not look like that task any more).
    public var holderState: RuntimeTaskState?

    public init(waiter: TaskID, holderState: RuntimeTaskState?) {
        self.waiter = waiter; self.holderState = holderState
    }
}

/// Where the runtime showed a holding to be: in the result of a finished structured child task that
/// its parent — suspended in a wait — has not consumed, with no other reference to the holding object.
public struct ParkedResult: Sendable, Hashable, Codable {
    /// The finished child whose result holds it.
    public var child: TaskID
    /// How the child belongs to its parent.
    public var childKind: RuntimeTaskKind
    /// The task that alone can consume the result.
    public var parent: TaskID
    /// References the result holds to the holding object (usually 1); they are all there are.
    public var references: Int

    public init(child: TaskID, childKind: RuntimeTaskKind, parent: TaskID, references: Int) {
        self.child = child; self.childKind = childKind; self.parent = parent; self.references = references
    }
}

/// What a waiter is waiting to do.
public enum WaitKind: String, Sendable, Codable {
    case acquire, send, reserve, receive, checkout
}

/// One task suspended on a resource.
public struct WaitRecord: Sendable, Hashable, Codable {
    public var resource: ResourceID
    public var kind: WaitKind
    /// The innermost tree node that waits.
    public var waiter: NodeID
    /// The task that waits.
    public var waiterTask: TaskID
    /// Where the wait was written.
    public var site: CallSite
    /// When the wait started (coarse clock).
    public var since: MonotonicInstant
    /// 0 for the head of the queue.
    public var position: Int
    /// Permits asked for, when more than 1 (`acquire(permits:)`); `nil` means 1.
    public var units: Int?

    public init(resource: ResourceID, kind: WaitKind, waiter: NodeID, waiterTask: TaskID, site: CallSite,
                since: MonotonicInstant, position: Int, units: Int = 1) {
        self.resource = resource; self.kind = kind; self.waiter = waiter; self.waiterTask = waiterTask
        self.site = site; self.since = since; self.position = position
        self.units = units > 1 ? units : nil
    }
}

/// A node of the task tree as seen in a snapshot.
public struct TreeNodeRecord: Sendable, Hashable, Codable {
    public enum Kind: String, Sendable, Codable { case task, scope }

    /// How a node hangs from its parent.
    public enum ParentLink: String, Sendable, Codable {
        /// A scope inside the same task as its parent node.
        case sameTask
        /// A structured child task (task group, `async let`): the runtime links it to its parent, which
        /// cannot go on past the child's scope before the child has completed.
        case structured
        /// The task inherited its parent's scope through a task-local — an unstructured `Task {}`, or
        /// any child when the runtime's tree is not read. Not proof that the parent awaits it.
        case inherited
    }
    public var id: NodeID
    public var kind: Kind
    /// The parent node; `nil` for roots.
    public var parent: NodeID?
    /// Scope name; `nil` for tasks.
    public var name: String?
    /// The task the node belongs to (for a task node, itself).
    public var task: TaskID
    /// Lifecycle of a scope; `nil` for tasks (the runtime does not tell).
    public var state: ScopeNode.State?
    public var openedAt: MonotonicInstant?
    public var closedAt: MonotonicInstant?
    /// How the node hangs from `parent` (`nil` for roots and for dumps that predate the field).
    public var link: ParentLink?
    /// For tasks: how the runtime relates the task to its creator (`nil` when the runtime was not read).
    public var taskKind: RuntimeTaskKind?
    /// For tasks: what the runtime showed the task doing, when it could be read safely (waiters, and
    /// the structured children of waiters); `nil` when unknown.
    public var taskState: RuntimeTaskState?
    /// For a finished task: `false` when its result's type holds no references at all (`Void`, plain
    /// values), so no holding can be parked in it; `nil` when it can, or is not known.
    public var resultHoldsReferences: Bool?

    public init(id: NodeID, kind: Kind, parent: NodeID?, name: String?, task: TaskID,
                state: ScopeNode.State?, openedAt: MonotonicInstant?, closedAt: MonotonicInstant?,
                link: ParentLink? = nil, taskKind: RuntimeTaskKind? = nil, taskState: RuntimeTaskState? = nil,
                resultHoldsReferences: Bool? = nil) {
        self.id = id; self.kind = kind; self.parent = parent; self.name = name; self.task = task
        self.state = state; self.openedAt = openedAt; self.closedAt = closedAt
        self.link = link; self.taskKind = taskKind; self.taskState = taskState
        self.resultHoldsReferences = resultHoldsReferences
    }
}

/// A misuse the ledger caught: a release of something already released, or a holding dropped
/// without being released (which the primitive then released on the owner's behalf).
public struct LedgerProblem: Sendable, Hashable, Codable {
    public enum Kind: String, Sendable, Codable {
        case doubleRelease
        case droppedWithoutRelease
    }
    public var kind: Kind
    public var resource: ResourceID
    public var resourceName: String
    public var holdingKind: HoldingKind
    /// Where the holding was acquired (when the ledger knew).
    public var acquiredAt: CallSite?
    /// The task that acquired it (when the ledger knew).
    public var acquiredBy: TaskID?
    /// Where the offending release was written (double release only).
    public var releasedAt: CallSite?
    /// The task that made the offending call (double release only).
    public var releasedBy: TaskID?
    public var time: MonotonicInstant

    /// One line a person can act on.
    public var message: String {
        let origin = acquiredAt.map { " acquired at \($0)" } ?? ""
        switch kind {
        case .doubleRelease:
            let at = releasedAt.map { " at \($0)" } ?? ""
            return "\(holdingKind.rawValue) of '\(resourceName)'\(origin) was released twice (second release\(at)); the second release was ignored"
        case .droppedWithoutRelease:
            return "\(holdingKind.rawValue) of '\(resourceName)'\(origin) was dropped without release; it was released on the owner's behalf — release it explicitly or use the scoped form"
        }
    }
}

/// What happened to a resource, when the ledger keeps event history.
public struct LedgerEvent: Sendable, Hashable, Codable {
    public enum Kind: String, Sendable, Codable {
        case grant, release, handoff, waitStart, waitEnd, transfer, send, receive, close, cancelled
        /// Permits added to a semaphore, or removed from it for good (`forgetPermits`, `Permit.forget`).
        case permitsAdded, permitsForgotten
    }
    /// Orders events across resources.
    public var sequence: UInt64
    public var time: MonotonicInstant
    public var kind: Kind
    public var resource: ResourceID
    public var task: TaskID
    public var node: NodeID
    public var site: CallSite
}

/// An immutable view of everything a ledger knows at one moment: the only input of the watchdog.
public struct LedgerSnapshot: Sendable, Codable {
    /// When the snapshot was taken (precise clock).
    public var takenAt: MonotonicInstant
    public var resources: [ResourceRecord]
    public var holdings: [HoldingRecord]
    public var waits: [WaitRecord]
    /// Every node referenced by a holding or a wait, with all its ancestors.
    public var nodes: [TreeNodeRecord]
    /// Recent events, oldest first (empty unless event history is on).
    public var events: [LedgerEvent]
    /// Misuses caught since the ledger was created (most recent last, bounded).
    public var problems: [LedgerProblem]
    /// Where the task tree came from (the runtime, or named scopes only and why), for dump headers.
    public var taskTree: String?
    /// Why parked results could not be proved from the runtime, when they could not (`nil`: they could).
    public var inspectionUnavailable: String?

    public init(takenAt: MonotonicInstant, resources: [ResourceRecord] = [], holdings: [HoldingRecord] = [],
                waits: [WaitRecord] = [], nodes: [TreeNodeRecord] = [], events: [LedgerEvent] = [],
                problems: [LedgerProblem] = [], taskTree: String? = nil, inspectionUnavailable: String? = nil) {
        self.takenAt = takenAt; self.resources = resources; self.holdings = holdings; self.waits = waits
        self.nodes = nodes; self.events = events; self.problems = problems
        self.taskTree = taskTree; self.inspectionUnavailable = inspectionUnavailable
    }
}
