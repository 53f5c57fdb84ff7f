// What the concurrency runtime tells about a task's place in the structured task tree.
//
// The Swift runtime keeps, for every structured child task (a task-group child, a discarding-group
// child, an `async let`), a pointer to its parent task: the first word after the task object, in the
// "child fragment". The job-flags word of every task says whether it is such a child and of which
// kind. Debuggers rely on this layout, so the runtime exports its size and a layout version for them
// (`_swift_concurrency_debug_asyncTaskSize`, `_swift_concurrency_debug_internal_layout_version`).
// Unstructured tasks (`Task {}`, `Task.detached`) have no parent link: the runtime does not consider
// them part of their creator's tree, and neither does the ledger.
//
// Reading the link is only sound while the tasks involved cannot be freed. A task's ancestors are
// alive for as long as it has not completed — a parent cannot leave the scope that owns a structured
// child before the child has completed — so the ledger reads a task's ancestry while the task is
// provably not completed: the running task when it acquires, a waiter still queued (under the lock of
// the primitive it waits on) when a holding is handed to it or a snapshot is taken.
//
// Everything is checked once, when the layout is first used: the two debugger symbols must be
// exported and describe the layout this file knows (version 1, 64-bit pointers, a 208-byte task).
// Anything else — another runtime, another platform — and the ledger falls back to the tree that
// named scopes give, and says so (``TaskTree/runtimeAvailability``).

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Whether the runtime's structured task tree can be read in this process, and if not, why.
public enum RuntimeTreeAvailability: Sendable, Hashable, CustomStringConvertible {
    /// Parents and kinds of structured child tasks are read from the runtime.
    case available(layoutVersion: UInt32, taskSize: Int)
    /// Only named scopes (`TaskTree.scope`, `TaskTree.child`) and task-local inheritance give the
    /// tree; un-annotated child tasks are related to their creator by inherited scopes only.
    case unavailable(reason: String)

    /// Whether the runtime tree is read.
    public var isAvailable: Bool {
        if case .available = self { return true }
        return false
    }

    /// One line for logs and dump headers.
    public var description: String {
        switch self {
        case .available(let version, let size):
            return "task tree from the Swift runtime (layout version \(version), task size \(size))"
        case .unavailable(let reason):
            return "task tree from named scopes only: the runtime's structured task tree is unavailable (\(reason))"
        }
    }
}

extension TaskTree {
    /// Whether this process's runtime exposes the structured task tree (checked once).
    public static var runtimeAvailability: RuntimeTreeAvailability { RuntimeTaskLayout.current.availability }
}

/// The offsets and bits the ledger reads, resolved and checked once per process.
@usableFromInline
struct RuntimeTaskLayout: Sendable {
    /// The only layout version whose child fragment and flags this file knows.
    static let knownLayoutVersion: UInt32 = 1
    /// The task object's size for that version with 64-bit pointers.
    static let knownTaskSize = 208

    /// Byte offset of the job-flags word in every job.
    @usableFromInline static let flagsOffset = 32
    /// Job flags: the task is a structured child (it has a child fragment with its parent).
    @usableFromInline static let childTaskBit: UInt32 = 1 << 24
    /// Job flags: the task is a task-group child (discarding or not).
    @usableFromInline static let groupChildBit: UInt32 = 1 << 26
    /// Job flags: the task is an `async let` child.
    @usableFromInline static let asyncLetBit: UInt32 = 1 << 28

    /// Byte offset of the parent pointer (the task size); 0 when the runtime tree is unavailable.
    @usableFromInline let parentOffset: Int
    let availability: RuntimeTreeAvailability

    /// The layout of this process, or the reason it cannot be read.
    static let current = RuntimeTaskLayout()

    /// A layout that reads nothing (for ledgers told not to read the runtime, and for tests of the
    /// fallback).
    static func disabled(_ reason: String) -> RuntimeTaskLayout {
        RuntimeTaskLayout(parentOffset: 0, availability: .unavailable(reason: reason))
    }

    private init(parentOffset: Int, availability: RuntimeTreeAvailability) {
        self.parentOffset = parentOffset
        self.availability = availability
    }

    private init() {
        let (offset, availability) = Self.probe()
        self.init(parentOffset: offset, availability: availability)
    }

    private static func probe() -> (Int, RuntimeTreeAvailability) {
        guard MemoryLayout<UnsafeRawPointer>.size == 8 else {
            return (0, .unavailable(reason: "only 64-bit runtimes are supported"))
        }
        // Looked up as the rest of the ledger looks up runtime entry points (the default scope).
        let process = UnsafeMutableRawPointer(bitPattern: 0)
        guard let sizeSymbol = dlsym(process, "_swift_concurrency_debug_asyncTaskSize") else {
            return (0, .unavailable(reason: "the concurrency runtime does not export _swift_concurrency_debug_asyncTaskSize"))
        }
        guard let versionSymbol = dlsym(process, "_swift_concurrency_debug_internal_layout_version") else {
            return (0, .unavailable(reason: "the concurrency runtime does not export _swift_concurrency_debug_internal_layout_version"))
        }
        let size = sizeSymbol.load(as: Int.self)
        let version = versionSymbol.load(as: UInt32.self)
        guard version == knownLayoutVersion else {
            return (0, .unavailable(reason: "task layout version \(version) is not the known version \(knownLayoutVersion)"))
        }
        guard size == knownTaskSize else {
            return (0, .unavailable(reason: "task size \(size) is not the known size \(knownTaskSize) for layout version \(version)"))
        }
        return (size, .available(layoutVersion: version, taskSize: size))
    }

    /// The structured ancestry of the task at `address`, which must be provably alive and not
    /// completed — the running task, or a task queued in a wait whose lock the caller holds — so that
    /// it and its ancestors are alive: its kind and up to ``TaskAncestry/capacity`` ancestor ids,
    /// parent first. Nothing is read for address 0.
    @inlinable
    func ancestry(ofTaskAt address: UInt) -> TaskAncestry {
        Self.ancestry(ofTaskAt: address, parentOffset: parentOffset)
    }

    /// ``ancestry(ofTaskAt:)`` with the parent offset given (0: read nothing). Inlined for the common
    /// case — a task with no structured parent, one load — with the walk up the parents out of line.
    @inlinable @inline(__always)
    static func ancestry(ofTaskAt address: UInt, parentOffset: Int) -> TaskAncestry {
        var ancestry = TaskAncestry()
        guard parentOffset != 0, let task = UnsafeRawPointer(bitPattern: address) else { return ancestry }
        let flags = task.load(fromByteOffset: flagsOffset, as: UInt32.self)
        ancestry.isKnown = true
        guard flags & childTaskBit != 0 else { return ancestry }
        return ancestors(ofChild: task, flags: flags, parentOffset: parentOffset)
    }

    @usableFromInline @inline(never)
    static func ancestors(ofChild task: UnsafeRawPointer, flags childFlags: UInt32, parentOffset: Int) -> TaskAncestry {
        var ancestry = TaskAncestry()
        ancestry.isKnown = true
        var current = task
        var flags = childFlags
        ancestry.setKind(RuntimeTaskKind(flags: flags), level: 0)
        while flags & childTaskBit != 0 {
            guard ancestry.count < TaskAncestry.capacity else { break }
            guard let parent = current.load(fromByteOffset: parentOffset, as: UnsafeRawPointer?.self) else { break }
            flags = parent.load(fromByteOffset: flagsOffset, as: UInt32.self)
            ancestry.append(TaskID(rawValue: _futurelockJobTaskID(OpaquePointer(parent))),
                            kind: RuntimeTaskKind(flags: flags))
            current = parent
        }
        return ancestry
    }
}

/// How a task is related to the task that created it, as the runtime records it.
public enum RuntimeTaskKind: String, Sendable, Hashable, Codable, CustomStringConvertible {
    /// A task with no structured parent: a top-level task, `Task {}` or `Task.detached`.
    case unstructured
    /// A child of a task group (`withTaskGroup`, `withThrowingTaskGroup`, discarding groups).
    case groupChild = "group child"
    /// An `async let` child.
    case asyncLet = "async let"
    /// Another structured child.
    case child

    @inlinable
    init(flags: UInt32) {
        if flags & RuntimeTaskLayout.childTaskBit == 0 {
            self = .unstructured
        } else if flags & RuntimeTaskLayout.asyncLetBit != 0 {
            self = .asyncLet
        } else if flags & RuntimeTaskLayout.groupChildBit != 0 {
            self = .groupChild
        } else {
            self = .child
        }
    }

    /// Two bits, for packing into ``TaskAncestry``.
    @inlinable
    var bits: UInt16 {
        switch self {
        case .unstructured: return 0
        case .groupChild: return 1
        case .asyncLet: return 2
        case .child: return 3
        }
    }

    init(bits: UInt16) {
        switch bits & 3 {
        case 1: self = .groupChild
        case 2: self = .asyncLet
        case 3: self = .child
        default: self = .unstructured
        }
    }

    /// Whether the runtime links the task to a parent.
    public var isStructured: Bool { self != .unstructured }

    public var description: String { rawValue }
}
