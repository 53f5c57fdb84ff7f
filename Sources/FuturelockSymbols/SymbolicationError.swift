// Errors from symbolication and native thread dumps.
//
// Most failures here are about the environment, not the program: a process that has exited, a kernel
// that forbids ptrace, a binary that is not ELF. Each case therefore says what the operator can do about
// it, because the person reading it is usually looking at a hung service and has no time to look up
// errno values.

/// An error raised while symbolicating addresses or capturing native thread stacks.
public enum SymbolicationError: Error, Sendable, Equatable, CustomStringConvertible {
    /// No process with this id exists (it may have exited).
    case noSuchProcess(pid: Int32)
    /// The kernel refused to let this process ptrace the target.
    case ptraceNotPermitted(pid: Int32, reason: String)
    /// A process may not ptrace its own threads; the dump must be taken from another process.
    case cannotTraceSelf(pid: Int32)
    /// The binary could not be opened or is not a usable ELF file.
    case cannotOpenBinary(path: String, reason: String)
    /// libdw/libdwfl reported an error during `operation`.
    case libdw(operation: String, message: String)
    /// A `prctl(PR_SET_PTRACER)` call failed.
    case cannotAllowTracing(reason: String)
    /// The helper tool that captures this process's own stacks could not be run.
    case helperUnavailable(reason: String)

    /// A sentence that says what went wrong and what to do about it.
    public var description: String {
        switch self {
        case .noSuchProcess(let pid):
            return "no such process: pid \(pid) does not exist (it may have exited); check the pid"
        case .ptraceNotPermitted(let pid, let reason):
            return "ptrace not permitted on pid \(pid) (\(reason)): run as root or with CAP_SYS_PTRACE, "
                + "or set /proc/sys/kernel/yama/ptrace_scope to 0, "
                + "or have the traced process call prctl(PR_SET_PTRACER) "
                + "(NativeThreadDump.allowTracing(byPid:) / allowAnyTracer())"
        case .cannotTraceSelf(let pid):
            return "cannot capture native stacks of pid \(pid) from inside itself: a process cannot ptrace "
                + "its own threads; spawn a helper process that calls NativeThreadDump.capture(pid:) "
                + "on this pid"
        case .cannotOpenBinary(let path, let reason):
            return "cannot open binary '\(path)': \(reason); check that the path exists and is an ELF file"
        case .libdw(let operation, let message):
            return "libdw failed in \(operation): \(message)"
        case .cannotAllowTracing(let reason):
            return "prctl(PR_SET_PTRACER) failed: \(reason)"
        case .helperUnavailable(let reason):
            return "cannot capture this process's native stacks: \(reason)"
        }
    }
}
