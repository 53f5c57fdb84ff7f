/// The individual reads a ledger-on acquire makes, exposed for `futurelock-bench pieces` only.
///
/// Not API: the names and what they return may change with the ledger's internals. Import with
/// `@_spi(Benchmarks) import Futurelock`.
@_spi(Benchmarks)
public enum LedgerProbes {
    /// The running task's id, read the way a stamp reads it.
    @inlinable
    public static func taskID(_ ledger: Ledger) -> UInt64 { ledger.context.task.rawValue }

    /// Whether a scope node is bound, read the way a stamp reads it (the task-local entry point).
    @inlinable
    public static func hasNode(_ ledger: Ledger) -> Bool { ledger.context.node != nil }

    /// The coarse clock, read the way a stamp reads it (the vDSO entry point).
    @inlinable
    public static func coarseNanoseconds(_ ledger: Ledger) -> UInt64 { ledger.clock.now.nanoseconds }

    /// Whether the vDSO clock entry point was found (otherwise the C library's is used).
    public static func usesVDSOClock(_ ledger: Ledger) -> Bool { ledger.clock.vdsoClockGettime != nil }
}
