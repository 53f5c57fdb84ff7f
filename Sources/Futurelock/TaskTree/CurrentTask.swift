// The identity of the running task, as the runtime knows it.
//
// Futurelock names tasks by the runtime's task id: a 64-bit number that increases monotonically and is
// never reused, unlike the address of the task object, which the allocator hands out again as soon as
// a task is destroyed. A ledger that keyed on addresses would, after a few thousand short-lived tasks,
// attribute an old permit to a brand-new task. The two entry points below are exported by
// libswift_Concurrency; the standard library uses it for `UnownedJob`. It takes the task object (a
// job) and returns its 64-bit id under the Swift calling convention. The task object itself comes from
// `withUnsafeCurrentTask`, whose value is a single reference to it.

@_silgen_name("swift_task_getJobTaskId")
@usableFromInline func _futurelockJobTaskID(_ job: OpaquePointer) -> UInt64

/// The runtime entry point behind `TaskLocal.get()`: given a task-local's key (the address of its
/// `TaskLocal` object) it returns the address of the value bound in the current task, or `nil`. The
/// standard library's inlinable `get()` calls it and reads the value in place, which is all the
/// ledger does too — without going through the unspecialised generic `get()` and copying the value
/// through its witnesses (together 20–25 ns per acquire).
@_silgen_name("swift_task_localValueGet")
@usableFromInline func _futurelockTaskLocalValueGet(_ key: UnsafeRawPointer) -> UnsafeMutableRawPointer?

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// `swift_task_getCurrent`, looked up once. It returns the running task *unretained*; the standard
/// library's `withUnsafeCurrentTask` has to retain and release it around the closure, and is called
/// unspecialised from here — together about a third of an uncontended acquire+release with the
/// ledger on. Called directly, reading the task costs a plain call. (It takes no arguments and returns
/// one pointer, which the Swift and C calling conventions pass identically; if the symbol is
/// missing, `withUnsafeCurrentTask` is used.)
@usableFromInline typealias CurrentTaskFunction = @convention(c) () -> OpaquePointer?
@usableFromInline let currentTaskFunction: CurrentTaskFunction? = {
    guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "swift_task_getCurrent") else { return nil }
    return unsafeBitCast(symbol, to: CurrentTaskFunction.self)
}()

/// A task's runtime identifier: 64 bits, monotonically increasing, never reused within a process.
///
/// `TaskID.none` (raw value 0) stands for code that is not running inside a Swift task at all, such as
/// a synchronous `main` before the first `await`, or a thread created by C code.
public struct TaskID: Hashable, Comparable, Sendable, BitwiseCopyable, CustomStringConvertible, Codable {
    /// The runtime's id for the task.
    public var rawValue: UInt64

    /// Wraps a raw runtime task id.
    @inlinable
    public init(rawValue: UInt64) { self.rawValue = rawValue }

    /// Code not running in a Swift task.
    public static let none = TaskID(rawValue: 0)

    /// The id of the task this code runs in, or `.none` outside a task.
    @inline(__always)
    public static var current: TaskID { current(via: currentTaskFunction) }

    /// The running task's id, through `getCurrent` (`swift_task_getCurrent`) when it was found.
    @inlinable @inline(__always)
    static func current(via getCurrent: CurrentTaskFunction?) -> TaskID {
        guard let getCurrent else { return currentThroughStandardLibrary() }
        guard let task = getCurrent() else { return .none }
        return TaskID(rawValue: _futurelockJobTaskID(task))
    }

    @usableFromInline
    static func currentThroughStandardLibrary() -> TaskID {
        withUnsafeCurrentTask { task in
            guard let task else { return .none }
            return TaskID(rawValue: _futurelockJobTaskID(unsafeBitCast(task, to: OpaquePointer.self)))
        }
    }

    public static func < (lhs: TaskID, rhs: TaskID) -> Bool { lhs.rawValue < rhs.rawValue }

    public var description: String { self == .none ? "no-task" : "task \(rawValue)" }

    public init(from decoder: any Decoder) throws {
        rawValue = try decoder.singleValueContainer().decode(UInt64.self)
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(rawValue)
    }
}

/// What the hot path reads about the running task, resolved once per ledger.
///
/// `TaskID.current` and `TaskTree.currentNode` are globals, and every access to a Swift global
/// checks its lazy initialiser (`swift_once`); the ledger keeps the function pointer and the
/// task-local key in its own stored properties instead, so a stamp costs the three runtime calls
/// and nothing else.
@usableFromInline
struct TaskContextReader: @unchecked Sendable {
    // Immutable after init: a C function pointer and the address of a `TaskLocal` object that
    // lives as long as the process.
    @usableFromInline let currentTask: CurrentTaskFunction?
    @usableFromInline let nodeKey: UnsafeRawPointer

    init() {
        currentTask = currentTaskFunction
        nodeKey = UnsafeRawPointer(Unmanaged.passUnretained(TaskTree.$currentNode).toOpaque())
    }

    /// The running task's id, as `TaskID.current`.
    @inlinable @inline(__always)
    var task: TaskID { TaskID.current(via: currentTask) }

    /// `TaskTree.currentNode`, unretained: the binding that holds it outlives the caller's use.
    @inlinable @inline(__always)
    var node: Unmanaged<ScopeNode>? {
        guard let value = _futurelockTaskLocalValueGet(nodeKey) else { return nil }
        return value.assumingMemoryBound(to: Unmanaged<ScopeNode>?.self).pointee
    }
}

/// The address of the running task object (0 outside a task, or where `swift_task_getCurrent` was not
/// found): only dereferenced while that task is provably alive.
@inlinable @inline(__always)
func currentTaskAddress() -> UInt {
    UInt(bitPattern: currentTaskFunction?())
}

/// The task a continuation resumes: the runtime's raw continuation is the suspended task itself.
@inlinable @inline(__always)
func taskAddress<Value, Failure>(of continuation: UnsafeContinuation<Value, Failure>) -> UInt {
    unsafeBitCast(continuation, to: UInt.self)
}
