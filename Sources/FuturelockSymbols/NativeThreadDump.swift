// Native thread stacks of another process, via ptrace and libdwfl's unwinder.
//
// `dwfl_linux_proc_attach` sets libdwfl up to walk /proc/PID/task; each thread is ptrace-attached (and so
// stopped) only while `dwfl_thread_getframes` unwinds it, then detached — the target is paused per
// thread for microseconds, not for the whole dump. Frames are unwound with .eh_frame/.debug_frame and
// symbolicated with the same `DwflSession` code as in-process lookups.
//
// A process cannot ptrace its own threads (the kernel refuses a tracer in the same thread group), so a
// service that wants its own native stacks spawns a helper process that calls `capture(pid:)` on it;
// under Yama's ptrace_scope=1 the service first calls `allowTracing(byPid:)` for that helper.

import CLibdw
import Glibc

/// Captures the native thread stacks of another process.
public enum NativeThreadDump {
    /// Captures every thread's stack in process `pid`, symbolicated.
    ///
    /// Threads are stopped one at a time, only while each is unwound. Threads that exit during the
    /// dump are left out; a thread whose unwinding fails part-way keeps the frames found so far, with
    /// ``ThreadStack/unwindError`` saying why.
    ///
    /// - Parameters:
    ///   - pid: the process to inspect; must not be the calling process.
    ///   - maxFramesPerThread: the most machine frames to unwind per thread (inlined frames come on top).
    /// - Returns: one ``ThreadStack`` per thread, in /proc order (the main thread first).
    /// - Throws: ``SymbolicationError/noSuchProcess(pid:)``, ``SymbolicationError/cannotTraceSelf(pid:)``,
    ///   ``SymbolicationError/ptraceNotPermitted(pid:reason:)``, or ``SymbolicationError/libdw(operation:message:)``.
    public static func capture(pid: Int32, maxFramesPerThread: Int = 64) throws(SymbolicationError) -> [ThreadStack] {
        guard pid > 0, kill(pid, 0) == 0 || errno == EPERM else { throw .noSuchProcess(pid: pid) }
        guard pid != getpid() else { throw .cannotTraceSelf(pid: pid) }

        let session = try DwflSession(process: pid)
        let attachResult = dwfl_linux_proc_attach(session.dwfl, pid, false)
        if attachResult == ENOENT || attachResult == ESRCH {
            throw .noSuchProcess(pid: pid)
        } else if attachResult == EPERM || attachResult == EACCES {
            throw .ptraceNotPermitted(pid: pid, reason: String(cString: strerror(attachResult)))
        } else if attachResult > 0 {
            throw .libdw(operation: "dwfl_linux_proc_attach", message: String(cString: strerror(attachResult)))
        } else if attachResult < 0 {
            throw .libdw(operation: "dwfl_linux_proc_attach", message: DwflSession.lastErrorMessage())
        }

        let walk = ThreadWalk(maxFrames: max(1, maxFramesPerThread))
        let walkPointer = Unmanaged.passUnretained(walk).toOpaque()
        let threadsResult = withExtendedLifetime(walk) {
            dwfl_getthreads(session.dwfl, { thread, argument in
                guard let thread, let argument else { return Int32(DWARF_CB_ABORT) }
                let walk = Unmanaged<ThreadWalk>.fromOpaque(argument).takeUnretainedValue()
                walk.unwind(thread)
                return Int32(DWARF_CB_OK)
            }, walkPointer)
        }
        if threadsResult < 0, walk.threads.isEmpty {
            throw .libdw(operation: "dwfl_getthreads", message: DwflSession.lastErrorMessage())
        }

        let everyThreadFailed = !walk.threads.isEmpty && walk.threads.allSatisfy { $0.pcs.isEmpty }
        if everyThreadFailed, walk.threads.contains(where: { $0.errorNumber == EPERM }) {
            throw .ptraceNotPermitted(pid: pid, reason: walk.threads[0].error ?? "EPERM")
        }
        if kill(pid, 0) != 0, errno == ESRCH { throw .noSuchProcess(pid: pid) }

        var cache: [UInt64: [SymbolicatedFrame]] = [:]
        return walk.threads.compactMap { thread -> ThreadStack? in
            // A thread that vanished between listing and attaching has no stack worth showing.
            if thread.pcs.isEmpty, thread.errorNumber == ESRCH { return nil }
            let frames = thread.pcs.flatMap { pc -> [SymbolicatedFrame] in
                let key = pc.isActivation ? pc.value : pc.value &- 1
                if let cached = cache[key] { return cached }
                let frames = session.frames(
                    lookupAddress: key,
                    reportedAddress: UInt(pc.value),
                    returnAddressAdjustment: pc.isActivation ? 0 : 1
                ) ?? [SymbolicatedFrame(address: UInt(pc.value))]
                cache[key] = frames
                return frames
            }
            return ThreadStack(tid: thread.tid, name: threadName(pid: pid, tid: thread.tid) ?? "",
                               frames: frames, unwindError: thread.error)
        }
    }

    /// Lets process `tracerPid` ptrace the calling process when Yama's `ptrace_scope` is 1
    /// (`prctl(PR_SET_PTRACER, tracerPid)`). Call it in the service before asking a helper to dump it.
    /// Without Yama this does nothing, as ordinary ptrace permission rules already apply.
    ///
    /// - Throws: ``SymbolicationError/cannotAllowTracing(reason:)`` if the kernel refuses.
    public static func allowTracing(byPid tracerPid: Int32) throws(SymbolicationError) {
        guard tracerPid > 0 else { throw .cannotAllowTracing(reason: "invalid tracer pid \(tracerPid)") }
        try checkPrctl(futurelock_set_ptracer(UInt(tracerPid)))
    }

    /// Lets any process ptrace the calling process when Yama's `ptrace_scope` is 1
    /// (`prctl(PR_SET_PTRACER, PR_SET_PTRACER_ANY)`). Broader than ``allowTracing(byPid:)``; prefer that
    /// when the helper's pid is known. Without Yama this does nothing.
    ///
    /// - Throws: ``SymbolicationError/cannotAllowTracing(reason:)`` if the kernel refuses.
    public static func allowAnyTracer() throws(SymbolicationError) {
        try checkPrctl(futurelock_set_ptracer_any())
    }

    private static func checkPrctl(_ result: Int32) throws(SymbolicationError) {
        guard result != 0 else { return }
        let error = errno
        // Without Yama the kernel does not know PR_SET_PTRACER and says EINVAL; nothing needs allowing.
        if error == EINVAL, access("/proc/sys/kernel/yama", F_OK) != 0 { return }
        throw .cannotAllowTracing(reason: String(cString: strerror(error)))
    }

    private static func threadName(pid: Int32, tid: Int32) -> String? {
        let descriptor = open("/proc/\(pid)/task/\(tid)/comm", O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { return nil }
        defer { close(descriptor) }
        var buffer = [UInt8](repeating: 0, count: 64)
        let count = buffer.withUnsafeMutableBytes { read(descriptor, $0.baseAddress, $0.count) }
        guard count > 0 else { return nil }
        var bytes = buffer[0..<count]
        while bytes.last == UInt8(ascii: "\n") { bytes = bytes.dropLast() }
        return String(decoding: bytes, as: UTF8.self)
    }
}

/// Accumulates raw program counters from libdwfl's C callbacks, which can carry only a context pointer.
/// Symbolication happens after the walk, so threads stay stopped only for the unwinding itself.
private final class ThreadWalk {
    struct ProgramCounter {
        var value: UInt64
        /// True for the innermost frame (and signal frames): the PC is the instruction itself, not a
        /// return address.
        var isActivation: Bool
    }

    struct RawThread {
        var tid: Int32
        var pcs: [ProgramCounter] = []
        var error: String?
        var errorNumber: Int32 = 0
    }

    let maxFrames: Int
    var threads: [RawThread] = []

    init(maxFrames: Int) {
        self.maxFrames = maxFrames
    }

    func unwind(_ thread: OpaquePointer) {
        threads.append(RawThread(tid: dwfl_thread_tid(thread)))
        let context = Unmanaged.passUnretained(self).toOpaque()
        errno = 0
        let result = dwfl_thread_getframes(thread, { frame, argument in
            guard let frame, let argument else { return Int32(DWARF_CB_ABORT) }
            let walk = Unmanaged<ThreadWalk>.fromOpaque(argument).takeUnretainedValue()
            var pc: Dwarf_Addr = 0
            var isActivation = false
            guard dwfl_frame_pc(frame, &pc, &isActivation) else { return Int32(DWARF_CB_ABORT) }
            walk.threads[walk.threads.count - 1].pcs.append(ProgramCounter(value: pc, isActivation: isActivation))
            return walk.threads[walk.threads.count - 1].pcs.count >= walk.maxFrames ? Int32(DWARF_CB_ABORT) : Int32(DWARF_CB_OK)
        }, context)
        let savedErrno = errno
        // -1 at the outermost frame is normal on some systems; it is an error only if nothing was found.
        if result == -1 {
            let last = threads.count - 1
            if threads[last].pcs.isEmpty {
                threads[last].error = DwflSession.lastErrorMessage()
                threads[last].errorNumber = savedErrno
            }
        }
    }
}
