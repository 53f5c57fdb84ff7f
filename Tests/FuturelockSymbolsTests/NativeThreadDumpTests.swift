// Native thread stacks of a child process, and the typed errors of the dump.
//
// `/bin/sleep` is a process whose only thread is known to be blocked in the nanosleep family once
// /proc says so, which makes the expected innermost frames certain without any debug information.

import FuturelockSymbols
import Glibc
import Testing

@Suite("NativeThreadDump")
struct NativeThreadDumpTests {
    @Test("a sleeping child's thread is blocked in nanosleep", .timeLimit(.minutes(1)))
    func sleepingChild_showsNanosleepFrame() throws {
        let child = try ChildProcess("/bin/sleep", ["30"])
        let blocked = child.waitUntilBlocked(inSyscalls: nanosleepSyscalls)
        try #require(blocked, "sleep never blocked")
        let pid = child.pid

        let threads = try NativeThreadDump.capture(pid: pid)

        #expect(threads.count == 1, "\(threads)")
        let thread = try #require(threads.first)
        #expect(thread.tid == pid)
        #expect(thread.name == "sleep")
        let functions = thread.frames.compactMap(\.function)
        #expect(functions.contains { $0.contains("nanosleep") }, "\(thread)")
        // The innermost frame is in the C library, where the system call is made.
        #expect(thread.frames.first?.moduleName?.hasPrefix("libc") == true, "\(thread)")
        #expect(thread.frames.count > 1, "unwinding stopped at the first frame: \(thread)")
    }

    @Test("frame limit is honoured", .timeLimit(.minutes(1)))
    func frameLimit_isHonoured() throws {
        let child = try ChildProcess("/bin/sleep", ["30"])
        let blocked = child.waitUntilBlocked(inSyscalls: nanosleepSyscalls)
        try #require(blocked, "sleep never blocked")
        let pid = child.pid
        let threads = try NativeThreadDump.capture(pid: pid, maxFramesPerThread: 1)
        let thread = try #require(threads.first)
        // One machine frame; inlined frames at it could add entries but all share its address.
        #expect(Set(thread.frames.map(\.address)).count == 1, "\(thread)")
    }

    @Test("a pid that does not exist is a typed error")
    func missingProcess_throwsNoSuchProcess() {
        // Above the kernel's largest possible pid_max (2^22), so it cannot exist.
        let pid = Int32.max
        do {
            _ = try NativeThreadDump.capture(pid: pid)
            Issue.record("capture of a missing process succeeded")
        } catch {
            #expect(error == .noSuchProcess(pid: pid))
            #expect(error.description.contains("no such process"))
        }
    }

    @Test("dumping the calling process is refused with advice")
    func ownProcess_throwsCannotTraceSelf() {
        do {
            _ = try NativeThreadDump.capture(pid: getpid())
            Issue.record("capture of the calling process succeeded")
        } catch {
            #expect(error == .cannotTraceSelf(pid: getpid()))
            #expect(error.description.contains("helper process"))
        }
    }

    @Test("allowing tracing succeeds (a no-op without Yama)")
    func allowTracing_succeeds() throws {
        try NativeThreadDump.allowTracing(byPid: getppid())
        try NativeThreadDump.allowAnyTracer()
        #expect(throws: SymbolicationError.self) { try NativeThreadDump.allowTracing(byPid: 0) }
    }
}
