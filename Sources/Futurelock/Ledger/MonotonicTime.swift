#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A point on the monotonic clock, in nanoseconds since an arbitrary origin (boot on Linux).
///
/// Two clocks are used. Every grant and every wait is stamped on the hot path, so the stamp uses the
/// *coarse* monotonic clock: a vDSO read of a value the kernel updates each tick (1–4 ms), a few
/// nanoseconds and no system call. Ages of holdings and waits are measured in hundreds of
/// milliseconds to minutes, where a tick of error does not matter. Snapshots use the precise clock.
public struct MonotonicInstant: Hashable, Comparable, Sendable, BitwiseCopyable, CustomStringConvertible, Codable {
    /// Nanoseconds since the clock's origin.
    public var nanoseconds: UInt64

    /// Wraps a nanosecond count.
    @inlinable
    public init(nanoseconds: UInt64) { self.nanoseconds = nanoseconds }

    /// The precise current time.
    public static var now: MonotonicInstant { read(CLOCK_MONOTONIC) }

    /// The current time to within one kernel tick; cheap enough for every acquire.
    @inline(__always)
    public static var coarseNow: MonotonicInstant {
        #if os(Linux)
        return read(CLOCK_MONOTONIC_COARSE)
        #else
        return read(CLOCK_MONOTONIC)
        #endif
    }

    @inline(__always)
    private static func read(_ clock: clockid_t) -> MonotonicInstant {
        var spec = timespec()
        clock_gettime(clock, &spec)
        return MonotonicInstant(nanoseconds: UInt64(spec.tv_sec) &* 1_000_000_000 &+ UInt64(spec.tv_nsec))
    }

    /// The time from `earlier` to `self`, zero if `earlier` is later (coarse stamps may lag a little).
    public func duration(since earlier: MonotonicInstant) -> Duration {
        nanoseconds >= earlier.nanoseconds ? .nanoseconds(Int64(nanoseconds - earlier.nanoseconds)) : .zero
    }

    /// This instant moved forward by `duration` (negative durations move it back, never below zero).
    public func advanced(by duration: Duration) -> MonotonicInstant {
        let delta = duration.nanosecondsClamped
        if delta >= 0 { return MonotonicInstant(nanoseconds: nanoseconds &+ UInt64(delta)) }
        let back = UInt64(-delta)
        return MonotonicInstant(nanoseconds: nanoseconds > back ? nanoseconds - back : 0)
    }

    public static func < (lhs: MonotonicInstant, rhs: MonotonicInstant) -> Bool {
        lhs.nanoseconds < rhs.nanoseconds
    }

    public var description: String { "\(nanoseconds)ns" }

    public init(from decoder: any Decoder) throws {
        nanoseconds = try decoder.singleValueContainer().decode(UInt64.self)
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(nanoseconds)
    }
}

extension Duration {
    /// The duration in whole nanoseconds, clamped to `Int64`.
    public var nanosecondsClamped: Int64 {
        let (seconds, attoseconds) = components
        let (scaled, overflow) = seconds.multipliedReportingOverflow(by: 1_000_000_000)
        if overflow { return seconds < 0 ? .min : .max }
        return scaled.addingReportingOverflow(attoseconds / 1_000_000_000).overflow
            ? (seconds < 0 ? .min : .max) : scaled + attoseconds / 1_000_000_000
    }

    /// The duration in seconds as a `Double`.
    public var secondsDouble: Double {
        let (seconds, attoseconds) = components
        return Double(seconds) + Double(attoseconds) / 1e18
    }
}
