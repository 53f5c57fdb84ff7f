import ArgumentParser

import Foundation  // Process and Pipe live in Foundation proper

/// Turns DOT into SVG with Graphviz's `dot`, found on PATH.
enum SVGRenderer {
    static func render(dot: String) throws -> String {
        let path = (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":")
            .map { "\($0)/dot" }.first { FileManager.default.isExecutableFile(atPath: $0) }
        guard let executable = path else {
            throw ValidationError("SVG needs Graphviz's `dot`, which is not on PATH: install it (Debian: `apt-get install graphviz`), or use `--format dot` and render elsewhere")
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = ["-Tsvg"]
        let input = Pipe(), output = Pipe(), errors = Pipe()
        process.standardInput = input
        process.standardOutput = output
        process.standardError = errors
        try process.run()
        input.fileHandleForWriting.write(Data(dot.utf8))
        try input.fileHandleForWriting.close()
        let svg = output.fileHandleForReading.readDataToEndOfFile()
        let problems = errors.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw ValidationError("dot failed (exit \(process.terminationStatus)): \(String(decoding: problems, as: UTF8.self))")
        }
        return String(decoding: svg, as: UTF8.self)
    }
}
