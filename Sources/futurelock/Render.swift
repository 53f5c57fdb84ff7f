import ArgumentParser
import Futurelock

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Reads a JSON Lines dump from a path, with errors that say what is wrong and where.
func loadDump(_ path: String) throws -> Dump {
    guard let data = FileManager.default.contents(atPath: path) else {
        throw ValidationError("cannot read '\(path)': no such file or not readable")
    }
    guard let text = String(data: data, encoding: .utf8) else {
        throw ValidationError("'\(path)' is not UTF-8 text; expected a JSON Lines dump written with `--format json`")
    }
    do {
        return try JSONLinesDump.read(text)
    } catch {
        throw ValidationError("\(path): \(error)")
    }
}

struct Render: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Render a JSON Lines dump as text, Graphviz DOT, SVG (needs Graphviz `dot`), or JSON Lines.")

    @Argument(help: "A dump written with `--format json`.")
    var dump: String

    @Option(help: "text, dot, svg or json.")
    var format: Format = .text

    enum Format: String, ExpressibleByArgument, CaseIterable { case text, dot, svg, json }

    func run() throws {
        let loaded = try loadDump(dump)
        switch format {
        case .text: print(try loaded.render(.text), terminator: "")
        case .json: print(try loaded.render(.jsonLines), terminator: "")
        case .dot: print(try loaded.render(.dot), terminator: "")
        case .svg: print(try SVGRenderer.render(dot: try loaded.render(.dot)), terminator: "")
        }
    }
}

struct Explain: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Explain the findings of a JSON Lines dump: what happened, why it cannot resolve, how to fix it.")

    @Argument(help: "A dump written with `--format json`.")
    var dump: String

    func run() throws {
        let loaded = try loadDump(dump)
        if loaded.findings.isEmpty {
            print("No findings in \(dump): \(loaded.snapshot.waits.count) waiters, \(loaded.snapshot.holdings.count) holdings, nothing stuck.")
            return
        }
        for (number, finding) in loaded.findings.enumerated() {
            print("\(number + 1). \(finding.kind.title)")
            print("   certainty: \(finding.certainty.rawValue)\(finding.gracePeriod.map { " (grace period \($0)s)" } ?? "")")
            print("   \(finding.summary)")
            print("")
            print("   What happened: \(finding.explanation)")
            print("")
            print("   How to fix it: \(finding.fix)")
            if !finding.evidence.isEmpty {
                print("")
                print("   Evidence:")
                for fact in finding.evidence { print("   - \(fact)") }
            }
            print("")
        }
    }
}
