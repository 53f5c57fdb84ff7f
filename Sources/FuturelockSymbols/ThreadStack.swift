// The native stack of one thread of another process, as NativeThreadDump captures it.
//
// Swift tasks that are suspended have no native stack, but the threads that run them do, and a hung
// service often is hung in native code (a blocking syscall on a cooperative-pool thread, a lock). The
// dump shows each thread's name — the runtime names its pool threads — and its frames.

/// One thread's native call stack.
public struct ThreadStack: Sendable, Hashable, CustomStringConvertible {
    /// The kernel thread id.
    public var tid: Int32
    /// The thread's name from `/proc/PID/task/TID/comm` (empty if unreadable).
    public var name: String
    /// The frames, innermost first; inlined frames are included as separate entries.
    public var frames: [SymbolicatedFrame]
    /// Why unwinding stopped early or failed, if it did (e.g. the thread exited during the dump, or
    /// unwind information was missing for a frame); nil when the stack was walked to its end.
    public var unwindError: String?

    /// Creates a thread stack; normally produced by ``NativeThreadDump/capture(pid:maxFramesPerThread:)``.
    public init(tid: Int32, name: String, frames: [SymbolicatedFrame], unwindError: String? = nil) {
        self.tid = tid
        self.name = name
        self.frames = frames
        self.unwindError = unwindError
    }

    /// A multi-line rendering: a header line with tid and name, then one numbered line per frame.
    public var description: String {
        var lines = ["Thread \(tid) \"\(name)\":"]
        for (index, frame) in frames.enumerated() {
            lines.append("  #\(index) \(frame)")
        }
        if let unwindError { lines.append("  (unwinding stopped: \(unwindError))") }
        return lines.joined(separator: "\n")
    }
}
