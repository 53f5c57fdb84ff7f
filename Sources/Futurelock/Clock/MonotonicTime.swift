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
        return MonotonicInstant(timespec: spec)
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

/// The coarse monotonic clock, read through the kernel's vDSO entry point directly.
///
/// glibc's `clock_gettime` is a wrapper that checks which implementation to call and then calls the
/// vDSO function; calling the vDSO function ourselves takes 6–8 ns instead of 11 ns here, and every
/// acquire with the ledger on reads this clock once. The pointer is looked up once per process (the
/// vDSO is mapped into every Linux process); where it cannot be found, `clock_gettime` is used.
@usableFromInline
struct CoarseClock: @unchecked Sendable {
    // Immutable after init: a C function pointer into the vDSO, which lives as long as the process.
    @usableFromInline typealias ClockFunction = @convention(c) (clockid_t, UnsafeMutablePointer<timespec>?) -> Int32
    @usableFromInline let vdsoClockGettime: ClockFunction?

    init() {
        vdsoClockGettime = Self.vdsoFunction
    }

    /// Looked up once per process; each ledger copies it into a stored property.
    private static let vdsoFunction: ClockFunction? = lookUp()

    private static func lookUp() -> ClockFunction? {
        #if os(Linux)
        #if arch(x86_64)
        let names = ["__vdso_clock_gettime", "__kernel_clock_gettime"]
        #else
        let names = ["__kernel_clock_gettime", "__vdso_clock_gettime"]
        #endif
        for library in ["linux-vdso.so.1", "linux-vdso64.so.1", "linux-gate.so.1"] {
            guard let handle = dlopen(library, RTLD_LAZY | RTLD_NOLOAD) else { continue }
            for name in names {
                if let symbol = dlsym(handle, name) {
                    let function = unsafeBitCast(symbol, to: ClockFunction.self)
                    // Trust it only if it agrees with the C library's clock.
                    var spec = timespec()
                    guard function(CLOCK_MONOTONIC_COARSE, &spec) == 0 else { continue }
                    let viaVDSO = MonotonicInstant(timespec: spec)
                    let viaLibc = MonotonicInstant.coarseNow
                    if viaLibc.nanoseconds &- viaVDSO.nanoseconds < 1_000_000_000 { return function }
                }
            }
        }
        #endif
        return nil
    }

    /// `MonotonicInstant.coarseNow`, without the C library's wrapper.
    @inlinable @inline(__always)
    var now: MonotonicInstant {
        #if os(Linux)
        if let vdsoClockGettime {
            var spec = timespec()
            _ = vdsoClockGettime(CLOCK_MONOTONIC_COARSE, &spec)
            return MonotonicInstant(timespec: spec)
        }
        #endif
        return .coarseNow
    }
}

extension MonotonicInstant {
    @inlinable @inline(__always)
    init(timespec spec: timespec) {
        self.init(nanoseconds: UInt64(truncatingIfNeeded: spec.tv_sec) &* 1_000_000_000
                  &+ UInt64(truncatingIfNeeded: spec.tv_nsec))
    }
}
