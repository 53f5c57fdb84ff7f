/// Classifies the waits of one snapshot: who is stuck for good, why, and how sure that is.
///
/// ## The rule
/// A waiter W on resource R can never be granted when every unit of R is held by something that
/// cannot release while W waits:
/// - W's own task (it is suspended in this very wait) — *self*. Proved only when the holding is
///   *pinned* (acquired by `withPermit`/`withConnection`, so the object never reached user code);
///   a `Permit` or `Lease` object the task holds may have been handed to another task (captured by a
///   `Task {}`, sent through an `AsyncStream`), which the ledger cannot see, so an unpinned one only
///   counts once it and the wait are older than the grace period, and then as suspected;
/// - work inside W's own tree that W no longer drives — *parked*:
///   - proved by the runtime: the holding object sits in the result of a finished structured child
///     of W (task group, `async let`) that W has not consumed, and nothing else refers to it;
///   - named: the innermost tracked scope between the holder and W has finished or was cancelled
///     (`TaskTree.child`, `TaskTree.race`) — suspected, because the result may have been passed on;
///   - inferred: a descendant of W — a structured child the runtime shows finished, or any task
///     whose state the runtime does not show — holding since before the grace period — suspected;
/// - a task that is itself stuck, or parked work inside a stuck task's tree.
/// A descendant the runtime shows running, enqueued or suspended elsewhere can still release, and so
/// can anything outside W's tree, or a holding *in transit*.
///
/// The set of stuck tasks is the greatest fixed point of that rule: start from every waiting task and
/// remove any whose resource has a holder that could still release, until nothing changes. Each
/// stuck task then points at the tasks responsible for its blockers; an edge is *proved* only as
/// said above, and a finding is `certain` only when every edge it rests on is.
struct WaitForAnalysis {
    /// How a holding proves that it is parked in the waiter's tree.
    enum ParkedEvidence: Equatable {
        /// The runtime showed the holding object alone in a finished child's unconsumed result.
        case runtime(ParkedResult)
        /// A named scope between the holder and the waiter finished (or was cancelled) unconsumed.
        case annotation(scope: String)
        /// The holder descends from the waiter (through structured links only, or not) and has held
        /// since before the grace period; `finished` when the runtime showed the child finished.
        case inferred(structured: Bool, finished: Bool)
        /// The holder is an unstructured task whose object the waiter's frames refer to (its `Task`
        /// handle, most likely); `finished` when the holder looked finished.
        case handle(finished: Bool)

        var isProved: Bool {
            if case .runtime = self { return true }
            return false
        }
    }

    /// Why a holding blocks a waiter.
    enum Blocker: Equatable {
        /// The waiting task holds it itself; `pinned` when a scoped call holds it.
        case selfHeld(pinned: Bool)
        case parked(ParkedEvidence)
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
        if let parked = holding.parked, parked.parent == waiter { return .parked(.runtime(parked)) }
        if holding.holderTask == waiter {
            // A permit object from a site whose holdings other tasks have released before is most
            // likely out with such a task now (the bounded-concurrency loop): it can be released.
            if !holding.isPinned, holding.siteHandsOff == true { return .other }
            return .selfHeld(pinned: holding.isPinned)
        }
        // A holder that is itself waiting is blocked, not parked: the cycle analysis decides.
        if index.waitByTask[holding.holderTask] != nil { return .other }
        let handle = holding.handle.flatMap { $0.waiter == waiter && !holding.isPinned ? $0 : nil }
        switch handle?.holderState {
        case .running?, .enqueued?, .suspended?:
            return .runningChild(scope: "task \(holding.holderTask.rawValue)")
        default:
            break
        }
        // Walk up from the holder to the waiter's own nodes. The innermost tracked scope that is not
        // consumed, and the runtime's view of the waiter's child on the way, decide.
        var annotated: Blocker?
        var structured = true
        var below: TreeNodeRecord?
        for node in chain(of: holding.holder) {
            if node.task == waiter {
                // `below` is the waiter's child task on the way (or a scope of it). What the runtime
                // shows of it comes first: a child still running can release, whatever a name says.
                let childState = below.flatMap { index.taskState(of: $0.task) }
                switch childState {
                case .running?, .enqueued?, .suspended?:
                    return .runningChild(scope: "task \(below!.task.rawValue)")
                default:
                    break
                }
                if let annotated { return annotated }
                switch childState {
                case .running?, .enqueued?, .suspended?, .failed?:
                    return .other
                case .finished?:
                    // A result that can hold no object cannot hold the holding: it went elsewhere.
                    if let child = below, index.nodes[.task(child.task)]?.resultHoldsReferences == false {
                        return .other
                    }
                    return .parked(.inferred(structured: structured, finished: true))
                case nil:
                    return .parked(.inferred(structured: structured, finished: false))
                }
            }
            if node.kind == .task, node.link != .structured { structured = false }
            if annotated == nil, node.kind == .scope {
                switch node.state {
                case .finished?, .cancelled?: annotated = .parked(.annotation(scope: node.name ?? node.id.description))
                case .running?: annotated = .runningChild(scope: node.name ?? node.id.description)
                case .consumed?, nil: break
                }
            }
            below = node
        }
        if let handle { return .parked(.handle(finished: handle.holderState == .finished)) }
        return .other
    }
    /// A resource that cannot serve its head waiter (nothing free, or less than the head asks for)
    /// and whose every unit not free is held by a recorded holding (nothing buffered or being created
    /// whose fate the ledger cannot see). Only its holders can unblock its queue.
    func isSaturated(_ resource: ResourceID) -> Bool {
        guard let record = index.resources[resource], record.blocksHead, record.buffered == 0 else { return false }
        let held = index.holdingsByResource[resource]?.reduce(0) { $0 + $1.unitCount } ?? 0
        return held + record.available >= record.capacity
    }

    struct Edge {
        var from: TaskID
        var to: TaskID
        var holding: HoldingRecord
        var blocker: Blocker
        /// Whether the edge is proved (see the type's notes); a finding is certain only if all are.
        var proved: Bool
        /// Whether the edge only counts because the holding and the wait outlasted the grace period.
        var restsOnTime: Bool {
            switch blocker {
            case .selfHeld(let pinned): return !pinned
            case .parked(.inferred), .parked(.handle): return true
            case .other: return !proved
            case .parked, .runningChild: return false
            }
        }
    }

    struct Result {
        var stuck: Set<TaskID>
        var edges: [TaskID: [Edge]]
    }

    private func graceMet(_ holding: HoldingRecord, _ wait: WaitRecord) -> Bool {
        let grace = policy.gracePeriod.secondsDouble
        return index.age(since: holding.since) >= grace && index.age(since: wait.since) >= grace
    }

    /// The task responsible for `holding` from the point of view of `waiter`, if it is stuck, and
    /// whether that is proved.
    private func responsible(for holding: HoldingRecord, waiter: WaitRecord, stuck: Set<TaskID>)
        -> (TaskID, Blocker, Bool)?
    {
        let direct = relation(holding, to: waiter.waiterTask)
        switch direct {
        case .selfHeld(let pinned):
            if pinned { return (waiter.waiterTask, direct, true) }
            return graceMet(holding, waiter) ? (waiter.waiterTask, direct, false) : nil
        case .parked(let evidence):
            switch evidence {
            case .runtime: return (waiter.waiterTask, direct, true)
            case .annotation: return (waiter.waiterTask, direct, false)
            case .inferred, .handle: return graceMet(holding, waiter) ? (waiter.waiterTask, direct, false) : nil
            }
        case .runningChild: return nil
        case .other: break
        }
        // The waiter's own holding, judged releasable (handed on, by the look of its site).
        if holding.holderTask == waiter.waiterTask { return nil }
        if stuck.contains(holding.holderTask) {
            // The holder is stuck in a wait; it still has the holding only if it never passed it on,
            // which only a pinned holding proves — an object it holds counts after the grace period.
            if holding.isPinned { return (holding.holderTask, .other, true) }
            return graceMet(holding, waiter) ? (holding.holderTask, .other, false) : nil
        }
        // Parked work inside the tree of some other stuck task.
        for node in chain(of: holding.holder) where node.task != holding.holderTask {
            guard stuck.contains(node.task), let ownerWait = index.waitByTask[node.task] else { continue }
            let blocker = relation(holding, to: node.task)
            switch blocker {
            case .parked(.runtime):
                return (node.task, blocker, true)
            case .parked(.annotation):
                return (node.task, blocker, false)
            case .parked(.inferred) where graceMet(holding, ownerWait), .parked(.handle) where graceMet(holding, ownerWait):
                return (node.task, blocker, false)
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
                    guard let (target, blocker, proved) = responsible(for: holding, waiter: wait, stuck: stuck) else {
                        ok = false
                        break
                    }
                    out.append(Edge(from: task, to: target, holding: holding, blocker: blocker, proved: proved))
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
