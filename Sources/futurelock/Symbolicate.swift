import ArgumentParser
import Futurelock
import FuturelockSymbols

import Foundation

struct Symbolicate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Symbolicate file addresses (as `nm` prints them) of an ELF binary: function, file, line, inlined frames.")

    @Argument(help: "The binary (an executable or shared library with debug info).")
    var binary: String

    @Argument(help: "Addresses, hexadecimal (0x…) or decimal.")
    var addresses: [String]

    func validate() throws {
        guard !addresses.isEmpty else { throw ValidationError("give at least one address, e.g. 0x4a3f0") }
        for text in addresses where Self.parse(text) == nil {
            throw ValidationError("'\(text)' is not an address: use hexadecimal like 0x4a3f0 or a decimal number")
        }
    }

    static func parse(_ text: String) -> UInt? {
        let lower = text.lowercased()
        return lower.hasPrefix("0x") ? UInt(lower.dropFirst(2), radix: 16) : UInt(lower)
    }

    func run() throws {
        let symbolicator: Symbolicator
        do { symbolicator = try Symbolicator(binary: binary) } catch { throw ValidationError("\(error)") }
        for text in addresses {
            let frames = symbolicator.symbolicate(Self.parse(text)!)
            print("\(text):")
            if frames.isEmpty { print("  (no symbol)") }
            for frame in frames { print("  \(frame)") }
        }
    }
}

struct Stacks: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print every native thread of a process, unwound and symbolicated (ptrace-attaches briefly).")

    @Argument(help: "The process id.")
    var pid: Int32

    @Option(help: "text or json.")
    var format: Format = .text

    enum Format: String, ExpressibleByArgument, CaseIterable { case text, json }

    func run() throws {
        let stacks: [ThreadStack]
        do { stacks = try NativeThreadDump.capture(pid: pid) } catch { throw ValidationError("\(error)") }
        switch format {
        case .text:
            for stack in stacks { print(stack.description) }
        case .json:
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.withoutEscapingSlashes]
            print(String(decoding: try encoder.encode(NativeThreadDump.records(stacks)), as: UTF8.self))
        }
    }
}
