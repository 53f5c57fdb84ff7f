/// Identifies a node of the task tree in a snapshot: a task (by its runtime id) or a named scope.
public enum NodeID: Hashable, Sendable, Comparable, CustomStringConvertible, Codable {
    /// A task, by runtime task id.
    case task(TaskID)
    /// A named scope or helper child, by its serial number.
    case scope(UInt64)

    public var description: String {
        switch self {
        case .task(let id): return "task:\(id.rawValue)"
        case .scope(let id): return "scope:\(id)"
        }
    }

    /// Parses the form `description` writes (`task:12`, `scope:3`).
    public init?(parsing text: Substring) {
        if text.hasPrefix("task:"), let raw = UInt64(text.dropFirst(5)) {
            self = .task(TaskID(rawValue: raw))
        } else if text.hasPrefix("scope:"), let raw = UInt64(text.dropFirst(6)) {
            self = .scope(raw)
        } else {
            return nil
        }
    }

    /// One word: task ids and scope serials, with the top bit telling them apart (a snapshot of
    /// 200,000 waiters hashes node ids millions of times).
    public func hash(into hasher: inout Hasher) {
        switch self {
        case .task(let id): hasher.combine(id.rawValue)
        case .scope(let serial): hasher.combine(serial | (1 << 63))
        }
    }

    public init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        guard let parsed = NodeID(parsing: Substring(text)) else {
            throw DecodingError.dataCorrupted(
                .init(codingPath: decoder.codingPath, debugDescription: "not a node id: \(text)"))
        }
        self = parsed
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(description)
    }

    public static func < (lhs: NodeID, rhs: NodeID) -> Bool {
        switch (lhs, rhs) {
        case (.task(let a), .task(let b)): return a < b
        case (.scope(let a), .scope(let b)): return a < b
        case (.task, .scope): return true
        case (.scope, .task): return false
        }
    }
}
