// Plugs libdw into the watchdog: acquisition backtraces in findings become function/file/line, and a
// new lock comes with every native thread of the process, unwound and symbolicated.
//
// A process cannot ptrace its own threads, so the stacks are taken by a short-lived helper process —
// the `futurelock` tool, run as `futurelock stacks <pid> --format json` — which attaches, unwinds each
// thread (stopping it for microseconds), prints JSON and exits. The service is never stopped longer
// than that.

import Futurelock
import Glibc

import Foundation  // Process and Pipe live in Foundation proper

extension Watchdog.Configuration {
    /// Symbolicates acquisition backtraces with `symbolicator` and, when `nativeStacks` is true,
    /// captures every thread's stack at each new lock (through the helper tool at `toolPath`, or found
    /// as described in ``NativeThreadDump/helperToolPath()``).
    public mutating func useSymbolication(_ symbolicator: Symbolicator = .shared, nativeStacks: Bool = true,
                                          toolPath: String? = nil) {
        symbolicate = { addresses in
            // The capture's own frames (the ledger stamping an acquisition) say nothing about the caller.
            let frames = symbolicator.symbolicate(backtrace: addresses)
            let captureFrames = frames.prefix {
                guard let function = $0.function else { return false }
                return function.contains("Futurelock.BacktraceCapture") || function.contains("Futurelock.Ledger.")
            }
            return frames.dropFirst(captureFrames.count).map(\.description)
        }
        if nativeStacks {
            captureNativeThreads = {
                (try? NativeThreadDump.captureSelf(toolPath: toolPath)) ?? []
            }
        }
    }
}

extension NativeThreadDump {
    /// Where the helper tool is: `$FUTURELOCK_TOOL`, else a `futurelock` next to this executable, else
    /// `futurelock` on `PATH`.
    public static func helperToolPath() -> String? {
        let environment = ProcessInfo.processInfo.environment
        if let explicit = environment["FUTURELOCK_TOOL"], FileManager.default.isExecutableFile(atPath: explicit) {
            return explicit
        }
        if let executable = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe") {
            let sibling = URL(fileURLWithPath: executable).deletingLastPathComponent().appendingPathComponent("futurelock").path
            if FileManager.default.isExecutableFile(atPath: sibling) { return sibling }
        }
        for directory in (environment["PATH"] ?? "").split(separator: ":") {
            let candidate = "\(directory)/futurelock"
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        }
        return nil
    }

    /// This process's own threads, captured by the helper tool (`futurelock stacks <pid> --format json`).
    ///
    /// - Throws: ``SymbolicationError/helperUnavailable(reason:)`` when the tool cannot be found or fails.
    public static func captureSelf(toolPath: String? = nil) throws(SymbolicationError) -> [NativeThreadRecord] {
        guard let tool = toolPath ?? helperToolPath() else {
            throw .helperUnavailable(reason: "the `futurelock` tool was not found: set FUTURELOCK_TOOL to its path or put it on PATH")
        }
        // Let the helper (our child) attach under Yama's ptrace_scope=1.
        try? allowAnyTracer()
        let process = Process()
        process.executableURL = URL(fileURLWithPath: tool)
        process.arguments = ["stacks", String(getpid()), "--format", "json"]
        let output = Pipe()
        let errors = Pipe()
        process.standardOutput = output
        process.standardError = errors
        do { try process.run() } catch {
            throw .helperUnavailable(reason: "could not start \(tool): \(error)")
        }
        let data = output.fileHandleForReading.readDataToEndOfFile()
        let problems = errors.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw .helperUnavailable(reason: "\(tool) stacks exited with \(process.terminationStatus): \(String(decoding: problems, as: UTF8.self))")
        }
        do {
            return try JSONDecoder().decode([NativeThreadRecord].self, from: data)
        } catch {
            throw .helperUnavailable(reason: "\(tool) stacks printed something that is not a thread list: \(error)")
        }
    }

    /// The records the dump stores for `stacks`.
    public static func records(_ stacks: [ThreadStack]) -> [NativeThreadRecord] {
        stacks.map { NativeThreadRecord(tid: $0.tid, name: $0.name, frames: $0.frames.map(\.description), error: $0.unwindError) }
    }
}
