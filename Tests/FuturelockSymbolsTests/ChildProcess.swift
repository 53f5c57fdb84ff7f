// A child process for thread-dump tests that is always killed and reaped, even when a test fails.
//
// Readiness is observed, never assumed: `waitUntilBlocked` polls /proc/PID/syscall until the child is
// parked in the system call we expect, with a deadline, instead of sleeping for a guessed duration.

import Glibc

struct ChildProcess: ~Copyable {
    let pid: pid_t

    struct SpawnError: Error, CustomStringConvertible {
        var description: String
    }

    /// Starts `path` with `arguments` (argv[0] is `path`), with an empty environment.
    init(_ path: String, _ arguments: [String]) throws {
        var argv: [UnsafeMutablePointer<CChar>?] = ([path] + arguments).map { strdup($0) }
        argv.append(nil)
        defer { argv.forEach { free($0) } }
        let environment: [UnsafeMutablePointer<CChar>?] = [nil]
        var child: pid_t = 0
        let result = posix_spawn(&child, path, nil, nil, argv, environment)
        guard result == 0 else {
            throw SpawnError(description: "posix_spawn(\(path)) failed: \(String(cString: strerror(result)))")
        }
        pid = child
    }

    /// Polls until the child is inside one of `syscalls` (x86_64 numbers), or the deadline passes.
    /// - Returns: whether the child was seen blocked in time.
    func waitUntilBlocked(inSyscalls syscalls: Set<Int>, timeout: Duration = .seconds(10)) -> Bool {
        let clock = ContinuousClock()
        let deadline = clock.now.advanced(by: timeout)
        while clock.now < deadline {
            if let number = currentSyscall(), syscalls.contains(number) { return true }
            sched_yield()
        }
        return false
    }

    /// The number of the system call the child is blocked in, from /proc/PID/syscall.
    private func currentSyscall() -> Int? {
        let descriptor = open("/proc/\(pid)/syscall", O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { return nil }
        defer { close(descriptor) }
        var buffer = [UInt8](repeating: 0, count: 256)
        let count = buffer.withUnsafeMutableBytes { read(descriptor, $0.baseAddress, $0.count) }
        guard count > 0 else { return nil }
        let text = String(decoding: buffer[0..<count], as: UTF8.self)
        return text.split(separator: " ").first.flatMap { Int($0) }
    }

    deinit {
        kill(pid, SIGKILL)
        var status: Int32 = 0
        while waitpid(pid, &status, 0) == -1, errno == EINTR {}
    }
}

/// x86_64 system call numbers of the nanosleep family.
let nanosleepSyscalls: Set<Int> = [35 /* nanosleep */, 230 /* clock_nanosleep */]
