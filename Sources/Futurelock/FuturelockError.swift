/// The errors Futurelock's primitives throw. Each says what went wrong and what to do about it.
///
/// Cancellation is reported with the standard `CancellationError`, as every Swift API does.
public enum FuturelockError: Error, Sendable, Hashable, CustomStringConvertible {
    /// A capacity or permit count that is not at least 1.
    case invalidCapacity(resource: String, value: Int)
    /// A negative or otherwise unusable timeout.
    case invalidTimeout(resource: String, timeout: Duration)
    /// The wait did not complete within the timeout.
    case timedOut(resource: String, after: Duration)
    /// The channel is closed: no more sends are accepted.
    case channelClosed(channel: String)
    /// The pool was shut down: no more checkouts.
    case poolShutdown(pool: String)
    /// The semaphore was closed: no more permits are granted.
    case semaphoreClosed(semaphore: String)
    /// The permit/slot/lease was already released (the second release is ignored).
    case alreadyReleased(resource: String)
    /// A configuration that cannot work (the reason says which field and why).
    case invalidConfiguration(resource: String, reason: String)
    /// A number of permits to acquire, add or forget that cannot be used (below 1 to acquire, below 0
    /// to add or forget, or a total beyond what a semaphore can count).
    case invalidPermitCount(semaphore: String, value: Int)
    /// More permits asked for than the semaphore has in all: the request could never be granted.
    case permitRequestExceedsCapacity(semaphore: String, requested: Int, capacity: Int)

    public var description: String {
        switch self {
        case .invalidCapacity(let resource, let value):
            return "'\(resource)': capacity must be at least 1, got \(value). A capacity of 0 would make every waiter wait forever; use 1 for mutual exclusion."
        case .invalidTimeout(let resource, let timeout):
            return "'\(resource)': timeout must be zero or positive, got \(timeout). Use tryAcquire() for a non-waiting attempt."
        case .timedOut(let resource, let after):
            return "'\(resource)': gave up waiting after \(after); nothing was acquired. A dump from the watchdog shows who holds it."
        case .channelClosed(let channel):
            return "channel '\(channel)' is closed; the message was not sent (it is still yours). Stop sending, or create a new channel."
        case .poolShutdown(let pool):
            return "pool '\(pool)' has been shut down; no connection was checked out."
        case .semaphoreClosed(let semaphore):
            return "semaphore '\(semaphore)' is closed; no permit was acquired. Permits held before the close can still be released."
        case .alreadyReleased(let resource):
            return "'\(resource)': already released; this release was ignored and reported to the ledger."
        case .invalidConfiguration(let resource, let reason):
            return "'\(resource)': invalid configuration: \(reason). Nothing was created."
        case .invalidPermitCount(let semaphore, let value):
            return "semaphore '\(semaphore)': \(value) is not a usable number of permits (acquire at least 1; add or forget 0 or more; the total must stay below \(Semaphore.maxPermits)). Nothing changed."
        case .permitRequestExceedsCapacity(let semaphore, let requested, let capacity):
            return "semaphore '\(semaphore)': asked for \(requested) permits but it has \(capacity) in all, so the request could never be granted; nothing was acquired. Ask for at most \(capacity), or add permits first with addPermits(_:)."
        }
    }
}
