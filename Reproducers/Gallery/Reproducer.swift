import Futurelock
import Synchronization

/// Which variant of a reproducer to run.
public enum Variant: String, Sendable, CaseIterable {
    /// The buggy code as a user writes it, with recording off: it really hangs (the runner's timeout
    /// ends it).
    case plain
    /// The same buggy code — only the primitives swapped for Futurelock's, nothing annotated — under
    /// the watchdog: the watchdog names the culprit from the runtime's task tree.
    case instrumented
    /// The buggy code with the task tree annotated (`TaskTree.scope`, `TaskTree.child`): the same
    /// finding, with names in the paths.
    case annotated
    /// The corrected code under the watchdog: it completes and the watchdog reports nothing.
    case fixed

    /// The code a variant runs.
    public var code: Code {
        switch self {
        case .plain, .instrumented: return .buggy
        case .annotated: return .annotated
        case .fixed: return .fixed
        }
    }

    /// Whether the watchdog watches the run.
    public var isWatched: Bool { self != .plain }
}

/// The three versions of a reproducer's code.
public enum Code: Sendable {
    /// The bug, written as users write it: no annotation.
    case buggy
    /// The bug, with the sub-operations named.
    case annotated
    /// The corrected code.
    case fixed
}

/// One minimal program for one futurelock form — F1–F6 the futurelock shapes, F7 (re-entrant
/// acquire) and F8 (ABBA) the two classic locks they must be told apart from — or a near miss: correct
/// code that looks like one and must not be reported.
public protocol Reproducer: Sendable {
    /// The command-line name, e.g. `task-group-race`.
    var name: String { get }
    /// The form id, e.g. `F1`, or `N1` for a near miss.
    var form: String { get }
    /// One line: how it locks (or why it does not).
    var summary: String { get }
    /// What the watchdog must report for the instrumented and annotated variants; `nil` for a near
    /// miss, which must complete with no lock reported.
    var expectedKind: Finding.Kind? { get }
    /// How sure the instrumented (un-annotated) variant's finding must be.
    var expectedCertainty: Finding.Certainty { get }
    /// How sure the annotated variant's finding must be.
    var annotatedCertainty: Finding.Certainty { get }
    /// The file whose code holds the culprit's resource (the holder's acquisition site).
    var culpritFile: String { get }

    /// Runs the scenario's `code`. All primitives use `ledger`.
    func run(_ code: Code, ledger: Ledger) async throws
}

extension Reproducer {
    /// A near miss: correct code that must run to completion with no lock reported.
    public var isNearMiss: Bool { expectedKind == nil }

    /// The variants that apply: all four for a lock, only the watched correct code for a near miss.
    public var variants: [Variant] { isNearMiss ? [.instrumented] : Variant.allCases }

    /// By default the annotated variant is as sure as the instrumented one.
    public var annotatedCertainty: Finding.Certainty { expectedCertainty }

    /// The certainty `variant` must reach.
    public func expectedCertainty(for variant: Variant) -> Finding.Certainty {
        variant == .annotated ? annotatedCertainty : expectedCertainty
    }
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
