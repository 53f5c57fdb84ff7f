/// Classifies the waits of one snapshot: who is stuck for good, and why.
///
/// ## The rule
/// A waiter W on resource R can never be granted when every unit of R is held by something that
/// cannot release while W waits:
/// - W's own task (it is suspended in this very wait) — *self*;
/// - work inside W's own tree that W no longer drives: a descendant whose innermost tracked scope has
///   finished (or was cancelled) without its result being consumed — *parked* (certain) — or an
///   un-annotated descendant task, whose state the runtime does not tell us — *parked* (suspected,
///   only after the grace period);
/// - a task that is itself stuck, or parked work inside a stuck task's tree.
/// The set of stuck tasks is the greatest fixed point of that rule: start from every waiting task and
/// remove any whose resource has a holder that could still release, until nothing changes.
///
/// Each stuck task then points at the tasks responsible for its blockers. A task that points only at
/// itself is a futurelock (some blocker is parked) or a self-deadlock (all blockers are its own); a
/// cycle through several tasks is a deadlock; a stuck task outside any cycle is a victim, counted in
/// the queue of the finding it waits behind.
struct WaitForAnalysis {
    /// Why a holding blocks a waiter.
    enum Blocker: Equatable {
        case selfHeld
        case parked(certain: Bool, scope: String?)
        case runningChild(scope: String)
        case other
    }

    let index: SnapshotIndex
    let policy: DetectionPolicy
    /// The ancestry of every holder, walked once: holders are few, waiters can be 200,000, and every
    /// waiter's classification walks its blockers' ancestry.
    let holderChains: [NodeID: [TreeNodeRecord]]

    init(_ snapshot: LedgerSnapshot, policy: DetectionPolicy) {
        self.index = SnapshotIndex(snapshot)
        self.policy = policy
        var chains: [NodeID: [TreeNodeRecord]] = [:]
        for holding in snapshot.holdings where chains[holding.holder] == nil {
            chains[holding.holder] = index.ancestry(of: holding.holder)
        }
        self.holderChains = chains
    }

    private func chain(of holder: NodeID) -> [TreeNodeRecord] {
        holderChains[holder] ?? index.ancestry(of: holder)
    }

    static func blocks(_ kind: WaitKind) -> Bool { kind != .receive }

    /// How holding `h` relates to task `waiter`.
    func relation(_ holding: HoldingRecord, to waiter: TaskID) -> Blocker {
        // Handed off and not yet claimed: whoever has it can release it.
        if holding.holderTask == .none { return .other }
        if holding.holderTask == waiter { return .selfHeld }
        // A holder that is itself waiting is blocked, not parked: the cycle analysis decides.
        if index.waitByTask[holding.holderTask] != nil { return .other }
        // Below the waiter's own nodes, the innermost scope that is not `consumed` decides.
        var verdict: Blocker?
        for node in chain(of: holding.holder) {
            if node.task == waiter { return verdict ?? .parked(certain: false, scope: nil) }
            if verdict == nil, node.kind == .scope {
                switch node.state {
                case .finished?, .cancelled?: verdict = .parked(certain: true, scope: node.name)
                case .running?: verdict = .runningChild(scope: node.name ?? node.id.description)
                case .consumed?, nil: break
                }
            }
        }
        return .other
    }

    /// A resource whose every unit is held by a recorded holding (nothing free, nothing buffered or
    /// being created whose fate the ledger cannot see).
    func isSaturated(_ resource: ResourceID) -> Bool {
        guard let record = index.resources[resource] else { return false }
        let held = index.holdingsByResource[resource]?.count ?? 0
        return record.available == 0 && record.buffered == 0 && held >= record.capacity
    }

    struct Edge {
        var from: TaskID
        var to: TaskID
        var holding: HoldingRecord
        var blocker: Blocker
    }

    struct Result {
        var stuck: Set<TaskID>
        var edges: [TaskID: [Edge]]
    }

    private func graceMet(_ holding: HoldingRecord, _ wait: WaitRecord) -> Bool {
        let grace = policy.gracePeriod.secondsDouble
        return index.age(since: holding.since) >= grace && index.age(since: wait.since) >= grace
    }

    /// The task responsible for `holding` from the point of view of `waiter`, if it is stuck.
    private func responsible(for holding: HoldingRecord, waiter: WaitRecord, stuck: Set<TaskID>)
        -> (TaskID, Blocker)?
    {
        let direct = relation(holding, to: waiter.waiterTask)
        switch direct {
        case .selfHeld: return (waiter.waiterTask, direct)
        case .parked(let certain, _):
            if certain || graceMet(holding, waiter) { return (waiter.waiterTask, direct) }
            return nil
        case .runningChild: return nil
        case .other: break
        }
        if stuck.contains(holding.holderTask) { return (holding.holderTask, .other) }
        // Parked work inside the tree of some other stuck task.
        for node in chain(of: holding.holder) where node.task != holding.holderTask {
            guard stuck.contains(node.task), let ownerWait = index.waitByTask[node.task] else { continue }
            switch relation(holding, to: node.task) {
            case .parked(let certain, _) where certain || graceMet(holding, ownerWait):
                return (node.task, .parked(certain: certain, scope: nil))
            default:
                return nil
            }
        }
        return nil
    }

    func analyse() -> Result {
        var stuck = Set<TaskID>(minimumCapacity: index.snapshot.waits.count)
        for wait in index.snapshot.waits where Self.blocks(wait.kind) && isSaturated(wait.resource) {
            stuck.insert(wait.waiterTask)
        }
        var edges: [TaskID: [Edge]] = [:]
        var changed = true
        while changed {
            changed = false
            edges.removeAll(keepingCapacity: true)
            for task in stuck {
                guard let wait = index.waitByTask[task] else { stuck.remove(task); changed = true; continue }
                var out: [Edge] = []
                var ok = true
                for holding in index.holdingsByResource[wait.resource] ?? [] {
                    guard let (target, blocker) = responsible(for: holding, waiter: wait, stuck: stuck) else {
                        ok = false
                        break
                    }
                    out.append(Edge(from: task, to: target, holding: holding, blocker: blocker))
                }
                if ok {
                    edges[task] = out
                } else {
                    stuck.remove(task)
                    changed = true
                }
            }
        }
        return Result(stuck: stuck, edges: edges)
    }

    /// Strongly connected components of the stuck graph (iterative Tarjan: 200,000 tasks would
    /// overflow a recursive one).
    static func components(of result: Result) -> [[TaskID]] {
        var indexOf: [TaskID: Int] = [:]
        var lowlink: [TaskID: Int] = [:]
        var onStack = Set<TaskID>()
        var stack: [TaskID] = []
        var components: [[TaskID]] = []
        var counter = 0
        for root in result.stuck.sorted() where indexOf[root] == nil {
            var work: [(TaskID, Int)] = [(root, 0)]
            indexOf[root] = counter; lowlink[root] = counter; counter += 1
            stack.append(root); onStack.insert(root)
            while let (node, next) = work.last {
                let out = result.edges[node] ?? []
                if next < out.count {
                    work[work.count - 1].1 = next + 1
                    let target = out[next].to
                    guard result.stuck.contains(target) else { continue }
                    if indexOf[target] == nil {
                        indexOf[target] = counter; lowlink[target] = counter; counter += 1
                        stack.append(target); onStack.insert(target)
                        work.append((target, 0))
                    } else if onStack.contains(target) {
                        lowlink[node] = min(lowlink[node]!, indexOf[target]!)
                    }
                } else {
                    work.removeLast()
                    if let parent = work.last?.0 { lowlink[parent] = min(lowlink[parent]!, lowlink[node]!) }
                    if lowlink[node] == indexOf[node] {
                        var component: [TaskID] = []
                        while let top = stack.popLast() {
                            onStack.remove(top)
                            component.append(top)
                            if top == node { break }
                        }
                        components.append(component)
                    }
                }
            }
        }
        return components
    }
}
