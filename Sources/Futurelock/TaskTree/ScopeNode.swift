import Synchronization

/// A named node of the task tree: the Swift counterpart of a "child future".
///
/// Tasks themselves are implicit in the tree: they are known by their ``TaskID``. A `ScopeNode` is
/// made for every `TaskTree.scope(_:)` and for each child of the toolkit's race/group helpers, and is
/// bound in a `@TaskLocal` for the duration of its body. Child tasks inherit task-locals, so any task
/// spawned inside a scope (group child, `async let`, `Task {}`) sees the scope's node; when the task
/// that reads the node is not the task that made it, the reader is a *child* of that node. That is how
/// the tree is built for un-annotated child tasks. `Task.detached` does not inherit task-locals and so
/// starts a new root, exactly as it does in the runtime.
///
/// A node records its lifecycle — running, finished, consumed — because the difference between "a
/// child that still runs and will release" and "a child that finished while holding, and whose result
/// nobody has consumed yet" is the difference between a wait and a futurelock.
public final class ScopeNode: Sendable {
    /// Lifecycle of a scope or helper child.
    public enum State: UInt8, Sendable, Codable, CustomStringConvertible {
        /// The body is running.
        case running = 0
        /// The body returned or threw; its result has not been taken by the parent yet.
        case finished = 1
        /// The parent has taken the result (or the scope returned inline to its caller).
        case consumed = 2
        /// The work was cancelled before it finished.
        case cancelled = 3

        public var description: String {
            switch self {
            case .running: return "running"
            case .finished: return "finished"
            case .consumed: return "consumed"
            case .cancelled: return "cancelled"
            }
        }

        /// Encoded by name (`"finished"`), like every other enum in a dump.
        public init(from decoder: any Decoder) throws {
            let name = try decoder.singleValueContainer().decode(String.self)
            guard let state = [State.running, .finished, .consumed, .cancelled].first(where: { $0.description == name }) else {
                throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath,
                                                        debugDescription: "unknown scope state \"\(name)\""))
            }
            self = state
        }

        public func encode(to encoder: any Encoder) throws {
            var container = encoder.singleValueContainer()
            try container.encode(description)
        }
    }

    /// Unique within the process; never reused.
    public let id: UInt64
    /// The name given to the scope.
    public let name: String
    /// The task that opened the scope.
    public let taskID: TaskID
    /// The node that was current when this one was opened (same task or an ancestor task).
    public let parent: ScopeNode?
    /// The node this node's task inherited when it was spawned: the parent of the task in the tree.
    /// `nil` for a root task (or a detached one).
    public let taskParent: ScopeNode?
    /// When the node was opened.
    public let openedAt: MonotonicInstant

    private let stateBits = Atomic<UInt8>(State.running.rawValue)
    private let closedAtNanos = Atomic<UInt64>(0)

    private static let serial = Atomic<UInt64>(0)

    init(name: String, taskID: TaskID, parent: ScopeNode?) {
        self.id = ScopeNode.serial.wrappingAdd(1, ordering: .relaxed).newValue
        self.name = name
        self.taskID = taskID
        self.parent = parent
        if let parent {
            self.taskParent = parent.taskID == taskID ? parent.taskParent : parent
        } else {
            self.taskParent = nil
        }
        self.openedAt = .coarseNow
    }

    /// The node's current lifecycle state.
    public var state: State { State(rawValue: stateBits.load(ordering: .acquiring)) ?? .running }

    /// When the node left `.running`, if it has.
    public var closedAt: MonotonicInstant? {
        let raw = closedAtNanos.load(ordering: .acquiring)
        return raw == 0 ? nil : MonotonicInstant(nanoseconds: raw)
    }

    /// Moves the node to `state`. `running → finished → consumed` and `running → cancelled` are the
    /// expected transitions; a later state never goes back to an earlier one.
    public func mark(_ newState: State) {
        if newState != .running {
            _ = closedAtNanos.compareExchange(
                expected: 0, desired: MonotonicInstant.now.nanoseconds, ordering: .acquiringAndReleasing)
        }
        var current = stateBits.load(ordering: .relaxed)
        while current < newState.rawValue, !(newState == .cancelled && current == State.consumed.rawValue) {
            let (exchanged, original) = stateBits.compareExchange(
                expected: current, desired: newState.rawValue, ordering: .acquiringAndReleasing)
            if exchanged { return }
            current = original
        }
    }

    /// The stable id of this node in snapshots.
    public var nodeID: NodeID { .scope(id) }
}
