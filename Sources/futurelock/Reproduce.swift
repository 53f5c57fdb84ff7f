import ArgumentParser
import Futurelock
import FuturelockReproducers
import FuturelockSymbols

#if canImport(Glibc)
import Glibc
#endif

struct Reproduce: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a reproducer of a futurelock form (or `all` of them) under the watchdog.",
        discussion: """
            Exit status: 0 = completed with no finding, 2 = finding reported, 124 = timed out \
            (the plain variants really hang; the timeout ends them). `all` runs every variant of \
            every reproducer, prints the instrumented dumps and a table, and exits 0 when every \
            variant behaved as expected.
            """)

    @Argument(help: "Reproducer name, or `all`. Names: \(Gallery.all.map(\.name).joined(separator: ", ")).")
    var name: String

    @Option(help: "plain (hangs), instrumented (the same code under the watchdog, detected), annotated (with named scopes) or fixed (completes).")
    var variant: Variant = .instrumented

    @Option(help: "text or json (JSON Lines).")
    var format: OutputFormat = .text

    @Option(help: "Seconds before a run is declared hung.")
    var timeout: Double = 3

    @Flag(help: "Include every native thread of the process, symbolicated with libdw, in the dump of a finding.")
    var nativeStacks = false

    @Flag(help: "Capture a native backtrace at every acquisition and show it, symbolicated, under the holder.")
    var backtraces = false

    enum OutputFormat: String, ExpressibleByArgument, CaseIterable {
        case text, json
    }

    func validate() throws {
        guard timeout > 0, timeout.isFinite else {
            throw ValidationError("--timeout must be a positive number of seconds, got \(timeout)")
        }
        if name != "all", Gallery.named(name) == nil {
            throw ValidationError("unknown reproducer '\(name)'; choose one of: all, \(Gallery.all.map(\.name).joined(separator: ", "))")
        }
    }

    func run() async throws {
        let limit = Duration.milliseconds(Int64(timeout * 1000))
        if name == "all" {
            try await runAll(limit)
            return
        }
        let reproducer = Gallery.named(name)!
        let outcome = await Gallery.run(reproducer, variant: variant, timeout: limit,
                                        captureBacktraces: backtraces) { configuration in
            // Symbolicated acquisition sites always; every native thread at the moment of a new lock
            // when asked (a helper process — this tool — attaches for a millisecond).
            configuration.useSymbolication(nativeStacks: nativeStacks)
        }
        print(try describe(outcome, reproducer))
        throw ExitCode(outcome.exitCode)
    }

    private func describe(_ outcome: Gallery.Outcome, _ reproducer: any Reproducer) throws -> String {
        var out = ""
        switch format {
        case .text:
            out += "\(reproducer.form) \(reproducer.name) [\(outcome.variant.rawValue)]: \(outcome.status.rawValue) after \(String(format2: outcome.seconds))s — exit \(outcome.exitCode)\n"
            if let error = outcome.error { out += "error: \(error)\n" }
            if let report = outcome.report, !report.findings.isEmpty {
                out += "\n" + (try report.dump.render(.text, waitThreshold: Gallery.watchdogConfiguration.waitThreshold))
            }
        case .json:
            if let report = outcome.report {
                out += try report.dump.render(.jsonLines)
            }
        }
        return out
    }

    private func runAll(_ limit: Duration) async throws {
        struct Row { var form, name, variant, status, expected, kind: String; var ok: Bool; var seconds: Double }
        var rows: [Row] = []
        for reproducer in Gallery.all {
            for variant in reproducer.variants {
                let outcome = await Gallery.run(reproducer, variant: variant, timeout: limit)
                let findings = outcome.report?.findings ?? []
                let lock = findings.first { $0.kind.isLock } ?? findings.first
                let (expected, ok) = Gallery.judge(outcome, of: reproducer)
                if variant == .instrumented, outcome.status == .finding {
                    print(String(repeating: "═", count: 100))
                    print("\(reproducer.form) \(reproducer.name) — \(reproducer.summary)")
                    print(String(repeating: "═", count: 100))
                    print(try describe(outcome, reproducer))
                }
                let kind = lock.map { "\($0.kind.rawValue) (\($0.certainty.rawValue))" } ?? "-"
                rows.append(Row(form: reproducer.form, name: reproducer.name, variant: variant.rawValue,
                                status: outcome.status.rawValue, expected: expected, kind: kind, ok: ok,
                                seconds: outcome.seconds))
                fflush(nil)
            }
        }
        let header = ["form", "reproducer", "variant", "status", "finding", "expected", "time", "ok"]
        let table = rows.map { [$0.form, $0.name, $0.variant, $0.status, $0.kind, $0.expected,
                                String(format2: $0.seconds) + "s", $0.ok ? "yes" : "NO"] }
        let widths = header.indices.map { column in ([header] + table).map { $0[column].count }.max()! }
        func line(_ cells: [String]) -> String {
            cells.enumerated().map { $0.element.padding(toLength: widths[$0.offset], withPad: " ", startingAt: 0) }
                .joined(separator: "  ")
        }
        print("\nReproducer gallery")
        print(line(header))
        print(line(widths.map { String(repeating: "-", count: $0) }))
        for row in table { print(line(row)) }
        let failed = rows.filter { !$0.ok }.count
        print("\n\(rows.count - failed) of \(rows.count) variants behaved as expected")
        if failed > 0 { throw ExitCode(1) }
    }
}

extension Variant: ExpressibleByArgument {}

extension String {
    init(format2 value: Double) {
        let hundredths = Int((value * 100).rounded())
        let fraction = hundredths % 100
        self = "\(hundredths / 100)." + (fraction < 10 ? "0" : "") + "\(fraction)"
    }

    func padding(toLength length: Int, withPad pad: String, startingAt _: Int) -> String {
        count >= length ? self : self + String(repeating: pad, count: length - count)
    }
}
