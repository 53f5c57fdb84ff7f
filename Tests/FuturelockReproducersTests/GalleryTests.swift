import Futurelock
import Testing
@testable import FuturelockReproducers

/// Every futurelock form, for real: the instrumented variant is detected with exactly the expected
/// kind, certainty and culprit; the fixed variant completes with no finding; the plain variant hangs.
@Suite("Reproducer gallery")
struct GalleryTests {
    static let names = Gallery.all.map(\.name)

    @Test(.timeLimit(.minutes(1)), arguments: names)
    func instrumented_isDetectedWithTheExpectedKindCertaintyAndCulprit(name: String) async throws {
        let reproducer = try #require(Gallery.named(name))
        let outcome = await Gallery.run(reproducer, variant: .instrumented, timeout: .seconds(20))
        #expect(outcome.status == .finding, "\(name): \(outcome.status.rawValue) \(outcome.error ?? "")")
        #expect(outcome.exitCode == 2)
        let findings = try #require(outcome.report?.findings)
        let locks = findings.filter { $0.kind.isLock }
        #expect(locks.count == 1, "\(name): \(findings.map { "\($0.kind)" })")
        let finding = try #require(locks.first)
        #expect(finding.kind == reproducer.expectedKind)
        #expect(finding.certainty == reproducer.expectedCertainty)
        let holder = try #require(finding.holder)
        #expect(holder.site.fileID.hasSuffix("/" + reproducer.culpritFile),
                "\(name): holder acquired at \(holder.site)")
        #expect(!finding.fix.isEmpty && !finding.explanation.isEmpty)
    }

    @Test(.timeLimit(.minutes(1)), arguments: names)
    func fixed_completesWithNoFinding(name: String) async throws {
        let reproducer = try #require(Gallery.named(name))
        let outcome = await Gallery.run(reproducer, variant: .fixed, timeout: .seconds(20))
        #expect(outcome.status == .completed, "\(name): \(outcome.status.rawValue) \(outcome.error ?? "")")
        #expect(outcome.exitCode == 0)
        #expect(outcome.report?.findings.isEmpty == true)
    }

    @Test(.timeLimit(.minutes(1)), arguments: names)
    func plain_reallyHangsUntilTheTimeout(name: String) async throws {
        let reproducer = try #require(Gallery.named(name))
        let outcome = await Gallery.run(reproducer, variant: .plain, timeout: .milliseconds(500))
        #expect(outcome.status == .timedOut, "\(name): \(outcome.status.rawValue) \(outcome.error ?? "")")
        #expect(outcome.exitCode == 124)
        #expect(outcome.report == nil)
    }

    @Test(.timeLimit(.minutes(1)))
    func poolActor_countsTheInnocentClientsQueuedBehind() async throws {
        let outcome = await Gallery.run(PoolActor(innocentClients: 2_000), variant: .instrumented, timeout: .seconds(20))
        let finding = try #require(outcome.report?.findings.first { $0.kind == .futurelock })
        #expect(finding.queued == 2_000)
        #expect(finding.queuedBySite.count == 1)
        #expect(finding.queuedBySite.first?.site.fileID.hasSuffix("PoolActor.swift") == true)
    }
}
