import Futurelock

/// What every near miss shares: correct code, so there is no lock to expect, and the buggy, annotated
/// and fixed versions are one and the same program.
protocol NearMiss: Reproducer {
    /// The correct program.
    func run(ledger: Ledger) async throws
}

extension NearMiss {
    var expectedKind: Finding.Kind? { nil }
    var expectedCertainty: Finding.Certainty { .certain }
    var culpritFile: String { "" }

    func run(_ code: Code, ledger: Ledger) async throws {
        try await run(ledger: ledger)
    }
}

/// How long a near miss's slow steps take: longer than the gallery's grace period (300 ms), so the
/// watchdog sees the lock-like state for several checks and must still stay quiet.
let slowStep = Duration.milliseconds(450)
/// A step that ends quickly.
let quickStep = Duration.milliseconds(10)
