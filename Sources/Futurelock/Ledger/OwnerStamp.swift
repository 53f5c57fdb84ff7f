/// Who did something, where and when: the record kept for every holder and every waiter.
///
/// Built on the hot path, so it holds only what is cheap to read at that moment: the runtime task id,
/// the task-local tree node, the static call site and a coarse timestamp. The task path, strings and
/// ages are derived later, when the watchdog takes a snapshot.
///
/// The stamp is trivially copyable on purpose. With a single strong reference inside, every copy and
/// every slab store went through the type's value witnesses, and a ledger-on acquire+release cost
/// 170–200 ns instead of 120 ns. So the two references it carries are unretained, and their
/// lifetimes are guaranteed elsewhere:
/// - `node` is borrowed from the task-local binding of the task that made the stamp. That binding
///   lives at least as long as the call that records the stamp, and a waiter's stamp only sits in a
///   queue while its task is suspended inside that call. Storage that keeps a stamp *beyond* the
///   call — the holding slab — retains the node itself (``HoldingTable``).
/// - `backtrace` points into the process-wide table of interned backtraces, which are never freed
///   (``BacktraceCapture``).
///
/// The task object's address is not kept: a holding reads its task's ancestry when it is recorded (from
/// the running task, or from the waiter it is handed to, whose continuation is its task), and a waiter's
/// task is its continuation too.
@usableFromInline
struct OwnerStamp: Sendable, BitwiseCopyable {
    @usableFromInline var task: TaskID
    @usableFromInline var nodeReference: Unmanaged<ScopeNode>?
    @usableFromInline var site: StaticCallSite
    /// Acquired by a scoped call (`withPermit`, `withConnection`): the holding object never reaches
    /// user code, so only the end of that call — in the acquiring task — can release it. (Declared
    /// after the 28-byte call site, it takes padding the stamp had anyway.)
    @usableFromInline var isPinned = false
    @usableFromInline var time: MonotonicInstant
    @usableFromInline var backtraceReference: Unmanaged<CapturedBacktrace>?

    @inlinable
    init(task: TaskID, node: Unmanaged<ScopeNode>?, site: StaticCallSite, time: MonotonicInstant,
         backtrace: Unmanaged<CapturedBacktrace>?) {
        self.task = task
        self.nodeReference = node
        self.site = site
        self.time = time
        self.backtraceReference = backtrace
    }

    /// The scope the stamp was made in (valid while the stamp is held: see the type's notes).
    var node: ScopeNode? { nodeReference?.takeUnretainedValue() }

    /// The acquisition backtrace, when one was captured.
    var backtrace: CapturedBacktrace? { backtraceReference?.takeUnretainedValue() }

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
#endif
import Synchronization

/// Captures acquisition backtraces and interns them.
///
/// A stamp must stay trivially copyable (see ``OwnerStamp``), so it cannot own the backtrace it
/// refers to. Captured backtraces are therefore interned: identical stacks share one object, and
/// the objects are never freed, so a stamp can point at one without retaining it. A program has a
/// bounded number of distinct acquisition paths, and async functions show only their innermost
/// frames, so the table stays small; it is capped at ``limit`` distinct backtraces all the same, and
/// a capture of a new backtrace beyond the cap is recorded without one.
enum BacktraceCapture {
    /// The most distinct backtraces kept (about 300 bytes each).
    static let limit = 65_536

    private static let table = Lock<[[UInt]: Unmanaged<CapturedBacktrace>]>([:])

    /// Captures the caller's stack (dropping the innermost `skip` frames) and returns the interned copy.
    @inline(never)
    static func capture(skipping skip: Int = 2, maxFrames: Int = 32) -> Unmanaged<CapturedBacktrace>? {
        intern(Array(rawAddresses(maxFrames: maxFrames + skip).dropFirst(skip)))
    }

    /// The shared, immortal object for `addresses`, or `nil` once ``limit`` distinct ones are kept.
    static func intern(_ addresses: [UInt]) -> Unmanaged<CapturedBacktrace>? {
        table.withLock { interned in
            if let existing = interned[addresses] { return existing }
            guard interned.count < limit else { return nil }
            // Retained once and never released: interned backtraces live as long as the process.
            let object = Unmanaged.passRetained(CapturedBacktrace(addresses: addresses))
            interned[addresses] = object
            return object
        }
    }

    #if canImport(Glibc)
    private typealias BacktraceFunction = @convention(c) (
        UnsafeMutablePointer<UnsafeMutableRawPointer?>?, Int32) -> Int32

    /// glibc's `backtrace(3)`, looked up once: the Glibc module does not export `<execinfo.h>`.
    private static let backtraceFunction: BacktraceFunction? = {
        guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "backtrace") else { return nil }
        return unsafeBitCast(symbol, to: BacktraceFunction.self)
    }()

    @inline(__always)
    private static func rawAddresses(maxFrames: Int) -> [UInt] {
        guard let backtraceFunction else { return [] }
        var buffer = [UnsafeMutableRawPointer?](repeating: nil, count: maxFrames)
        let count = buffer.withUnsafeMutableBufferPointer {
            Int(backtraceFunction($0.baseAddress, Int32($0.count)))
        }
        return buffer.prefix(count).map { UInt(bitPattern: $0) }
    }
    #else
    private static func rawAddresses(maxFrames: Int) -> [UInt] { [] }
    #endif
}
