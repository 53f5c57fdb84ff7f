import Futurelock
import Testing
@testable import FuturelockReproducers

/// Every futurelock form, for real: the instrumented variant (the plain code, only the primitives
/// swapped) and the annotated one are detected with exactly the expected kind, certainty and culprit;
/// the fixed variant completes with no finding; the plain variant hangs. Every near miss runs to
/// completion with no lock reported.
@Suite("Reproducer gallery")
struct GalleryTests {
    static let locks = Gallery.all.filter { !$0.isNearMiss }.map(\.name)
    static let nearMisses = Gallery.all.filter(\.isNearMiss).map(\.name)

    private func expectDetected(_ name: String, _ variant: Variant) async throws {
        let reproducer = try #require(Gallery.named(name))
        let outcome = await Gallery.run(reproducer, variant: variant, timeout: .seconds(20))
        #expect(outcome.status == .finding, "\(name) \(variant): \(outcome.status.rawValue) \(outcome.error ?? "")")
        #expect(outcome.exitCode == 2)
        let findings = try #require(outcome.report?.findings)
        let locks = findings.filter { $0.kind.isLock }
        #expect(locks.count == 1, "\(name) \(variant): \(findings.map { "\($0.kind)" })")
        let finding = try #require(locks.first)
        #expect(finding.kind == reproducer.expectedKind)
        #expect(finding.certainty == reproducer.expectedCertainty(for: variant), "\(name) \(variant)")
        let holder = try #require(finding.holder)
        #expect(holder.site.fileID.hasSuffix("/" + reproducer.culpritFile),
                "\(name): holder acquired at \(holder.site)")
        #expect(!finding.fix.isEmpty && !finding.explanation.isEmpty)
        #expect(Gallery.judge(outcome, of: reproducer).ok)
    }

    @Test(.timeLimit(.minutes(1)), arguments: locks)
    func instrumented_plainCodeIsDetectedWithTheExpectedKindCertaintyAndCulprit(name: String) async throws {
        try await expectDetected(name, .instrumented)
    }

    @Test(.timeLimit(.minutes(1)), arguments: locks)
    func annotated_isDetectedToo(name: String) async throws {
        try await expectDetected(name, .annotated)
    }

    @Test(.timeLimit(.minutes(1)), arguments: locks)
    func fixed_completesWithNoFinding(name: String) async throws {
        let reproducer = try #require(Gallery.named(name))
        let outcome = await Gallery.run(reproducer, variant: .fixed, timeout: .seconds(20))
        #expect(outcome.status == .completed, "\(name): \(outcome.status.rawValue) \(outcome.error ?? "")")
        #expect(outcome.exitCode == 0)
        #expect(outcome.report?.findings.isEmpty == true)
    }

    @Test(.timeLimit(.minutes(1)), arguments: locks)
    func plain_reallyHangsUntilTheTimeout(name: String) async throws {
        let reproducer = try #require(Gallery.named(name))
        let outcome = await Gallery.run(reproducer, variant: .plain, timeout: .milliseconds(500))
        #expect(outcome.status == .timedOut, "\(name): \(outcome.status.rawValue) \(outcome.error ?? "")")
        #expect(outcome.exitCode == 124)
        #expect(outcome.report == nil)
    }

    /// The runner stops at the first certain lock, or at a suspected one seen on three checks in a
    /// row; completing means neither happened while the near miss ran.
    @Test(.timeLimit(.minutes(1)), arguments: nearMisses)
    func nearMiss_runsToCompletionWithNoLock(name: String) async throws {
        let reproducer = try #require(Gallery.named(name))
        #expect(reproducer.variants == [.instrumented])
        let outcome = await Gallery.run(reproducer, variant: .instrumented, timeout: .seconds(20))
        #expect(outcome.status == .completed, "\(name): \(outcome.status.rawValue) \(outcome.report?.findings.map(\.summary) ?? []) \(outcome.error ?? "")")
        #expect(outcome.report?.findings.isEmpty == true)
        #expect(Gallery.judge(outcome, of: reproducer).ok)
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
