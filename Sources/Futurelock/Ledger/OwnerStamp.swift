/// Who did something, where and when: the record kept for every holder and every waiter.
///
/// Built on the hot path, so it holds only what is cheap to read at that moment: the runtime task id,
/// the task-local tree node (a reference, retained), the static call site and a coarse timestamp. The
/// task path, strings and ages are derived later, when the watchdog takes a snapshot.
@usableFromInline
struct OwnerStamp: Sendable {
    @usableFromInline var task: TaskID
    @usableFromInline var node: ScopeNode?
    @usableFromInline var site: StaticCallSite
    @usableFromInline var time: MonotonicInstant
    @usableFromInline var backtrace: CapturedBacktrace?

    @inlinable
    init(task: TaskID, node: ScopeNode?, site: StaticCallSite, time: MonotonicInstant,
         backtrace: CapturedBacktrace?) {
        self.task = task
        self.node = node
        self.site = site
        self.time = time
        self.backtrace = backtrace
    }

    /// The innermost tree node this stamp belongs to: the scope it ran in when that scope belongs to
    /// the same task, the task itself otherwise.
    var nodeID: NodeID {
        if let node, node.taskID == task { return node.nodeID }
        return .task(task)
    }
}

/// Return addresses captured at an acquisition, symbolicated only when a dump asks for them.
public final class CapturedBacktrace: Sendable {
    /// Return addresses, innermost first.
    public let addresses: [UInt]

    init(addresses: [UInt]) { self.addresses = addresses }
}

#if canImport(Glibc)
import Glibc

enum BacktraceCapture {
    private typealias BacktraceFunction = @convention(c) (
        UnsafeMutablePointer<UnsafeMutableRawPointer?>?, Int32) -> Int32

    /// glibc's `backtrace(3)`, looked up once: the Glibc module does not export `<execinfo.h>`.
    private static let backtraceFunction: BacktraceFunction? = {
        guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "backtrace") else { return nil }
        return unsafeBitCast(symbol, to: BacktraceFunction.self)
    }()

    static func capture(skipping skip: Int = 2, maxFrames: Int = 32) -> CapturedBacktrace {
        guard let backtraceFunction else { return CapturedBacktrace(addresses: []) }
        var buffer = [UnsafeMutableRawPointer?](repeating: nil, count: maxFrames + skip)
        let count = buffer.withUnsafeMutableBufferPointer {
            Int(backtraceFunction($0.baseAddress, Int32($0.count)))
        }
        let addresses = buffer.prefix(count).dropFirst(min(skip, count)).map { UInt(bitPattern: $0) }
        return CapturedBacktrace(addresses: addresses)
    }
}
#else
enum BacktraceCapture {
    static func capture(skipping skip: Int = 2, maxFrames: Int = 32) -> CapturedBacktrace {
        CapturedBacktrace(addresses: [])
    }
}
#endif
