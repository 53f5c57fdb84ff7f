/// The dump as a Graphviz graph: the task tree (grey edges, parent → child), the wait-for graph
/// (waiter → resource, dashed; resource → holder, solid), and every task, resource and edge that takes
/// part in a finding drawn in red. A self-loop of a futurelock shows as a red path from the waiter,
/// through the resource, down to the parked child inside the waiter's own tree.
///
/// Waiters that are not part of a finding are grouped per resource and site into one node with a
/// count, so a graph of 180,000 waiters stays readable.
enum DotDump {
    static func render(_ dump: Dump) -> String {
        let index = SnapshotIndex(dump.snapshot)
        var hot = Set<String>()
        for finding in dump.findings where finding.kind.isLock || finding.kind == .leak {
            hot.insert(resourceID(finding.resource.id))
            for party in [finding.holder, finding.waiter].compactMap({ $0 }) {
                for node in index.ancestry(of: party.node) { hot.insert(nodeID(node.id)) }
                hot.insert(nodeID(party.node))
            }
        }
        let waitersInFindings = Set(dump.findings.compactMap { $0.waiter?.node })
        var out = "digraph futurelock {\n"
        out += "  rankdir=LR;\n  node [fontname=\"Helvetica\", fontsize=10];\n  edge [fontname=\"Helvetica\", fontsize=9];\n"
        if !dump.findings.isEmpty {
            let title = dump.findings.map { "\($0.kind.rawValue) (\($0.certainty.rawValue)): \($0.summary)" }.joined(separator: "\\n")
            out += "  label=\"\(escape(title))\"; labelloc=t;\n"
        }
        for resource in dump.snapshot.resources {
            let id = resourceID(resource.id)
            let color = hot.contains(id) ? "red" : "black"
            out += "  \(id) [shape=box, style=rounded, color=\(color), label=\"\(escape("\(resource.kind.rawValue) '\(resource.name)'\ncapacity \(resource.capacity), available \(resource.available)"))\"];\n"
        }
        // Nodes that are needed: everything with a holding, a wait in a finding, or an ancestor of those.
        var needed = Set<NodeID>()
        for holding in dump.snapshot.holdings { for node in index.ancestry(of: holding.holder) { needed.insert(node.id) } }
        for id in waitersInFindings { for node in index.ancestry(of: id) { needed.insert(node.id) } }
        for node in dump.snapshot.nodes where needed.contains(node.id) {
            let id = nodeID(node.id)
            let color = hot.contains(id) ? "red" : "gray30"
            let text: String
            switch node.kind {
            case .task:
                let facts = [node.taskKind.flatMap { $0 == .unstructured ? nil : $0.description },
                             node.taskState?.description].compactMap { $0 }
                text = "task \(node.task.rawValue)" + (facts.isEmpty ? "" : "\n" + facts.joined(separator: ", "))
            case .scope: text = "\(node.name ?? "scope")\n\(node.state.map { "\($0)" } ?? "")"
            }
            out += "  \(id) [shape=ellipse, color=\(color), label=\"\(escape(text))\"];\n"
            if let parent = node.parent, needed.contains(parent) {
                // A structured child hangs from its parent with a solid edge; an inherited scope
                // (an unstructured task) with a dotted one.
                let style = node.link == .inherited ? ", style=dotted" : ""
                out += "  \(nodeID(parent)) -> \(id) [color=gray70, arrowhead=none\(style)];\n"
            }
        }
        for holding in dump.snapshot.holdings {
            let from = resourceID(holding.resource), to = nodeID(holding.holder)
            let color = hot.contains(from) && hot.contains(to) ? "red" : "black"
            out += "  \(from) -> \(to) [color=\(color), penwidth=2, label=\"\(escape("held by\n\(holding.site)"))\"];\n"
        }
        // Waits: individually when part of a finding, otherwise grouped.
        var groups: [String: (ResourceID, CallSite, Int)] = [:]
        for wait in dump.snapshot.waits {
            if waitersInFindings.contains(wait.waiter) {
                let color = hot.contains(resourceID(wait.resource)) ? "red" : "black"
                out += "  \(nodeID(wait.waiter)) -> \(resourceID(wait.resource)) [style=dashed, color=\(color), label=\"\(escape("waits (\(wait.kind.rawValue))\n\(wait.site)"))\"];\n"
            } else {
                let key = "\(wait.resource.rawValue)|\(wait.site)"
                let current = groups[key] ?? (wait.resource, wait.site, 0)
                groups[key] = (current.0, current.1, current.2 + 1)
            }
        }
        // A dump read back from JSON Lines carries identical waiters as group records instead of
        // one wait each: count them in, or 9,999 queued senders would be drawn as a handful.
        for group in dump.waitGroups {
            let key = "\(group.resource.rawValue)|\(group.site)"
            let current = groups[key] ?? (group.resource, group.site, 0)
            groups[key] = (current.0, current.1, current.2 + group.count)
        }
        for (offset, key) in groups.keys.sorted().enumerated() {
            let (resource, site, count) = groups[key]!
            out += "  waiters\(offset) [shape=folder, label=\"\(escape("\(Detector.grouped(count)) waiter\(count == 1 ? "" : "s")\n\(site)"))\"];\n"
            out += "  waiters\(offset) -> \(resourceID(resource)) [style=dashed];\n"
        }
        out += "}\n"
        return out
    }

    static func resourceID(_ id: ResourceID) -> String { "r\(id.rawValue)" }
    static func nodeID(_ id: NodeID) -> String {
        switch id {
        case .task(let task): return "t\(task.rawValue)"
        case .scope(let scope): return "s\(scope)"
        }
    }

    static func escape(_ text: String) -> String {
        var out = ""
        for character in text {
            switch character {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            default: out.append(character)
            }
        }
        return out
    }
}
