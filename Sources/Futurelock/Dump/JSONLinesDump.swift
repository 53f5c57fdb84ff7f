#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// The dump for tools: JSON Lines, one object per line, each with `"type"` and `"version"`.
///
/// The first line is the header (`type: "header"`, the format name, the version and when the snapshot
/// was taken); then findings, resources, nodes, holdings, waits, events and problems, each line a
/// complete record. A reader can stream it, grep it, or load it back with ``JSONLinesDump/read(_:)``.
/// The format is documented in Docs/Guides/DumpFormat.md.
public enum JSONLinesDump {
    /// The format version this build writes and reads.
    public static let version = 1
    /// The header's `format` value.
    public static let formatName = "futurelock-dump"

    struct Header: Codable {
        var format: String
        var takenAt: MonotonicInstant
        var findings: Int
        var resources: Int
        var holdings: Int
        var waits: Int
        /// Where the task tree came from (absent in dumps written before it was recorded).
        var taskTree: String?
        /// Why parked results were not read from the runtime, when they were not.
        var inspectionUnavailable: String?
    }

    private struct TypeProbe: Decodable {
        var type: String?
        var version: Int?
    }

    private enum EnvelopeKeys: String, CodingKey { case type, version }

    /// A record with `type` and `version` merged into the same JSON object.
    private struct Line<Record: Encodable>: Encodable {
        var type: String
        var record: Record
        func encode(to encoder: any Encoder) throws {
            var envelope = encoder.container(keyedBy: EnvelopeKeys.self)
            try envelope.encode(type, forKey: .type)
            try envelope.encode(JSONLinesDump.version, forKey: .version)
            try record.encode(to: encoder)
        }
    }

    /// Identical waiters beyond this many (same resource, kind, site and parent; a plain task that holds
    /// nothing else) are written as one `waitGroup` line with a count instead of a line each, so a dump
    /// of 180,000 piled-up clients stays small. Every waiter that a finding names is kept individually.
    public static let groupThreshold = 16

    /// Writes the dump as JSON Lines.
    public static func write(_ dump: Dump) throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        var out = ""
        func emit<R: Encodable>(_ type: String, _ record: R) throws {
            out += String(decoding: try encoder.encode(Line(type: type, record: record)), as: UTF8.self)
            out += "\n"
        }
        let snapshot = dump.snapshot
        try emit("header", Header(format: formatName, takenAt: snapshot.takenAt, findings: dump.findings.count,
                                  resources: snapshot.resources.count, holdings: snapshot.holdings.count,
                                  waits: snapshot.waits.count, taskTree: snapshot.taskTree,
                                  inspectionUnavailable: snapshot.inspectionUnavailable))
        for finding in dump.findings { try emit("finding", finding) }
        for resource in snapshot.resources { try emit("resource", resource) }
        let named = Set(dump.findings.flatMap { [$0.holder?.node, $0.waiter?.node].compactMap { $0 } })
        let (groups, grouped) = WaitGroupRecord.group(snapshot, threshold: groupThreshold, keep: named)
        for node in snapshot.nodes where !grouped.contains(node.id) { try emit("node", node) }
        for holding in snapshot.holdings { try emit("holding", holding) }
        for wait in snapshot.waits where !grouped.contains(wait.waiter) { try emit("wait", wait) }
        for group in groups + dump.waitGroups { try emit("waitGroup", group) }
        for event in snapshot.events { try emit("event", event) }
        for problem in snapshot.problems { try emit("problem", problem) }
        for thread in dump.nativeThreads { try emit("thread", thread) }
        return out
    }

    /// Reads a dump written by ``write(_:)``.
    ///
    /// - Throws: ``DumpReadError`` naming the line for malformed JSON, a missing or unknown `type`, a
    ///   version this build does not read, a record that does not fit its type, or a missing header.
    public static func read(_ text: String) throws(DumpReadError) -> Dump {
        let decoder = JSONDecoder()
        var header: Header?
        var snapshot = LedgerSnapshot(takenAt: MonotonicInstant(nanoseconds: 0))
        var findings: [Finding] = []
        var threads: [NativeThreadRecord] = []
        var waitGroups: [WaitGroupRecord] = []
        var lineNumber = 0
        for rawLine in text.split(separator: "\n", omittingEmptySubsequences: false) {
            lineNumber += 1
            let line = rawLine.drop { $0 == " " || $0 == "\t" || $0 == "\r" }
            if line.allSatisfy({ $0 == " " || $0 == "\t" || $0 == "\r" }) { continue }
            let data = Data(line.utf8)
            let probe: TypeProbe
            do {
                probe = try decoder.decode(TypeProbe.self, from: data)
            } catch DecodingError.typeMismatch(_, let context) where !context.codingPath.isEmpty {
                let field = context.codingPath.map(\.stringValue).joined(separator: ".")
                throw .malformedLine(line: lineNumber, reason: "field \"\(field)\" has the wrong type (\"type\" is a string, \"version\" an integer)")
            } catch {
                throw .malformedLine(line: lineNumber, reason: "not a JSON object (\(Self.describe(error)))")
            }
            guard let type = probe.type else {
                throw .malformedLine(line: lineNumber, reason: "the object has no \"type\" field")
            }
            guard let version = probe.version else {
                throw .malformedLine(line: lineNumber, reason: "the object has no \"version\" field")
            }
            guard version == Self.version else {
                throw .unsupportedVersion(line: lineNumber, found: version, supported: Self.version)
            }
            if header == nil, type != "header" {
                throw .missingHeader(line: lineNumber)
            }
            func decode<R: Decodable>(_: R.Type) throws(DumpReadError) -> R {
                do { return try decoder.decode(R.self, from: data) } catch {
                    throw .malformedLine(line: lineNumber, reason: "not a valid \(type) record (\(Self.describe(error)))")
                }
            }
            switch type {
            case "header":
                let read = try decode(Header.self)
                guard read.format == formatName else {
                    throw .malformedLine(line: lineNumber, reason: "format is \"\(read.format)\", expected \"\(formatName)\"")
                }
                header = read
                snapshot.takenAt = read.takenAt
                snapshot.taskTree = read.taskTree
                snapshot.inspectionUnavailable = read.inspectionUnavailable
            case "finding": findings.append(try decode(Finding.self))
            case "resource": snapshot.resources.append(try decode(ResourceRecord.self))
            case "node": snapshot.nodes.append(try decode(TreeNodeRecord.self))
            case "holding": snapshot.holdings.append(try decode(HoldingRecord.self))
            case "wait": snapshot.waits.append(try decode(WaitRecord.self))
            case "event": snapshot.events.append(try decode(LedgerEvent.self))
            case "problem": snapshot.problems.append(try decode(LedgerProblem.self))
            case "thread": threads.append(try decode(NativeThreadRecord.self))
            case "waitGroup": waitGroups.append(try decode(WaitGroupRecord.self))
            default: throw .unknownType(line: lineNumber, type: type)
            }
        }
        guard header != nil else { throw .empty }
        return Dump(snapshot: snapshot, findings: findings, nativeThreads: threads, waitGroups: waitGroups)
    }

    private static func describe(_ error: any Error) -> String {
        switch error {
        case DecodingError.keyNotFound(let key, let context):
            return "missing field \"\((context.codingPath + [key]).map(\.stringValue).joined(separator: "."))\""
        case DecodingError.typeMismatch(_, let context), DecodingError.valueNotFound(_, let context):
            let path = context.codingPath.map(\.stringValue).joined(separator: ".")
            return "wrong type at \"\(path)\": \(context.debugDescription)"
        case DecodingError.dataCorrupted(let context):
            let path = context.codingPath.map(\.stringValue).joined(separator: ".")
            return path.isEmpty ? context.debugDescription : "bad value at \"\(path)\": \(context.debugDescription)"
        default:
            return "\(error)"
        }
    }
}

/// Why a dump could not be read. Every case but ``empty`` names the line (1-based) where reading stopped.
public enum DumpReadError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The input holds no header line (an empty file, or only blank lines).
    case empty
    /// The first record is not the header.
    case missingHeader(line: Int)
    /// The line is not JSON, or not a valid record of its type.
    case malformedLine(line: Int, reason: String)
    /// The line's `type` is not one this build knows.
    case unknownType(line: Int, type: String)
    /// The line's `version` is not one this build reads.
    case unsupportedVersion(line: Int, found: Int, supported: Int)

    public var description: String {
        switch self {
        case .empty:
            return "the dump is empty: expected a JSON Lines file whose first line is a futurelock-dump header (write one with `--format json`)"
        case .missingHeader(let line):
            return "line \(line): expected the header record first ({\"type\":\"header\",…}); is this a futurelock JSON Lines dump?"
        case .malformedLine(let line, let reason):
            return "line \(line): \(reason)"
        case .unknownType(let line, let type):
            return "line \(line): unknown record type \"\(type)\" (known: header, finding, resource, node, holding, wait, waitGroup, event, problem, thread)"
        case .unsupportedVersion(let line, let found, let supported):
            return "line \(line): format version \(found) is not supported by this build (it reads version \(supported)); use the futurelock tool that wrote it"
        }
    }
}
