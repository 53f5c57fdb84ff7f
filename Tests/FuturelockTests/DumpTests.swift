import Foundation
import Testing
@testable import Futurelock

@Suite("Dumps")
struct DumpTests {
    /// The incident shape with `innocents` identical waiters.
    private func incident(innocents: Int) -> Dump {
        var fixture = SnapshotFixture()
        let requests = fixture.resource(1, "pool-requests", kind: .channel)
        let client = fixture.task(1)
        let scope = fixture.scope(10, "client", task: 1, parent: client)
        let arm = fixture.scope(11, "request-connection", task: 2,
                                parent: fixture.task(2, parent: scope, link: .structured, kind: .groupChild, state: .finished),
                                state: .finished)
        fixture.hold(requests, by: arm, task: 2, line: 94, age: 1.006, kind: .sendSlot,
                     parked: SnapshotFixture.parked(child: 2, in: 1))
        fixture.wait(requests, by: scope, task: 1, line: 114, age: 1.006, kind: .send)
        for innocent in 0..<innocents {
            let id = UInt64(1000 + innocent)
            fixture.wait(requests, by: fixture.task(id), task: id, line: 75, age: 0.5, kind: .send)
        }
        let snapshot = fixture.snapshot
        return Dump(snapshot: snapshot, findings: Detector.findings(in: snapshot))
    }

    @Test func text_putsFindingsFirstAndCollapsesIdenticalSubtrees() throws {
        let text = try incident(innocents: 500).render(.text, waitThreshold: .seconds(1))
        let lines = text.split(separator: "\n").map(String.init)
        #expect(lines[0].contains("1 finding"))
        #expect(lines.contains { $0.hasPrefix("!!! futurelock (certain)") })
        let findingLine = try #require(lines.firstIndex { $0.hasPrefix("!!!") })
        let treeLine = try #require(lines.firstIndex { $0 == "Task tree" })
        #expect(findingLine < treeLine)
        #expect(text.contains("×500"))
        #expect(text.contains("[1.006s] !!!"))
        #expect(text.contains("queued    500 behind: 500 × App/Handler.swift:75"))
        // 500 waiters, but the dump stays one screen.
        #expect(lines.count < 40)
    }

    @Test func jsonLines_roundTripsSnapshotAndFindings() throws {
        var dump = incident(innocents: 3)
        dump.snapshot.taskTree = "task tree from the Swift runtime (layout version 1, task size 208)"
        dump.snapshot.inspectionUnavailable = "the runtime reader's one-time self-test has not finished yet"
        let text = try dump.render(.jsonLines)
        let lines = text.split(separator: "\n")
        #expect(lines.first?.contains("\"type\":\"header\"") == true)
        #expect(lines.allSatisfy { $0.contains("\"version\":1") })
        let back = try JSONLinesDump.read(text)
        #expect(back.findings == dump.findings)
        #expect(back.snapshot.holdings == dump.snapshot.holdings)
        #expect(back.snapshot.waits == dump.snapshot.waits)
        #expect(back.snapshot.nodes == dump.snapshot.nodes)
        #expect(back.snapshot.resources == dump.snapshot.resources)
        #expect(back.snapshot.taskTree == dump.snapshot.taskTree)
        #expect(back.snapshot.inspectionUnavailable == dump.snapshot.inspectionUnavailable)
        let finding = try #require(lines.first { $0.contains("\"type\":\"finding\"") })
        for key in ["\"kind\"", "\"certainty\"", "\"resource\"", "\"holder\"", "\"waiter\"", "\"queued\"",
                    "\"summary\"", "\"fix\"", "\"task\"", "\"path\"", "\"site\""] {
            #expect(finding.contains(key), "finding JSON lacks \(key)")
        }
    }

    @Test func jsonLines_groupsIdenticalWaiters_andReadsTheGroupsBack() throws {
        let dump = incident(innocents: 1000)
        let text = try dump.render(.jsonLines)
        let lines = text.split(separator: "\n")
        #expect(lines.count < 40, "1,000 identical waiters must not take 2,000 lines")
        let back = try JSONLinesDump.read(text)
        let group = try #require(back.waitGroups.first)
        #expect(back.waitGroups.count == 1)
        #expect(group.count == 999)
        #expect(group.site.line == 75)
        // The culprit and the waiter the finding names are kept individually.
        #expect(back.snapshot.waits.contains { $0.site.line == 114 })
        #expect(back.findings == dump.findings)
        let rendered = try back.render(.text)
        #expect(rendered.contains("×999 tasks (root tasks) wait to send channel 'pool-requests'"))
    }

    @Test func jsonLines_malformedInput_namesTheLine() throws {
        let good = try incident(innocents: 1).render(.jsonLines).split(separator: "\n").map(String.init)
        func read(_ lines: [String]) -> DumpReadError? {
            do { _ = try JSONLinesDump.read(lines.joined(separator: "\n")); return nil } catch { return error }
        }
        var broken = good
        broken[2] = "{not json"
        guard case .malformedLine(line: 3, _)? = read(broken) else { Issue.record("expected line 3"); return }
        broken = good
        broken[1] = broken[1].replacingOccurrences(of: "\"version\":1", with: "\"version\":99")
        #expect(read(broken) == .unsupportedVersion(line: 2, found: 99, supported: 1))
        broken = good
        broken[1] = broken[1].replacingOccurrences(of: "\"type\":\"finding\"", with: "\"type\":\"gizmo\"")
        #expect(read(broken) == .unknownType(line: 2, type: "gizmo"))
        #expect(read(Array(good.dropFirst())) == .missingHeader(line: 1))
        #expect(read([]) == .empty)
        #expect(read(["", "  "]) == .empty)
        broken = good
        broken[1] = "{\"type\":\"finding\",\"version\":1,\"kind\":\"futurelock\"}"
        guard case .malformedLine(line: 2, let reason)? = read(broken) else { Issue.record("expected line 2"); return }
        #expect(reason.contains("missing field"))
        #expect(DumpReadError.unsupportedVersion(line: 2, found: 99, supported: 1).description.contains("line 2"))
    }

    @Test func jsonLines_fuzzedGarbage_neverCrashesTheReader() throws {
        let good = try incident(innocents: 2).render(.jsonLines)
        var generator = SystemRandomNumberGenerator()
        let bytes = Array(good.utf8)
        for _ in 0..<2000 {
            var mutated = bytes
            switch Int.random(in: 0..<4, using: &generator) {
            case 0: // flip bytes
                for _ in 0..<Int.random(in: 1...8, using: &generator) {
                    mutated[Int.random(in: 0..<mutated.count, using: &generator)] = UInt8.random(in: 0...255, using: &generator)
                }
            case 1: // truncate
                mutated = Array(mutated.prefix(Int.random(in: 0..<mutated.count, using: &generator)))
            case 2: // pure garbage
                mutated = (0..<Int.random(in: 0..<400, using: &generator)).map { _ in UInt8.random(in: 0...255, using: &generator) }
            default: // shuffle lines
                var lines = good.split(separator: "\n").map { Array($0.utf8) }
                lines.shuffle(using: &generator)
                mutated = Array(lines.joined(separator: [10]))
            }
            let text = String(decoding: mutated, as: UTF8.self)
            do {
                _ = try JSONLinesDump.read(text)
            } catch {
                #expect(!error.description.isEmpty)
            }
        }
    }

    @Test func dot_highlightsTheFindingAndGroupsBystanders() throws {
        let dot = try incident(innocents: 50).render(.dot)
        #expect(dot.hasPrefix("digraph futurelock {"))
        #expect(dot.contains("r1 [shape=box, style=rounded, color=red"))
        #expect(dot.contains("50 waiters"))
        #expect(dot.hasSuffix("}\n"))
    }

    /// A dump read back from JSON Lines carries the bystanders as group records: the graph must count
    /// them as the text does (it once drew 9,999 queued senders as "1 waiter").
    @Test func dot_ofADumpReadBack_countsGroupedWaiters() throws {
        let dump = incident(innocents: 10_000)
        let inMemory = try dump.render(.dot)
        let back = try JSONLinesDump.read(try dump.render(.jsonLines))
        #expect(!back.waitGroups.isEmpty)
        let readBack = try back.render(.dot)
        #expect(inMemory.contains("10,000 waiters"))
        #expect(readBack.contains("10,000 waiters"), "the grouped waiters are missing from the graph")
        #expect(!readBack.contains("\"1 waiter"))
    }
}
