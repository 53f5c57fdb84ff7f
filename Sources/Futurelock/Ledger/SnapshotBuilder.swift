/// Assembles a ``LedgerSnapshot`` from the primitives' live records, turning stamps (task id plus
/// task-local node) into tree nodes with their ancestors, each node once.
struct SnapshotBuilder {
    private(set) var resources: [ResourceRecord] = []
    private(set) var holdings: [HoldingRecord] = []
    private(set) var waits: [WaitRecord] = []
    private(set) var events: [LedgerEvent] = []
    private var nodes: [NodeID: TreeNodeRecord] = [:]
    /// Call sites converted once per distinct site, so 200,000 waiters at one line share one string.
    private var sites: [StaticCallSite: CallSite] = [:]

    private mutating func callSite(_ site: StaticCallSite) -> CallSite {
        if let known = sites[site] { return known }
        let converted = site.callSite
        sites[site] = converted
        return converted
    }

    mutating func add(_ resource: ResourceRecord) {
        resources.append(resource)
        // Room for every waiter and holder of this resource (and a task node each) up front.
        let expected = resource.waiting + resource.held
        waits.reserveCapacity(waits.count + resource.waiting)
        holdings.reserveCapacity(holdings.count + resource.held)
        nodes.reserveCapacity(nodes.count + expected)
    }

    mutating func addHolding(id: UInt64, resource: ResourceID, kind: HoldingKind, stamp: OwnerStamp,
                             acquiredBy: TaskID?) {
        holdings.append(HoldingRecord(
            id: id, resource: resource, kind: kind, holder: node(for: stamp), holderTask: stamp.task,
            site: callSite(stamp.site), since: stamp.time,
            acquiredBy: acquiredBy == stamp.task ? nil : acquiredBy,
            backtrace: stamp.backtrace?.addresses))
    }

    mutating func addWait(resource: ResourceID, kind: WaitKind, stamp: OwnerStamp, position: Int) {
        waits.append(WaitRecord(
            resource: resource, kind: kind, waiter: node(for: stamp), waiterTask: stamp.task,
            site: callSite(stamp.site), since: stamp.time, position: position))
    }

    mutating func addEvents(_ newEvents: some Sequence<LedgerEvent>) { events.append(contentsOf: newEvents) }

    /// The node a stamp belongs to, registering it and its ancestors.
    mutating func node(for stamp: OwnerStamp) -> NodeID {
        if let scope = stamp.node, scope.taskID == stamp.task {
            return register(scope)
        }
        return registerTask(stamp.task, inherited: stamp.node)
    }

    private mutating func registerTask(_ task: TaskID, inherited: ScopeNode?) -> NodeID {
        let id = NodeID.task(task)
        if nodes[id] != nil { return id }
        let parent = inherited.map { register($0) }
        nodes[id] = TreeNodeRecord(id: id, kind: .task, parent: parent, name: nil, task: task,
                                   state: nil, openedAt: nil, closedAt: nil)
        return id
    }

    @discardableResult
    private mutating func register(_ scope: ScopeNode) -> NodeID {
        let id = scope.nodeID
        if nodes[id] != nil { return id }
        let parent: NodeID
        if let up = scope.parent, up.taskID == scope.taskID {
            parent = register(up)
        } else {
            parent = registerTask(scope.taskID, inherited: scope.taskParent)
        }
        nodes[id] = TreeNodeRecord(id: id, kind: .scope, parent: parent, name: scope.name,
                                   task: scope.taskID, state: scope.state, openedAt: scope.openedAt,
                                   closedAt: scope.closedAt)
        return id
    }

    func build(takenAt: MonotonicInstant, problems: [LedgerProblem]) -> LedgerSnapshot {
        LedgerSnapshot(
            takenAt: takenAt,
            resources: resources.sorted { $0.id < $1.id },
            holdings: holdings,
            waits: waits,
            nodes: nodes.values.sorted { $0.id < $1.id },
            events: events.sorted { $0.sequence < $1.sequence },
            problems: problems)
    }
}
