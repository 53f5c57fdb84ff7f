import Futurelock
import Synchronization

/// Which variant of a reproducer to run.
public enum Variant: String, Sendable, CaseIterable {
    /// The buggy code with recording off: it really hangs (the runner's timeout ends it).
    case plain
    /// The buggy code under the watchdog: the watchdog names the culprit.
    case instrumented
    /// The corrected code under the watchdog: it completes and the watchdog reports nothing.
    case fixed
}

/// One minimal program for one Swift form of the futurelock (F1–F6), or for one of the two classic
/// locks it must be told apart from (F7 re-entrant acquire, F8 ABBA deadlock).
public protocol Reproducer: Sendable {
    /// The command-line name, e.g. `task-group-race`.
    var name: String { get }
    /// The form id, e.g. `F1`.
    var form: String { get }
    /// One line: how it locks.
    var summary: String { get }
    /// What the watchdog must report for the instrumented variant.
    var expectedKind: Finding.Kind { get }
    /// How sure it must be.
    var expectedCertainty: Finding.Certainty { get }
    /// The file whose code holds the culprit's resource (the holder's acquisition site).
    var culpritFile: String { get }

    /// Runs the scenario. `fixed` selects the corrected code. All primitives use `ledger`.
    func run(fixed: Bool, ledger: Ledger) async throws
}

/// A one-shot signal between the tasks of a scenario (so a scenario's interleaving is the same on
/// every run, not a matter of timing).
final class Signal: Sendable {
    private let stream: AsyncStream<Void>
    private let continuation: AsyncStream<Void>.Continuation

    init() {
        (stream, continuation) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
    }

    func fire() {
        continuation.yield()
        continuation.finish()
    }

    func wait() async {
        for await _ in stream { return }
    }
}

/// A flag set once by one task and read by another.
final class Flag: Sendable {
    private let value = Atomic<Bool>(false)
    func set() { value.store(true, ordering: .releasing) }
    var isSet: Bool { value.load(ordering: .acquiring) }
}

extension Task where Success == Never, Failure == Never {
    /// Yields, and throws if the task was cancelled: the scenarios' "wait until the other task got
    /// there" loops must end when the runner cancels a hung scenario, or they would spin forever.
    static func yieldUnlessCancelled() async throws {
        try Task.checkCancellation()
        await Task.yield()
    }
}
