import Foundation
import Glibc
import Futurelock
import Testing

/// The `futurelock` tool as a user runs it: a real process, real files, real exit statuses.
@Suite("futurelock CLI")
struct CLITests {
    struct Run {
        var status: Int32
        var stdout: String
        var stderr: String
    }

    /// The built tool, next to the test bundle in the build folder.
    static var tool: String {
        var directory = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        for _ in 0..<4 {
            let candidate = directory.appendingPathComponent("futurelock").path
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
            directory = directory.deletingLastPathComponent()
        }
        let cwd = FileManager.default.currentDirectoryPath
        return cwd + "/.build/debug/futurelock"
    }

    static func run(_ arguments: [String]) throws -> Run {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: tool)
        process.arguments = arguments
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        let stdout = out.fileHandleForReading.readDataToEndOfFile()
        let stderr = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return Run(status: process.terminationStatus, stdout: String(decoding: stdout, as: UTF8.self),
                   stderr: String(decoding: stderr, as: UTF8.self))
    }

    static func temporaryFile(_ contents: String, _ suffix: String = ".jsonl") throws -> String {
        let path = FileManager.default.temporaryDirectory
            .appendingPathComponent("futurelock-cli-\(UInt64.random(in: 0...UInt64.max))\(suffix)").path
        try contents.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    /// A real dump: the F7 reproducer's, as JSON Lines.
    static func realDump() throws -> String {
        let run = try run(["reproduce", "reentrant", "--format", "json"])
        #expect(run.status == 2)
        return run.stdout
    }

    @Test(.timeLimit(.minutes(2))) func reproduce_exitStatusesFollowTheContract() throws {
        #expect(try Self.run(["reproduce", "abba", "--variant", "instrumented"]).status == 2)
        #expect(try Self.run(["reproduce", "abba", "--variant", "fixed"]).status == 0)
        let plain = try Self.run(["reproduce", "abba", "--variant", "plain", "--timeout", "0.5"])
        #expect(plain.status == 124)
        #expect(plain.stdout.contains("timed out"))
        let unknown = try Self.run(["reproduce", "no-such-form"])
        #expect(unknown.status != 0)
        #expect(unknown.stderr.contains("unknown reproducer 'no-such-form'"))
        let badTimeout = try Self.run(["reproduce", "abba", "--timeout=-1"])
        #expect(badTimeout.status != 0)
        #expect(badTimeout.stderr.contains("--timeout must be a positive number"))
    }

    @Test(.timeLimit(.minutes(2))) func render_allFormats_andDotIsValidForGraphviz() throws {
        let path = try Self.temporaryFile(try Self.realDump())
        defer { try? FileManager.default.removeItem(atPath: path) }
        let text = try Self.run(["render", path, "--format", "text"])
        #expect(text.status == 0)
        #expect(text.stdout.contains("!!! selfDeadlock (certain)"))
        #expect(text.stdout.contains("Reentrant.swift"))
        let json = try Self.run(["render", path, "--format", "json"])
        #expect(json.status == 0)
        #expect(try JSONLinesDump.read(json.stdout).findings.map(\.kind) == [.selfDeadlock])
        let dot = try Self.run(["render", path, "--format", "dot"])
        #expect(dot.status == 0 && dot.stdout.hasPrefix("digraph futurelock"))
        // Graphviz must accept it.
        let dotPath = try Self.temporaryFile(dot.stdout, ".dot")
        defer { try? FileManager.default.removeItem(atPath: dotPath) }
        let graphviz = Process()
        graphviz.executableURL = URL(fileURLWithPath: "/usr/bin/dot")
        graphviz.arguments = ["-Tsvg", dotPath, "-o", "/dev/null"]
        try graphviz.run()
        graphviz.waitUntilExit()
        #expect(graphviz.terminationStatus == 0)
        let svg = try Self.run(["render", path, "--format", "svg"])
        #expect(svg.status == 0 && svg.stdout.contains("<svg"))
    }

    @Test(.timeLimit(.minutes(2))) func explain_printsWhatHappenedAndTheFix() throws {
        let path = try Self.temporaryFile(try Self.realDump())
        defer { try? FileManager.default.removeItem(atPath: path) }
        let run = try Self.run(["explain", path])
        #expect(run.status == 0)
        #expect(run.stdout.contains("self-deadlock"))
        #expect(run.stdout.contains("How to fix it:"))
    }

    @Test(.timeLimit(.minutes(2))) func badInput_getsAClearErrorNamingTheLineAndANonZeroStatus() throws {
        let good = try Self.realDump().split(separator: "\n").map(String.init)
        var broken = good
        broken[2] = "{\"type\": \"node\", \"version\": 1, oops"
        let malformed = try Self.temporaryFile(broken.joined(separator: "\n"))
        let futureVersion = try Self.temporaryFile(good.map {
            $0.replacingOccurrences(of: "\"version\":1", with: "\"version\":7")
        }.joined(separator: "\n"))
        let garbage = try Self.temporaryFile(String(decoding: (0..<512).map { _ in UInt8.random(in: 0...255) }, as: UTF8.self))
        defer { for path in [malformed, futureVersion, garbage] { try? FileManager.default.removeItem(atPath: path) } }

        let missing = try Self.run(["render", "/nonexistent/dump.jsonl"])
        #expect(missing.status != 0)
        #expect(missing.stderr.contains("no such file"))
        let bad = try Self.run(["render", malformed])
        #expect(bad.status != 0)
        #expect(bad.stderr.contains("line 3"))
        let version = try Self.run(["explain", futureVersion])
        #expect(version.status != 0)
        #expect(version.stderr.contains("line 1: format version 7 is not supported"))
        let noise = try Self.run(["render", garbage])
        #expect(noise.status != 0)
        #expect(noise.stderr.contains("line"))
        let unknownFormat = try Self.run(["render", malformed, "--format", "pdf"])
        #expect(unknownFormat.status != 0)
    }

    @Test(.timeLimit(.minutes(2))) func symbolicate_resolvesAKnownFunctionOfTheTool() throws {
        // Find the file address of the tool's own `Detector.grouped(_:)` with nm, then ask the CLI.
        let nm = Process()
        nm.executableURL = URL(fileURLWithPath: "/usr/bin/nm")
        nm.arguments = [Self.tool]
        let out = Pipe()
        nm.standardOutput = out
        try nm.run()
        let symbols = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        nm.waitUntilExit()
        let line = try #require(symbols.split(separator: "\n").first { $0.contains("8DetectorO7grouped") && $0.contains(" T ") })
        let address = "0x" + line.split(separator: " ")[0]
        let run = try Self.run(["symbolicate", Self.tool, address])
        #expect(run.status == 0)
        #expect(run.stdout.contains("Detector.grouped"))
        #expect(run.stdout.contains("Detector.swift:"))
        let bad = try Self.run(["symbolicate", Self.tool, "banana"])
        #expect(bad.status != 0 && bad.stderr.contains("not an address"))
        let missing = try Self.run(["symbolicate", "/nonexistent/binary", "0x10"])
        #expect(missing.status != 0 && missing.stderr.contains("cannot open binary"))
    }

    @Test(.timeLimit(.minutes(2))) func stacks_ofAProcessWithAKnownBlockedThread() throws {
        let sleeper = Process()
        sleeper.executableURL = URL(fileURLWithPath: "/bin/sleep")
        sleeper.arguments = ["60"]
        try sleeper.run()
        // SIGKILL: a child spawned from a test thread may inherit a mask that blocks SIGTERM.
        defer { kill(sleeper.processIdentifier, SIGKILL); sleeper.waitUntilExit() }
        // The child is blocked in its sleep as soon as it has started; the dump unwinds whatever it is doing.
        var run = try Self.run(["stacks", String(sleeper.processIdentifier)])
        var attempts = 0
        while run.status == 0, !run.stdout.contains("nanosleep"), attempts < 50 {
            run = try Self.run(["stacks", String(sleeper.processIdentifier)])
            attempts += 1
        }
        #expect(run.status == 0)
        #expect(run.stdout.contains("nanosleep"))
        let gone = try Self.run(["stacks", "999999999"])
        #expect(gone.status != 0 && gone.stderr.contains("no such process"))
    }
}

/// A dump on demand from outside: a running service gets the dump signal and writes the dump.
@Suite("futurelock demo: the dump signal")
struct DumpSignalTests {
    @Test(.timeLimit(.minutes(1))) func sigusr1_makesARunningWatchdogWriteTheDump() throws {
        let path = FileManager.default.temporaryDirectory
            .appendingPathComponent("futurelock-signal-\(UInt64.random(in: 0...UInt64.max)).jsonl").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: CLITests.tool)
        process.arguments = ["demo", "--dump-path", path, "--format", "json", "--seconds", "50"]
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        defer {
            if process.isRunning { process.terminate() }
            process.waitUntilExit()
        }
        // Wait for the child to say it listens (its stdout, read as it comes).
        var output = ""
        while !output.contains("ready") {
            let chunk = out.fileHandleForReading.availableData
            guard !chunk.isEmpty else { break }  // end of file: the child is gone
            output += String(decoding: chunk, as: UTF8.self)
        }
        try #require(output.contains("ready \(process.processIdentifier)"), "the demo did not start: \(output)")
        #expect(!FileManager.default.fileExists(atPath: path), "no dump before the signal")

        // The lock forms within a few watchdog intervals; signal until a dump shows it (each signal
        // writes the dump of that moment).
        var dump: Dump?
        let deadline = ContinuousClock.now.advanced(by: .seconds(30))
        while ContinuousClock.now < deadline {
            kill(process.processIdentifier, SIGUSR1)
            let written = ContinuousClock.now.advanced(by: .seconds(2))
            while ContinuousClock.now < written, !FileManager.default.fileExists(atPath: path) {
                usleep(20_000)  // polling for another process's file; nothing here to await
            }
            if let text = try? String(contentsOfFile: path, encoding: .utf8), let read = try? JSONLinesDump.read(text),
               read.findings.contains(where: { $0.kind == .selfDeadlock }) {
                dump = read
                break
            }
            try? FileManager.default.removeItem(atPath: path)
            usleep(200_000)
        }
        let found = try #require(dump, "no dump naming the self-deadlock was written")
        #expect(found.findings.first { $0.kind == .selfDeadlock }?.resource.label.contains("config") == true)
        #expect(process.isRunning, "the signal must not end the process")
        process.terminate()
        process.waitUntilExit()
        let log = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(log.contains("written to \(path)"), "the dump's path is logged: \(log)")
    }
}
