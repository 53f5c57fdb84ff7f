/// A task's structured ancestry as the runtime knows it, read when one of its holdings is recorded (or
/// when a snapshot sees it wait): its own kind, and the ids and kinds of its nearest ancestors, parent
/// first.
///
/// Trivially copyable and fixed-size, because it is stored in every holding record: four
/// ancestors cover the trees services build (request › handler › group child › grandchild); a deeper
/// task keeps its nearest four (and is not related to ancestors above them). The ids are the runtime's task ids, which
/// are never reused, so the record stays true after the tasks are gone.
@usableFromInline
struct TaskAncestry: Sendable, BitwiseCopyable {
    /// How many ancestors are kept.
    @usableFromInline static let capacity = 4

    @usableFromInline var ids: (UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0)
    /// Two bits per level: level 0 is the task itself, level n its n-th ancestor.
    @usableFromInline var kinds: UInt16 = 0
    /// Ancestors kept.
    @usableFromInline var count: UInt8 = 0
    /// The runtime was read (`false` when its tree is unavailable or the code ran outside a task).
    @usableFromInline var isKnown = false

    @inlinable
    init() {}

    @inlinable
    mutating func setKind(_ kind: RuntimeTaskKind, level: Int) {
        kinds |= kind.bits << UInt16(2 * level)
    }

    @inlinable
    mutating func append(_ id: TaskID, kind: RuntimeTaskKind) {
        switch count {
        case 0: ids.0 = id.rawValue
        case 1: ids.1 = id.rawValue
        case 2: ids.2 = id.rawValue
        default: ids.3 = id.rawValue
        }
        count &+= 1
        setKind(kind, level: Int(count))
    }

    /// The task's own kind (`nil` when the runtime was not read).
    var kind: RuntimeTaskKind? {
        isKnown ? kind(level: 0) : nil
    }

    func kind(level: Int) -> RuntimeTaskKind {
        RuntimeTaskKind(bits: kinds >> UInt16(2 * level))
    }

    /// The ancestors kept, parent first, each with its own kind.
    var ancestors: [(id: TaskID, kind: RuntimeTaskKind)] {
        let all = [ids.0, ids.1, ids.2, ids.3]
        return (0..<Int(count)).map { (TaskID(rawValue: all[$0]), kind(level: $0 + 1)) }
    }
}
