/// The thresholds the watchdog classifies with.
public struct DetectionPolicy: Sendable, Hashable {
    /// How long a holding by an un-annotated child task, and the wait behind it, must both have lasted
    /// before the watchdog *suspects* a futurelock (the runtime does not say whether a plain child task
    /// has finished, so time is the evidence).
    public var gracePeriod: Duration
    /// A wait longer than this, with no lock found, is reported as a stall.
    public var stallThreshold: Duration
    /// A holding by finished work older than this, with nobody able to release it, is reported as a leak.
    public var leakThreshold: Duration

    /// Defaults: 1 s grace, 5 s stall, 5 s leak.
    public init(gracePeriod: Duration = .seconds(1), stallThreshold: Duration = .seconds(5),
                leakThreshold: Duration = .seconds(5)) {
        self.gracePeriod = gracePeriod
        self.stallThreshold = stallThreshold
        self.leakThreshold = leakThreshold
    }
}
