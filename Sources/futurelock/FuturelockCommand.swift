import ArgumentParser
import Futurelock
import FuturelockReproducers

import Foundation

@main
struct FuturelockCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "futurelock",
        abstract: "Find futurelocks: tasks waiting for resources held by work they no longer drive.",
        subcommands: [Reproduce.self, Render.self, Explain.self, Symbolicate.self, Stacks.self, Demo.self])
}

/// Writes to standard error.
func printError(_ message: String) {
    var line = message
    if !line.hasSuffix("\n") { line += "\n" }
    FileHandle.standardError.write(Data(line.utf8))
}
