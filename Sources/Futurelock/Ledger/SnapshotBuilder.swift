/// Assembles a ``LedgerSnapshot`` from the primitives' live records.
///
/// The task tree is merged from two sources:
/// - the runtime's structured ancestry of each holder (read when the holding was recorded) and of
///   each waiter (read now: a queued waiter is alive) — task ids and kinds, parent first —
///   which is exact for task-group and `async let` children and says nothing of `Task {}`;
/// - the named scopes bound in task-locals, which give names and, for tasks the runtime does not
///   link (an unstructured `Task {}`, or everything when the runtime tree is unavailable), the scope
///   the task inherited — a weaker, `inherited` link.
/// A task's parent is its runtime parent when there is one — the innermost scope of that parent it
/// was spawned in, when a scope says so, or else the parent task itself — and otherwise the scope it
/// inherited. Scope records are read while the primitive's lock is held (a waiter's scope is only
/// borrowed from its task-local binding); task parents are resolved in ``build(takenAt:problems:taskTree:)``,
/// once every stamp has been seen, so the result does not depend on the order primitives are visited.
///
/// When the ledger may inspect the runtime, each waiter that is an ancestor of a holder of the same
/// resource has its structured children read (``RuntimeTaskInspector``), under that resource's lock;
/// holdings proved to sit only in a child's parked result get ``HoldingRecord/parked``.
struct SnapshotBuilder {
    private(set) var resources: [ResourceRecord] = []
    private(set) var holdings: [HoldingRecord] = []
    private(set) var waits: [WaitRecord] = []
    private(set) var events: [LedgerEvent] = []
    private var scopes: [NodeID: TreeNodeRecord] = [:]
    private var tasks: [TaskID: TaskFacts] = [:]
    /// Call sites converted once per distinct site, so 200,000 waiters at one line share one string.
    private var sites: [StaticCallSite: CallSite] = [:]

    /// The accumulating-group type word to inspect waiters with; `nil`: no inspection.
    let inspectionGroupType: UInt?
    /// Whether waiters' frames may be scanned for references to holders' task objects.
    let scansFrames: Bool
    /// Of the resource being visited: holders that are candidates for a frame scan, and the holding
    /// objects (address → record index) a parked result may contain.
    private var frameScanCandidates: [(index: Int, address: UInt, task: TaskID, ancestors: [UInt64])] = []
    private var holdingObjects: [UInt: Int] = [:]
    private var frameScanBudget = RuntimeFrameScanner.bytesScannedPerSnapshot
    /// Whether the resource being visited has no unit free (a frame scan is only worth it then).
    private var currentIsSaturated = false
    /// How ancestry is read for waiters (their tasks are alive while they are queued).
    let layout: RuntimeTaskLayout
    /// Why inspection was not possible, if it was attempted and failed.
    private(set) var inspectionProblem: String?
    /// Of the resource being visited: ancestors of its holders.
    private var holderAncestors: Set<UInt64> = []

    private struct TaskFacts {
        var runtimeParent: TaskID?
        var kind: RuntimeTaskKind?
        /// The scope the task inherited when it was spawned.
        var inherited: NodeID?
        var state: RuntimeTaskState?
        var resultHoldsNoReferences = false
    }

    init(layout: RuntimeTaskLayout = .current, inspectionGroupType: UInt? = nil, scansFrames: Bool = false) {
        self.layout = layout
        self.inspectionGroupType = inspectionGroupType
        self.scansFrames = scansFrames
    }

    private mutating func callSite(_ site: StaticCallSite) -> CallSite {
        if let known = sites[site] { return known }
        let converted = site.callSite
        sites[site] = converted
        return converted
    }

    mutating func add(_ resource: ResourceRecord) {
        resources.append(resource)
        waits.reserveCapacity(waits.count + resource.waiting)
        holdings.reserveCapacity(holdings.count + resource.held)
        tasks.reserveCapacity(tasks.count + resource.waiting + resource.held)
        holderAncestors.removeAll(keepingCapacity: true)
        frameScanCandidates.removeAll(keepingCapacity: true)
        holdingObjects.removeAll(keepingCapacity: true)
        currentIsSaturated = resource.blocksHead && resource.buffered == 0
    }

    /// Records a live holding. Call it under the resource's lock, before its waiters.
    mutating func addHolding(_ entry: HoldingTable.Entry, resource: ResourceID, kind: HoldingKind,
                             handsOff: Bool = false) {
        let stamp = entry.stamp
        if entry.object != 0 { holdingObjects[entry.object] = holdings.count }
        let ancestry = entry.ancestry
        let ancestors = ancestry.ancestors.map(\.id.rawValue)
        for ancestor in ancestors { holderAncestors.insert(ancestor) }
        if scansFrames, !stamp.isPinned, entry.holderAddress != 0, ancestry.kind != .asyncLet {
            frameScanCandidates.append((holdings.count, entry.holderAddress, stamp.task, ancestors))
        }
        holdings.append(HoldingRecord(
            id: entry.serial, resource: resource, kind: kind, holder: node(for: stamp, ancestry),
            holderTask: stamp.task, site: callSite(stamp.site), since: stamp.time,
            acquiredBy: entry.acquiredBy == stamp.task ? nil : entry.acquiredBy,
            backtrace: stamp.backtrace?.addresses, pinned: stamp.isPinned, siteHandsOff: handsOff,
            units: entry.units))
    }

    /// Records a waiter, whose task object is at `taskAddress` (its continuation's task). Call it
    /// under the resource's lock, after its holdings: a waiter that is an ancestor of one of them has
    /// its children inspected here.
    mutating func addWait(resource: ResourceID, kind: WaitKind, stamp: OwnerStamp, taskAddress: UInt,
                          position: Int, units: Int = 1) {
        // A queued waiter is alive and not completed, so its ancestry can be read now — once the task
        // its continuation points at shows the waiter's id.
        let address = layout.parentOffset == 0 ? 0 : HoldingTable.verified(taskAddress, is: stamp.task)
        let ancestry = layout.ancestry(ofTaskAt: address)
        waits.append(WaitRecord(
            resource: resource, kind: kind, waiter: node(for: stamp, ancestry), waiterTask: stamp.task,
            site: callSite(stamp.site), since: stamp.time, position: position, units: units))
        if address != 0, tasks[stamp.task]?.state == nil {
            tasks[stamp.task, default: TaskFacts()].state = .suspended
        }
        if let groupType = inspectionGroupType, !holderAncestors.isEmpty,
           holderAncestors.contains(stamp.task.rawValue), address != 0 {
            inspect(stamp, taskAddress: address, groupType: groupType)
        }
        if !frameScanCandidates.isEmpty, currentIsSaturated, position < RuntimeFrameScanner.waitersScannedPerResource,
           WaitForAnalysis.blocks(kind), let task = UnsafeRawPointer(bitPattern: address) {
            scanFrames(of: task, waiter: stamp.task, waiterAncestors: ancestry.ancestors.map(\.id))
        }
    }

    /// Looks for references to unrelated holders' task objects in a waiter's frames.
    private mutating func scanFrames(of task: UnsafeRawPointer, waiter: TaskID, waiterAncestors: [TaskID]) {
        // Not the waiter itself, nor its structured relatives: a reference to those is no `Task` handle.
        let candidates = frameScanCandidates.filter {
            $0.task != waiter && !$0.ancestors.contains(waiter.rawValue) && !waiterAncestors.contains($0.task)
        }
        guard !candidates.isEmpty, frameScanBudget > 0,
              let found = RuntimeFrameScanner.references(in: task, to: Set(candidates.map(\.address)),
                                                         budget: &frameScanBudget),
              !found.isEmpty else { return }
        for candidate in candidates where found.contains(candidate.address) && holdings[candidate.index].handle == nil {
            holdings[candidate.index].handle = HandleEvidence(
                waiter: waiter,
                holderState: RuntimeFrameScanner.peekState(ofTaskAt: candidate.address, id: candidate.task))
        }
    }

    private mutating func inspect(_ stamp: OwnerStamp, taskAddress: UInt, groupType: UInt) {
        switch RuntimeTaskInspector.inspect(task: taskAddress, id: stamp.task, groupType: groupType,
                                             lookingFor: Set(holdingObjects.keys)) {
        case .notSuspended:
            tasks[stamp.task, default: TaskFacts()].state = .running
        case .unknownLayout(let problem):
            inspectionProblem = problem
        case .children(let children):
            for child in children {
                var facts = tasks[child.id] ?? TaskFacts()
                facts.runtimeParent = stamp.task
                facts.kind = child.kind
                facts.state = child.state
                facts.resultHoldsNoReferences = child.resultHoldsNoReferences
                tasks[child.id] = facts
                for (object, references) in child.parked {
                    guard let index = holdingObjects[object] else { continue }
                    holdings[index].parked = ParkedResult(child: child.id, childKind: child.kind, parent: stamp.task,
                                                          references: references)
                }
            }
        }
    }

    mutating func addEvents(_ newEvents: some Sequence<LedgerEvent>) { events.append(contentsOf: newEvents) }

    /// The node a stamp belongs to, registering what it tells of the tree.
    mutating func node(for stamp: OwnerStamp, _ ancestry: TaskAncestry) -> NodeID {
        if ancestry.count == 0, stamp.nodeReference == nil {
            // The common case at scale: a top-level task with no scope.
            if tasks[stamp.task] == nil { tasks[stamp.task] = TaskFacts(kind: ancestry.kind) }
            return .task(stamp.task)
        }
        noteAncestry(stamp.task, ancestry)
        let chain = [stamp.task] + ancestry.ancestors.map(\.id)
        if let scope = stamp.node, scope.taskID == stamp.task {
            register(scope)
            relate(chain[...], inherited: scope.taskParent)
            return scope.nodeID
        }
        relate(chain[...], inherited: stamp.node)
        return .task(stamp.task)
    }

    private mutating func noteAncestry(_ task: TaskID, _ ancestry: TaskAncestry) {
        var child = task
        if tasks[task]?.kind == nil, let kind = ancestry.kind { tasks[task, default: TaskFacts()].kind = kind }
        if tasks[task] == nil { tasks[task] = TaskFacts() }
        for ancestor in ancestry.ancestors {
            if tasks[child]?.runtimeParent == nil { tasks[child]?.runtimeParent = ancestor.id }
            if tasks[ancestor.id]?.kind == nil { tasks[ancestor.id, default: TaskFacts()].kind = ancestor.kind }
            child = ancestor.id
        }
    }

    /// Records which task of `chain` (a task, then its runtime ancestors) inherited each scope of the
    /// chain that starts at `scope`.
    private mutating func relate(_ chain: ArraySlice<TaskID>, inherited scope: ScopeNode?) {
        var chain = chain
        var next = scope
        while let current = next, let bottom = chain.first {
            register(current)
            let owner = current.taskID
            let inheritor: TaskID
            if let index = chain.firstIndex(of: owner), index > chain.startIndex {
                inheritor = chain[index - 1]
                chain = chain[index...]
            } else {
                inheritor = chain.last ?? bottom
                chain = [owner][...]
            }
            if tasks[inheritor]?.inherited == nil { tasks[inheritor, default: TaskFacts()].inherited = current.nodeID }
            next = current.taskParent
        }
    }

    private mutating func register(_ scope: ScopeNode) {
        var next: ScopeNode? = scope
        while let current = next, scopes[current.nodeID] == nil {
            let parent: NodeID
            let sameTask = current.parent.map { $0.taskID == current.taskID } ?? false
            if sameTask, let up = current.parent {
                parent = up.nodeID
                next = up
            } else {
                parent = .task(current.taskID)
                if tasks[current.taskID] == nil { tasks[current.taskID] = TaskFacts() }
                next = nil
            }
            scopes[current.nodeID] = TreeNodeRecord(
                id: current.nodeID, kind: .scope, parent: parent, name: current.name, task: current.taskID,
                state: current.state, openedAt: current.openedAt, closedAt: current.closedAt, link: .sameTask)
        }
    }

    func build(takenAt: MonotonicInstant, problems: [LedgerProblem], taskTree: String?,
               inspectionUnavailable: String?) -> LedgerSnapshot {
        var nodes = Array(scopes.values)
        nodes.reserveCapacity(scopes.count + tasks.count)
        for (task, facts) in tasks {
            var parent: NodeID?
            var link: TreeNodeRecord.ParentLink?
            if let runtimeParent = facts.runtimeParent {
                link = .structured
                if let inherited = facts.inherited, scopes[inherited]?.task == runtimeParent {
                    parent = inherited
                } else {
                    parent = .task(runtimeParent)
                }
            } else if let inherited = facts.inherited {
                parent = inherited
                link = .inherited
            }
            nodes.append(TreeNodeRecord(
                id: .task(task), kind: .task, parent: parent, name: nil, task: task, state: nil,
                openedAt: nil, closedAt: nil, link: link, taskKind: facts.kind, taskState: facts.state,
                resultHoldsReferences: facts.resultHoldsNoReferences ? false : nil))
        }
        return LedgerSnapshot(
            takenAt: takenAt,
            resources: resources.sorted { $0.id < $1.id },
            holdings: holdings,
            waits: waits,
            nodes: nodes.sorted { $0.id < $1.id },
            events: events.sorted { $0.sequence < $1.sequence },
            problems: problems,
            taskTree: taskTree,
            inspectionUnavailable: inspectionProblem.map { "the runtime reader met an unexpected structure: \($0)" }
                ?? inspectionUnavailable)
    }
}
