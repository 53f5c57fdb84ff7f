/// Lookup tables over one snapshot, built once per check: O(nodes + holdings + waits).
struct SnapshotIndex {
    let snapshot: LedgerSnapshot
    let nodes: [NodeID: TreeNodeRecord]
    let resources: [ResourceID: ResourceRecord]
    let holdingsByResource: [ResourceID: [HoldingRecord]]
    let waitsByResource: [ResourceID: [WaitRecord]]
    /// A task is suspended in at most one wait at a time.
    let waitByTask: [TaskID: WaitRecord]

    init(_ snapshot: LedgerSnapshot) {
        self.snapshot = snapshot
        var nodes: [NodeID: TreeNodeRecord] = [:]
        nodes.reserveCapacity(snapshot.nodes.count)
        for node in snapshot.nodes { nodes[node.id] = node }
        self.nodes = nodes
        self.resources = Dictionary(snapshot.resources.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
        self.holdingsByResource = Dictionary(grouping: snapshot.holdings, by: \.resource)
        var waits = Dictionary(grouping: snapshot.waits, by: \.resource)
        for key in waits.keys { waits[key]!.sort { $0.position < $1.position } }
        self.waitsByResource = waits
        var byTask = [TaskID: WaitRecord](minimumCapacity: snapshot.waits.count)
        for wait in snapshot.waits { byTask[wait.waiterTask] = wait }
        self.waitByTask = byTask
    }

    /// The node and its ancestors, innermost first.
    func ancestry(of id: NodeID) -> [TreeNodeRecord] {
        var chain: [TreeNodeRecord] = []
        var current: NodeID? = id
        var guardCount = 0
        while let here = current, let record = nodes[here], guardCount < 10_000 {
            chain.append(record)
            current = record.parent
            guardCount += 1
        }
        return chain
    }

    /// Human path, root first: `task 12 › request › task 14`.
    func path(of id: NodeID) -> [String] {
        let chain = ancestry(of: id)
        if chain.isEmpty {
            if case .task(let task) = id { return [task == .none ? "in transit" : "task \(task.rawValue)"] }
            return [id.description]
        }
        return chain.reversed().map { record in
            switch record.kind {
            case .task: return record.task == .none ? "in transit" : "task \(record.task.rawValue)"
            case .scope: return record.name ?? record.id.description
            }
        }
    }

    /// What the runtime showed a task doing, when the snapshot knows.
    func taskState(of task: TaskID) -> RuntimeTaskState? {
        nodes[.task(task)]?.taskState
    }

    /// Whether `ancestor` is a runtime ancestor of `task` through structured links only.
    func isStructuredAncestor(_ ancestor: TaskID, of task: TaskID) -> Bool {
        var current = nodes[.task(task)]
        var guardCount = 0
        while let node = current, guardCount < 10_000 {
            guardCount += 1
            guard let parent = node.parent else { return false }
            if node.kind == .task, node.link != .structured { return false }
            if case .task(let id) = parent, id == ancestor { return true }
            if let up = nodes[parent], up.task == ancestor { return true }
            current = nodes[parent]
        }
        return false
    }

    func resourceLabel(_ id: ResourceID) -> Finding.Resource {
        let record = resources[id]
        return Finding.Resource(id: id, kind: record?.kind ?? .semaphore, name: record?.name ?? id.description)
    }

    func age(since: MonotonicInstant) -> Double {
        snapshot.takenAt.duration(since: since).secondsDouble
    }
}
