@testable import Futurelock

/// Builds exact ledger states by hand, on a test clock: "now" is fixed and every age is given in
/// seconds, so detection tests need no sleeps and no real tasks.
struct SnapshotFixture {
    var now = MonotonicInstant(nanoseconds: 100_000_000_000)
    var resources: [ResourceRecord] = []
    var nodes: [TreeNodeRecord] = []
    var holdings: [HoldingRecord] = []
    var waits: [WaitRecord] = []
    var problems: [LedgerProblem] = []
    private var holdingSerial: UInt64 = 0

    func ago(_ seconds: Double) -> MonotonicInstant {
        MonotonicInstant(nanoseconds: now.nanoseconds - UInt64(seconds * 1e9))
    }

    static func site(_ line: UInt, _ file: String = "App/Handler.swift") -> CallSite {
        CallSite(fileID: file, line: line, function: "handle()")
    }

    @discardableResult
    mutating func resource(_ id: UInt64, _ name: String, kind: ResourceKind = .semaphore, capacity: Int = 1,
                           available: Int = 0, buffered: Int = 0) -> ResourceID {
        let rid = ResourceID(rawValue: id)
        resources.append(ResourceRecord(id: rid, kind: kind, name: name, capacity: capacity,
                                        available: available, held: 0, waiting: 0, buffered: buffered))
        return rid
    }

    /// A task node. With a parent, `link` says how it hangs from it (`.structured`: a task-group or
    /// `async let` child the runtime links; `.inherited`: a scope inherited through a task-local).
    @discardableResult
    mutating func task(_ id: UInt64, parent: NodeID? = nil, link: TreeNodeRecord.ParentLink? = nil,
                       kind: RuntimeTaskKind? = nil, state: RuntimeTaskState? = nil) -> NodeID {
        let node = NodeID.task(TaskID(rawValue: id))
        nodes.append(TreeNodeRecord(id: node, kind: .task, parent: parent, name: nil, task: TaskID(rawValue: id),
                                    state: nil, openedAt: nil, closedAt: nil,
                                    link: link ?? (parent == nil ? nil : .inherited), taskKind: kind, taskState: state))
        return node
    }

    @discardableResult
    mutating func scope(_ id: UInt64, _ name: String, task: UInt64, parent: NodeID,
                        state: ScopeNode.State = .running) -> NodeID {
        let node = NodeID.scope(id)
        nodes.append(TreeNodeRecord(id: node, kind: .scope, parent: parent, name: name, task: TaskID(rawValue: task),
                                    state: state, openedAt: ago(5), closedAt: state == .running ? nil : ago(4)))
        return node
    }

    /// A holding; `pinned` for one taken by `withPermit`/`withConnection`, `parked` for one the runtime
    /// proved to sit alone in a finished child's unconsumed result.
    mutating func hold(_ resource: ResourceID, by node: NodeID, task: UInt64, line: UInt, age: Double,
                       kind: HoldingKind = .permit, pinned: Bool = false, parked: ParkedResult? = nil) {
        holdingSerial += 1
        holdings.append(HoldingRecord(id: holdingSerial, resource: resource, kind: kind, holder: node,
                                      holderTask: TaskID(rawValue: task), site: Self.site(line), since: ago(age),
                                      pinned: pinned, parked: parked))
    }

    /// The proof the runtime gives for a result of `child` parked in `parent`.
    static func parked(child: UInt64, in parent: UInt64, kind: RuntimeTaskKind = .groupChild) -> ParkedResult {
        ParkedResult(child: TaskID(rawValue: child), childKind: kind, parent: TaskID(rawValue: parent), references: 1)
    }

    mutating func wait(_ resource: ResourceID, by node: NodeID, task: UInt64, line: UInt, age: Double,
                       kind: WaitKind = .acquire, file: String = "App/Handler.swift") {
        let position = waits.filter { $0.resource == resource }.count
        waits.append(WaitRecord(resource: resource, kind: kind, waiter: node, waiterTask: TaskID(rawValue: task),
                                site: Self.site(line, file), since: ago(age), position: position))
    }

    var snapshot: LedgerSnapshot {
        var fixed = resources
        for index in fixed.indices {
            fixed[index].held = holdings.filter { $0.resource == fixed[index].id }.count
            fixed[index].waiting = waits.filter { $0.resource == fixed[index].id }.count
        }
        return LedgerSnapshot(takenAt: now, resources: fixed, holdings: holdings, waits: waits, nodes: nodes,
                              problems: problems)
    }

    func findings(_ policy: DetectionPolicy = DetectionPolicy()) -> [Finding] {
        Detector.findings(in: snapshot, policy: policy)
    }
}
