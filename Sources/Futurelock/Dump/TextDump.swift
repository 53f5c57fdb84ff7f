/// The dump for people, in the style of await-tree: findings first, then one indented tree per root
/// task with durations like `[1.006s]`, `!!!` on waits past the threshold, holdings and waits shown
/// on the node that owns them, and identical sibling subtrees collapsed into one line with a count
/// (`×179,998`), so 180,000 identical waiters take one line, not 180,000.
enum TextDump {
    static func render(_ dump: Dump, waitThreshold: Duration) -> String {
        let index = SnapshotIndex(dump.snapshot)
        let threshold = waitThreshold.secondsDouble
        var out = ""
        let snapshot = dump.snapshot
        let findingCount = dump.findings.count
        out += "Futurelock dump: \(findingCount) finding\(findingCount == 1 ? "" : "s"), "
        out += "\(snapshot.resources.count) resource\(snapshot.resources.count == 1 ? "" : "s"), "
        out += "\(Detector.grouped(snapshot.holdings.count)) holding\(snapshot.holdings.count == 1 ? "" : "s"), "
        out += "\(Detector.grouped(snapshot.waits.count)) waiter\(snapshot.waits.count == 1 ? "" : "s")\n"
        if let source = snapshot.taskTree { out += "Task tree source: \(source)\n" }
        if let reason = snapshot.inspectionUnavailable { out += "Parked results not read from the runtime: \(reason)\n" }

        for finding in dump.findings { out += "\n" + renderFinding(finding) }

        if !snapshot.resources.isEmpty {
            out += "\nResources\n"
            for resource in snapshot.resources {
                out += "  \(resource.kind.rawValue) '\(resource.name)'  capacity \(resource.capacity)  available \(resource.available)  held \(resource.held)  waiting \(Detector.grouped(resource.waiting))"
                if resource.kind == .channel { out += "  buffered \(resource.buffered)" }
                if resource.closed { out += "  closed" }
                out += "\n"
            }
        }
        if !snapshot.problems.isEmpty {
            out += "\nProblems\n"
            for problem in snapshot.problems.suffix(20) { out += "  - \(problem.message)\n" }
        }
        let tree = TreeRenderer(index: index, threshold: threshold, findings: dump.findings)
        let body = tree.render()
        if !body.isEmpty { out += "\nTask tree\n" + body }
        if !dump.waitGroups.isEmpty {
            out += "\nGrouped waiters\n"
            for group in dump.waitGroups {
                let parent = group.parent.map { " under " + index.path(of: $0).joined(separator: " › ") } ?? " (root tasks)"
                let oldest = index.age(since: group.oldestSince)
                let flag = oldest >= threshold ? " !!!" : ""
                out += "  ×\(Detector.grouped(group.count)) tasks\(parent) wait to \(group.kind.rawValue) \(index.resourceLabel(group.resource).label) at \(group.site), positions \(group.firstPosition)–\(group.lastPosition) [\(Detector.format3(oldest))s]\(flag)\n"
            }
        }
        if !dump.nativeThreads.isEmpty {
            out += "\nNative threads (\(dump.nativeThreads.count))\n"
            for thread in dump.nativeThreads {
                out += "thread \(thread.tid) \"\(thread.name)\"\n"
                for frame in thread.frames { out += "  \(frame)\n" }
                if let error = thread.error { out += "  (unwinding stopped: \(error))\n" }
            }
        }
        return out
    }

    static func renderFinding(_ finding: Finding) -> String {
        let marker = finding.kind.isLock ? "!!!" : " ! "
        var out = "\(marker) \(finding.kind.rawValue) (\(finding.certainty.rawValue)): \(finding.summary)\n"
        out += "    resource  \(finding.resource.label)\n"
        if let holder = finding.holder {
            out += "    holder    \(holder.pathDescription)  acquired at \(holder.site)  [\(Detector.format3(holder.age))s]\n"
            for frame in holder.backtrace ?? [] { out += "                \(frame)\n" }
        }
        if let waiter = finding.waiter {
            let position = waiter.position.map { "  position \($0)" } ?? ""
            out += "    waiter    \(waiter.pathDescription)  waits at \(waiter.site)\(position)  [\(Detector.format3(waiter.age))s]\n"
        }
        if finding.queued > 0 {
            out += "    queued    \(Detector.grouped(finding.queued)) behind:"
            let shown = finding.queuedBySite.prefix(5)
            out += shown.map { " \(Detector.grouped($0.count)) × \($0.site)" }.joined(separator: ",")
            if finding.queuedBySite.count > shown.count { out += ", … (\(finding.queuedBySite.count - shown.count) more sites)" }
            out += "\n"
        }
        for edge in finding.cycle { out += "    cycle     \(edge)\n" }
        out += "    why       \(finding.explanation)\n"
        out += "    fix       \(finding.fix)\n"
        if let grace = finding.gracePeriod { out += "    grace     \(Detector.format3(grace))s\n" }
        for fact in finding.evidence { out += "    evidence  \(fact)\n" }
        return out
    }
}

/// Renders the task tree with sibling collapsing.
struct TreeRenderer {
    let index: SnapshotIndex
    let threshold: Double
    let children: [NodeID: [NodeID]]
    let roots: [NodeID]
    let holdingsByNode: [NodeID: [HoldingRecord]]
    let waitsByNode: [NodeID: [WaitRecord]]
    let important: Set<NodeID>

    init(index: SnapshotIndex, threshold: Double, findings: [Finding]) {
        self.index = index
        self.threshold = threshold
        var children: [NodeID: [NodeID]] = [:]
        var roots: [NodeID] = []
        for node in index.snapshot.nodes {
            if let parent = node.parent, index.nodes[parent] != nil {
                children[parent, default: []].append(node.id)
            } else {
                roots.append(node.id)
            }
        }
        self.children = children
        self.holdingsByNode = Dictionary(grouping: index.snapshot.holdings, by: \.holder)
        self.waitsByNode = Dictionary(grouping: index.snapshot.waits, by: \.waiter)
        var important = Set<NodeID>()
        for finding in findings {
            for party in [finding.holder, finding.waiter].compactMap({ $0 }) {
                for node in index.ancestry(of: party.node) { important.insert(node.id) }
            }
        }
        self.important = important
        // Roots on a finding's path first, then by id.
        self.roots = roots.sorted { (important.contains($0) ? 0 : 1, $0) < (important.contains($1) ? 0 : 1, $1) }
    }

    /// A structural signature: equal for subtrees that differ only in ids and times.
    func signature(_ id: NodeID, memo: inout [NodeID: Int]) -> Int {
        if let known = memo[id] { return known }
        var hasher = Hasher()
        let node = index.nodes[id]
        hasher.combine(node?.kind.rawValue)
        hasher.combine(node?.name)
        hasher.combine(node?.state?.rawValue)
        hasher.combine(node?.taskKind)
        hasher.combine(node?.taskState)
        for holding in holdingsByNode[id] ?? [] {
            hasher.combine(0); hasher.combine(holding.resource); hasher.combine(holding.site)
        }
        for wait in waitsByNode[id] ?? [] {
            hasher.combine(1); hasher.combine(wait.resource); hasher.combine(wait.site); hasher.combine(wait.kind)
            hasher.combine(wait.units)
        }
        let childSignatures = (children[id] ?? []).map { signature($0, memo: &memo) }.sorted()
        hasher.combine(childSignatures)
        let value = hasher.finalize()
        memo[id] = value
        return value
    }

    func render() -> String {
        var out = ""
        var memo: [NodeID: Int] = [:]
        for (representative, count) in collapse(roots, memo: &memo) {
            renderNode(representative, count: count, prefix: "", childPrefix: "", into: &out, memo: &memo)
        }
        return out
    }

    /// Groups siblings with the same signature, keeping order of first appearance; important nodes
    /// (on a finding's path) are never merged into a group.
    private func collapse(_ ids: [NodeID], memo: inout [NodeID: Int]) -> [(NodeID, Int)] {
        var order: [Int] = []
        var groups: [Int: (NodeID, Int)] = [:]
        var result: [(NodeID, Int)] = []
        for id in ids {
            if important.contains(id) { result.append((id, 1)); continue }
            let key = signature(id, memo: &memo)
            if let existing = groups[key] {
                groups[key] = (existing.0, existing.1 + 1)
            } else {
                groups[key] = (id, 1)
                order.append(key)
            }
        }
        return result + order.map { groups[$0]! }
    }

    private func age(_ since: MonotonicInstant) -> Double { index.age(since: since) }

    private func label(_ id: NodeID) -> String {
        guard let node = index.nodes[id] else { return id.description }
        switch node.kind {
        case .task:
            guard node.task != .none else { return "in transit (handed off, not yet claimed)" }
            var facts: [String] = []
            if let kind = node.taskKind, kind != .unstructured || node.link == .inherited { facts.append(kind.description) }
            if node.link == .inherited { facts.append("inherited scope") }
            if let state = node.taskState { facts.append(state.description) }
            return "task \(node.task.rawValue)" + (facts.isEmpty ? "" : " (\(facts.joined(separator: ", ")))")
        case .scope:
            let state = node.state.map { $0 == .running ? "" : " (\($0))" } ?? ""
            let elapsed = node.openedAt.map { " [\(Detector.format3(age($0)))s]" } ?? ""
            return "\(node.name ?? "scope")\(state)\(elapsed)"
        }
    }

    private func renderNode(_ id: NodeID, count: Int, prefix: String, childPrefix: String, into out: inout String,
                            memo: inout [NodeID: Int]) {
        let times = count > 1 ? "  ×\(Detector.grouped(count))" : ""
        out += prefix + label(id) + times + "\n"
        var lines: [String] = []
        for holding in holdingsByNode[id] ?? [] {
            let resource = index.resourceLabel(holding.resource)
            let elapsed = age(holding.since)
            let moved = holding.acquiredBy.map { " (acquired by task \($0.rawValue))" } ?? ""
            let parked = holding.parked.map { " — parked in the unconsumed result of task \($0.child.rawValue)" } ?? ""
            let pinned = holding.isPinned ? " (scoped)" : ""
            let units = holding.units.map { " ×\($0)" } ?? ""
            lines.append("holds \(Detector.unitName(holding.kind))\(units)\(pinned) of \(resource.label) from \(holding.site)\(moved)\(parked) [\(Detector.format3(elapsed))s]")
        }
        for wait in waitsByNode[id] ?? [] {
            let resource = index.resourceLabel(wait.resource)
            let elapsed = age(wait.since)
            let flag = elapsed >= threshold ? " !!!" : ""
            let units = wait.units.map { " \($0) permits of" } ?? ""
            lines.append("waits to \(wait.kind.rawValue)\(units) \(resource.label) at \(wait.site), position \(wait.position) [\(Detector.format3(elapsed))s]\(flag)")
        }
        let kids = collapse(children[id] ?? [], memo: &memo)
        let total = lines.count + kids.count
        var position = 0
        for line in lines {
            position += 1
            out += childPrefix + (position == total ? "└─ " : "├─ ") + line + "\n"
        }
        for (child, childCount) in kids {
            position += 1
            let last = position == total
            renderNode(child, count: childCount, prefix: childPrefix + (last ? "└─ " : "├─ "),
                       childPrefix: childPrefix + (last ? "   " : "│  "), into: &out, memo: &memo)
        }
    }
}
