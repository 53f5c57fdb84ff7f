/// Turns one ledger snapshot into findings. Pure: the same snapshot always gives the same findings,
/// so every kind can be tested by building the exact state by hand.
public enum Detector {
    /// What a finding rests on: the holdings and waits that must still exist, unchanged, in a later
    /// snapshot for the finding to be confirmed.
    struct Proof: Hashable, Sendable {
        var holdings: Set<HoldingKey>
        var waits: Set<WaitKey>
    }

    struct HoldingKey: Hashable, Sendable {
        var resource: ResourceID
        var id: UInt64
        var task: TaskID
        /// The child whose result was proved to hold it, if one was: a proof must be seen twice too.
        var parkedIn: TaskID?
    }

    struct WaitKey: Hashable, Sendable {
        var resource: ResourceID
        var task: TaskID
        var since: MonotonicInstant
    }

    struct Candidate: Sendable {
        var finding: Finding
        var proof: Proof
    }

    /// The findings in `snapshot`, without cross-snapshot confirmation (certain findings are
    /// confirmed by ``Watchdog`` against a second snapshot before they are reported as certain).
    public static func findings(in snapshot: LedgerSnapshot, policy: DetectionPolicy = DetectionPolicy()) -> [Finding] {
        candidates(in: snapshot, policy: policy).map(\.finding)
    }

    static func candidates(in snapshot: LedgerSnapshot, policy: DetectionPolicy) -> [Candidate] {
        let analysis = WaitForAnalysis(snapshot, policy: policy)
        let index = analysis.index
        let result = analysis.analyse()
        var candidates: [Candidate] = []

        for component in WaitForAnalysis.components(of: result) {
            if component.count == 1 {
                let task = component[0]
                let edges = result.edges[task] ?? []
                guard edges.contains(where: { $0.to == task }) else { continue }  // a victim
                guard edges.allSatisfy({ $0.to == task }) else { continue }
                candidates.append(selfLoop(task, edges: edges, index: index, policy: policy))
            } else {
                candidates.append(cycle(component, result: result, index: index, policy: policy))
            }
        }

        candidates += stalls(index: index, stuck: result.stuck, policy: policy)
        candidates += leaks(index: index, explained: result.stuck, policy: policy)
        return candidates.sorted { lhs, rhs in
            (order(lhs.finding.kind), lhs.finding.key) < (order(rhs.finding.kind), rhs.finding.key)
        }
    }

    private static func order(_ kind: Finding.Kind) -> Int {
        switch kind {
        case .futurelock: return 0
        case .deadlock: return 1
        case .selfDeadlock: return 2
        case .leak: return 3
        case .stall: return 4
        }
    }

    // MARK: - Parties and queues

    static func party(_ holding: HoldingRecord, _ index: SnapshotIndex) -> Finding.Party {
        Finding.Party(task: holding.holderTask, node: holding.holder, path: index.path(of: holding.holder),
                      site: holding.site, age: index.age(since: holding.since),
                      backtrace: holding.backtrace.map { $0.map { "0x" + String($0, radix: 16) } })
    }

    static func party(_ wait: WaitRecord, _ index: SnapshotIndex) -> Finding.Party {
        Finding.Party(task: wait.waiterTask, node: wait.waiter, path: index.path(of: wait.waiter),
                      site: wait.site, age: index.age(since: wait.since), position: wait.position)
    }

    /// Waiters on `resource` other than `except`, grouped by site, largest group first.
    static func queue(on resource: ResourceID, except: TaskID?, _ index: SnapshotIndex) -> (Int, [Finding.QueueGroup]) {
        var counts: [CallSite: Int] = [:]
        var total = 0
        for wait in index.waitsByResource[resource] ?? [] where wait.waiterTask != except && WaitForAnalysis.blocks(wait.kind) {
            counts[wait.site, default: 0] += 1
            total += 1
        }
        let groups = counts.map { Finding.QueueGroup(site: $0.key, count: $0.value) }
            .sorted { ($0.count, $1.site.description) > ($1.count, $0.site.description) }
        return (total, groups)
    }

    static func waitKey(_ wait: WaitRecord) -> WaitKey {
        WaitKey(resource: wait.resource, task: wait.waiterTask, since: wait.since)
    }

    static func holdingKey(_ holding: HoldingRecord) -> HoldingKey {
        HoldingKey(resource: holding.resource, id: holding.id, task: holding.holderTask, parkedIn: holding.parked?.child)
    }

    static func queueText(_ queued: Int) -> String {
        queued == 0 ? "" : " \(grouped(queued)) other waiter\(queued == 1 ? "" : "s") queue behind it."
    }

    /// 179998 → "179,998"
    public static func grouped(_ value: Int) -> String {
        let digits = String(value)
        var out = ""
        for (offset, character) in digits.reversed().enumerated() {
            if offset > 0, offset % 3 == 0 { out.append(",") }
            out.append(character)
        }
        return String(out.reversed())
    }

    // MARK: - futurelock and self-deadlock

    private static func selfLoop(_ task: TaskID, edges: [WaitForAnalysis.Edge], index: SnapshotIndex,
                                 policy: DetectionPolicy) -> Candidate {
        let wait = index.waitByTask[task]!
        let resource = index.resourceLabel(wait.resource)
        let parked = edges.filter { if case .parked = $0.blocker { return true } else { return false } }
        let (queued, groups) = queue(on: wait.resource, except: task, index)
        let waiter = party(wait, index)
        let proof = Proof(holdings: Set(edges.map { holdingKey($0.holding) }), waits: [waitKey(wait)])
        let unit = unitName(edges.first?.holding.kind ?? .permit)
        let certain = edges.allSatisfy(\.proved)
        let unproved = certain ? [] : unprovedNote(index)

        if let culprit = parked.first {
            let holder = party(culprit.holding, index)
            var evidence = [
                "\(waiter.pathDescription) waits for \(resource.label) at \(wait.site) (position \(wait.position))",
                "every \(unit) of \(resource.label) is held by work the waiting task started",
            ]
            var what = "a child task"
            for edge in parked {
                guard case .parked(let how) = edge.blocker else { continue }
                let who = index.path(of: edge.holding.holder).joined(separator: " › ")
                let site = edge.holding.site
                switch how {
                case .runtime(let result):
                    let named = index.nodes[edge.holding.holder].flatMap { $0.kind == .scope ? $0.name : nil }
                    what = (named.map { "'\($0)' in " } ?? "") + "its finished \(result.childKind) task \(result.child.rawValue)"
                    evidence.append("the \(unit) acquired at \(site) by \(who) is held only by the result of task \(result.child.rawValue) (\(result.childKind)), which has finished and which task \(result.parent.rawValue) has not consumed: the runtime shows the result holding the \(unit) object \(result.references == 1 ? "once" : "\(result.references) times"), and no other strong, unowned or weak reference to it exists")
                case .annotation(let scope):
                    what = "'\(scope)'"
                    evidence.append("\(who) holds a \(unit) acquired at \(site); its scope '\(scope)' has finished and its result has not been taken — suspected: the runtime did not show the \(unit) alone in a parked result, so it may have been passed on")
                case .handle(let finished):
                    what = "task \(edge.holding.holderTask.rawValue) (a `Task` whose handle it keeps)"
                    evidence.append("\(who) is an unstructured task (the runtime does not link it to the waiter), holding a \(unit) acquired at \(site); the waiting task's suspended frames refer to its task object — most likely the `Task` handle it means to await later, though a stale copy of the reference cannot be ruled out — and the task \(finished ? "looked finished, with the \(unit) in its result" : "could not be seen any more"); whoever holds the handle could take the result, so this is not proved. Both the holding and the wait are older than the grace period")
                case .inferred(let structured, let finished):
                    if finished {
                        evidence.append("\(who) is a structured child of the waiter that the runtime shows finished, holding a \(unit) acquired at \(site) — suspected: its result does not hold the \(unit) object alone and directly (it may hold it inside another object, or the \(unit) may have been passed on)")
                    } else if structured {
                        evidence.append("\(who) is a structured child of the waiter, holding a \(unit) acquired at \(site); the runtime's view of it could not be read, it is not waiting on anything, and the holding and the parent's wait are both older than the grace period")
                    } else {
                        evidence.append("\(who) inherited the waiter's scope without being its structured child (an unstructured `Task {}`), holding a \(unit) acquired at \(site); whoever holds its task handle could take its result, so nothing proves the waiter alone can release it — both the holding and the wait are older than the grace period")
                    }
                }
            }
            if edges.contains(where: { if case .selfHeld = $0.blocker { return true } else { return false } }) {
                evidence.append("the waiting task also holds a \(unit) of it directly")
            }
            evidence += unproved
            let summary = "\(waiter.pathDescription) waits for \(resource.label), whose \(unit) is held by \(what) it no longer drives"
            let explanation = """
                \(waiter.pathDescription) is suspended at \(wait.site) waiting for \(resource.label). \
                Every \(unit) of \(resource.label) is held by work that task started: \(holder.pathDescription) \
                acquired one at \(culprit.holding.site) \(formatAge(holder.age)) ago and then stopped running — \
                its result (and the \(unit) with it) is parked where only the waiting task could consume it, \
                and the waiting task is blocked in this very wait. The \(unit) can never be released, so \
                the wait can never end.\(queueText(queued))
                """
            return Candidate(
                finding: Finding(
                    kind: .futurelock, certainty: certain ? .certain : .suspected, evidence: evidence,
                    gracePeriod: grace(edges, policy), resource: resource,
                    holder: holder, waiter: waiter, cycle: [], queued: queued, queuedBySite: groups,
                    summary: summary, explanation: explanation,
                    fix: futurelockFix(culprit.holding, unit: unit),
                    key: "futurelock:\(resource.id.rawValue):\(task.rawValue)"),
                proof: proof)
        }

        let held = edges.first!.holding
        let holder = party(held, index)
        var evidence = ["\(waiter.pathDescription) holds every \(unit) of \(resource.label) (acquired at \(held.site))",
                        "the same task waits for \(resource.label) at \(wait.site)"]
        for edge in edges where !edge.proved {
            evidence.append("the \(unit) acquired at \(edge.holding.site) is a `\(objectName(edge.holding.kind))` object, which the task may have handed to another task (captured by a `Task {}`, sent through an `AsyncStream` or a channel) — the ledger cannot see where it is now, and if it was handed off this wait ends when that task releases it; both the holding and the wait are older than the grace period. Acquire with `\(scopedName(edge.holding.kind))` to make such a lock provable")
        }
        let summary = "\(waiter.pathDescription) waits for \(resource.label) while holding every \(unit) of it itself"
        let explanation = """
            \(waiter.pathDescription) acquired \(resource.label) at \(held.site) and, still holding it, waits \
            for it again at \(wait.site). \(resource.label.capitalizedFirst) is not re-entrant: the task can only \
            release the \(unit) after this wait ends, and this wait can only end after the \(unit) is released.\(queueText(queued))
            """
        return Candidate(
            finding: Finding(
                kind: .selfDeadlock, certainty: certain ? .certain : .suspected,
                evidence: evidence,
                gracePeriod: grace(edges, policy), resource: resource, holder: holder,
                waiter: waiter, cycle: [],
                queued: queued, queuedBySite: groups, summary: summary, explanation: explanation,
                fix: "Release the \(unit) acquired at \(held.site) before acquiring again, or pass it down instead of re-acquiring (for example, take a `Permit` parameter in the inner function). If the inner code really needs its own \(unit), give it a separate resource.",
                key: "selfDeadlock:\(resource.id.rawValue):\(task.rawValue)"),
            proof: proof)
    }

    /// The grace period a finding used, if any of its edges only counts because it outlasted it.
    static func grace(_ edges: [WaitForAnalysis.Edge], _ policy: DetectionPolicy) -> Double? {
        edges.contains(where: \.restsOnTime) ? policy.gracePeriod.secondsDouble : nil
    }

    /// Evidence lines saying why the runtime could not prove more, when the snapshot says why.
    static func unprovedNote(_ index: SnapshotIndex) -> [String] {
        guard let reason = index.snapshot.inspectionUnavailable else { return [] }
        return ["parked results could not be read from the runtime: \(reason)"]
    }

    static func objectName(_ kind: HoldingKind) -> String {
        switch kind {
        case .permit: return "Permit"
        case .sendSlot: return "SendPermit"
        case .connection: return "Lease"
        }
    }

    static func scopedName(_ kind: HoldingKind) -> String {
        switch kind {
        case .permit: return "withPermit"
        case .sendSlot: return "send(_:)"
        case .connection: return "withConnection"
        }
    }

    static func unitName(_ kind: HoldingKind) -> String {
        switch kind {
        case .permit: return "permit"
        case .sendSlot: return "send slot"
        case .connection: return "connection"
        }
    }

    static func futurelockFix(_ holding: HoldingRecord, unit: String) -> String {
        let release: String
        switch holding.kind {
        case .permit: release = "release the permit acquired at \(holding.site)"
        case .sendSlot: release = "send on, or release, the SendPermit reserved at \(holding.site)"
        case .connection: release = "release the lease checked out at \(holding.site)"
        }
        return "Consume the finished work before waiting again, so it can \(release): drain the task group (`group.cancelAll()` then `for try await … in group`), await the `async let`, or await the task handle — before the second acquire, not after it. Or race with `TaskTree.race`, which releases the loser's holdings before the winner's code continues; or move the second acquire into its own task so it does not queue behind a \(unit) its own parent holds."
    }

    static func formatAge(_ seconds: Double) -> String {
        seconds < 1 ? "\(Int((seconds * 1000).rounded()))ms" : String(format3(seconds)) + "s"
    }

    static func format3(_ seconds: Double) -> String {
        let millis = Int((seconds * 1000).rounded())
        let fraction = String(millis % 1000)
        return "\(millis / 1000)." + String(repeating: "0", count: 3 - fraction.count) + fraction
    }

    // MARK: - deadlock

    private static func cycle(_ component: [TaskID], result: WaitForAnalysis.Result, index: SnapshotIndex,
                              policy: DetectionPolicy) -> Candidate {
        let members = Set(component)
        let ordered = component.sorted()
        var lines: [String] = []
        var holdings = Set<HoldingKey>()
        var waits = Set<WaitKey>()
        var certain = true
        var cycleEdges: [WaitForAnalysis.Edge] = []
        var firstHolding: HoldingRecord?
        for task in ordered {
            guard let wait = index.waitByTask[task] else { continue }
            waits.insert(waitKey(wait))
            let resource = index.resourceLabel(wait.resource)
            for edge in result.edges[task] ?? [] where members.contains(edge.to) {
                holdings.insert(holdingKey(edge.holding))
                if !edge.proved { certain = false }
                cycleEdges.append(edge)
                firstHolding = firstHolding ?? edge.holding
                lines.append("\(index.path(of: wait.waiter).joined(separator: " › ")) waits at \(wait.site) for \(resource.label), held by \(index.path(of: edge.holding.holder).joined(separator: " › ")) (acquired at \(edge.holding.site))")
            }
        }
        let firstWait = index.waitByTask[ordered[0]]!
        let resource = index.resourceLabel(firstWait.resource)
        // Everyone else waiting on any resource of the cycle is stuck behind it.
        var counts: [CallSite: Int] = [:]
        var queued = 0
        let cycleResources = Set(ordered.compactMap { index.waitByTask[$0]?.resource })
        for resourceID in cycleResources.sorted() {
            for wait in index.waitsByResource[resourceID] ?? []
            where !members.contains(wait.waiterTask) && WaitForAnalysis.blocks(wait.kind) {
                counts[wait.site, default: 0] += 1
                queued += 1
            }
        }
        let groups = counts.map { Finding.QueueGroup(site: $0.key, count: $0.value) }
            .sorted { ($0.count, $1.site.description) > ($1.count, $0.site.description) }
        let names = Set(ordered.compactMap { index.waitByTask[$0].map { index.resourceLabel($0.resource).label } }).sorted()
        var evidence = lines
        for task in ordered {
            for edge in result.edges[task] ?? [] where members.contains(edge.to) && !edge.proved {
                evidence.append("the \(unitName(edge.holding.kind)) acquired at \(edge.holding.site) is a `\(objectName(edge.holding.kind))` object its holder may have handed to another task, which the ledger cannot see; it has been held, and waited for, longer than the grace period — acquire with `\(scopedName(edge.holding.kind))` to make such a lock provable")
            }
        }
        if !certain { evidence += unprovedNote(index) }
        // All in one structured tree: the parent waits behind its own child, which waits behind it.
        if let root = ordered.first(where: { candidate in
            ordered.allSatisfy { $0 == candidate || index.isStructuredAncestor(candidate, of: $0) }
        }), let rootWait = index.waitByTask[root] {
            let rootResource = index.resourceLabel(rootWait.resource)
            let waiter = party(rootWait, index)
            let blocking = (result.edges[root] ?? []).first { members.contains($0.to) }?.holding ?? firstHolding
            let holder = blocking.map { party($0, index) }
            let (rootQueued, rootGroups) = queue(on: rootWait.resource, except: root, index)
            return Candidate(
                finding: Finding(
                    kind: .futurelock, certainty: certain ? .certain : .suspected,
                    evidence: ["\(waiter.pathDescription) and work inside its own structured tree wait for each other"] + evidence,
                    gracePeriod: grace(cycleEdges, policy), resource: rootResource,
                    holder: holder, waiter: waiter, cycle: lines, queued: rootQueued, queuedBySite: rootGroups,
                    summary: "\(waiter.pathDescription) waits for \(rootResource.label), held by its own child task, which is blocked behind it",
                    explanation: "\(waiter.pathDescription) is suspended at \(rootWait.site) waiting for \(rootResource.label), held inside its own task tree by \(holder?.pathDescription ?? "a child task"). That child is itself waiting, and what it waits for can only come once the parent goes on: " + lines.joined(separator: "; ") + ". The parent cannot finish its child's scope while it waits, and the child cannot release while the parent holds what it needs." + queueText(rootQueued),
                    fix: "Do not hold what a child task needs while waiting for what the child holds: release the parent's holding before waiting (or before starting the child), or have the child acquire both in the parent's order. If the child's result is what releases it, consume the child (await the `async let`, drain the group) before waiting.",
                    key: "futurelock:cycle:" + ordered.map { String($0.rawValue) }.joined(separator: ",")),
                proof: Proof(holdings: holdings, waits: waits))
        }
        return Candidate(
            finding: Finding(
                kind: .deadlock, certainty: certain ? .certain : .suspected,
                evidence: evidence, gracePeriod: grace(cycleEdges, policy), resource: resource,
                holder: firstHolding.map { party($0, index) }, waiter: party(firstWait, index), cycle: lines,
                queued: queued, queuedBySite: groups,
                summary: "\(ordered.count) tasks wait for each other in a cycle over \(names.joined(separator: ", "))",
                explanation: "Each task in the cycle holds what the next one waits for, so none of them can release: " + lines.joined(separator: "; ") + ". This is a classic lock-order deadlock across tasks, not a futurelock: no task is blocked by its own children." + queueText(queued),
                fix: "Acquire \(names.joined(separator: " and ")) in one global order everywhere (for example, always \(names.first ?? "the first") before the others), or acquire them together through a single resource, or give up and retry with `acquire(timeout:)` releasing what you hold.",
                key: "deadlock:" + ordered.map { String($0.rawValue) }.joined(separator: ",")),
            proof: Proof(holdings: holdings, waits: waits))
    }

    // MARK: - stalls and leaks

    private static func stalls(index: SnapshotIndex, stuck: Set<TaskID>, policy: DetectionPolicy) -> [Candidate] {
        let threshold = policy.stallThreshold.secondsDouble
        var result: [Candidate] = []
        for (resourceID, waits) in index.waitsByResource {
            // An idle consumer waiting for messages is not slowness: only waits for capacity count.
            let live = waits.filter { !stuck.contains($0.waiterTask) && WaitForAnalysis.blocks($0.kind) }
            guard let oldest = live.min(by: { $0.since < $1.since }),
                  index.age(since: oldest.since) >= threshold else { continue }
            let resource = index.resourceLabel(resourceID)
            let holder = index.holdingsByResource[resourceID]?.min { $0.since < $1.since }
            let (queued, groups) = queue(on: resourceID, except: oldest.waiterTask, index)
            let waiter = party(oldest, index)
            let holderText = holder.map { " The oldest holder is \(index.path(of: $0.holder).joined(separator: " › ")), which acquired at \($0.site) \(formatAge(index.age(since: $0.since))) ago." } ?? ""
            result.append(Candidate(
                finding: Finding(
                    kind: .stall, certainty: .certain,
                    evidence: ["oldest wait on \(resource.label) is \(formatAge(waiter.age)) (threshold \(formatAge(threshold)))",
                               "no cycle and no self-held blocker was found: the holders can still release"],
                    gracePeriod: nil, resource: resource, holder: holder.map { party($0, index) }, waiter: waiter,
                    cycle: [], queued: queued, queuedBySite: groups,
                    summary: "\(live.count) waiter\(live.count == 1 ? "" : "s") on \(resource.label), the oldest for \(formatAge(waiter.age))",
                    explanation: "\(waiter.pathDescription) has waited \(formatAge(waiter.age)) at \(oldest.site) for \(resource.label). Nothing proves it can never proceed — the holders are not blocked on it — so this is slowness, not a lock.\(holderText)",
                    fix: "Look at what the holders are doing while they hold \(resource.label): shorten the critical section, raise the capacity, or add a timeout (`acquire(timeout:)`) so callers fail fast instead of piling up.",
                    key: "stall:\(resourceID.rawValue)"),
                proof: Proof(holdings: [], waits: [waitKey(oldest)])))
        }
        return result
    }

    private static func leaks(index: SnapshotIndex, explained: Set<TaskID>, policy: DetectionPolicy) -> [Candidate] {
        let threshold = policy.leakThreshold.secondsDouble
        var result: [Candidate] = []
        for holding in index.snapshot.holdings where index.age(since: holding.since) >= threshold {
            // Held inside a scope that has finished or was cancelled, with nothing stuck explaining it.
            let chain = index.ancestry(of: holding.holder)
            guard let scope = chain.first(where: { $0.kind == .scope && $0.state != .consumed && $0.state != nil }),
                  scope.state == .finished || scope.state == .cancelled else { continue }
            let waiters = index.waitsByResource[holding.resource] ?? []
            if waiters.contains(where: { explained.contains($0.waiterTask) }) { continue }
            let resource = index.resourceLabel(holding.resource)
            let (queued, groups) = queue(on: holding.resource, except: nil, index)
            let holder = party(holding, index)
            let unit = unitName(holding.kind)
            result.append(Candidate(
                finding: Finding(
                    kind: .leak, certainty: .suspected,
                    evidence: ["scope '\(scope.name ?? "?")' is \(scope.state!) and its result was not consumed",
                               "the \(unit) has been held for \(formatAge(holder.age)) (threshold \(formatAge(threshold)))"],
                    gracePeriod: threshold, resource: resource, holder: holder, waiter: nil, cycle: [],
                    queued: queued, queuedBySite: groups,
                    summary: "\(resource.label) \(unit) held by finished work '\(scope.name ?? "?")' nobody consumes",
                    explanation: "\(holder.pathDescription) acquired a \(unit) of \(resource.label) at \(holding.site) and its scope '\(scope.name ?? "?")' has \(scope.state! == .cancelled ? "been cancelled" : "finished"), but its result — and the \(unit) in it — has not been taken by anyone that will release it.\(queueText(queued))",
                    fix: "Make sure whoever receives that result releases it: consume every child result of the group (even losers), or release inside the child before it returns.",
                    key: "leak:\(holding.resource.rawValue):\(holding.id)"),
                proof: Proof(holdings: [holdingKey(holding)], waits: [])))
        }
        // A dropped holding was released on the owner's behalf; it is news for `leakThreshold`, then resolves.
        for problem in index.snapshot.problems
        where problem.kind == .droppedWithoutRelease && index.age(since: problem.time) < threshold {
            let resource = Finding.Resource(id: problem.resource,
                                            kind: index.resources[problem.resource]?.kind ?? .semaphore,
                                            name: problem.resourceName)
            result.append(Candidate(
                finding: Finding(
                    kind: .leak, certainty: .certain,
                    evidence: ["the \(unitName(problem.holdingKind)) object was deinitialised without release"],
                    gracePeriod: nil, resource: resource,
                    holder: problem.acquiredBy.map {
                        Finding.Party(task: $0, node: .task($0), path: ["task \($0.rawValue)"],
                                      site: problem.acquiredAt ?? CallSite(fileID: "?", line: 0, function: "?"),
                                      age: 0)
                    },
                    waiter: nil, cycle: [], queued: 0, queuedBySite: [],
                    summary: "a \(unitName(problem.holdingKind)) of \(resource.label) was dropped without release",
                    explanation: problem.message,
                    fix: "Release it on every path (use `defer { permit.release() }` or the scoped form `withPermit`/`withConnection`).",
                    key: "leak:dropped:\(problem.resource.rawValue):\(problem.time.nanoseconds)"),
                proof: Proof(holdings: [], waits: [])))
        }
        return result
    }
}

extension String {
    var capitalizedFirst: String { prefix(1).uppercased() + dropFirst() }
}
