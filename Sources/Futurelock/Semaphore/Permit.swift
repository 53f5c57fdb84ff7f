import Synchronization

/// One permit of a ``Semaphore``, owned by the task that acquired it until it is released.
///
/// Release it exactly once with ``release(fileID:line:function:)`` (or let `withPermit` do it). A
/// second release is ignored and reported; a permit dropped without release is released for you and
/// reported as a leak with the site that acquired it. A permit may be handed to another task — send it
/// through a channel, return it from a child task — and the ledger records the new owner as soon as
/// that task calls ``claim(fileID:line:function:)`` or releases it.
public final class Permit: Sendable {
    /// The semaphore the permit belongs to.
    public let semaphore: Semaphore
    let slot: Int32
    /// How many of the semaphore's permits this object stands for (more than 1 when acquired with
    /// `acquire(permits:)`); they are released together.
    public let count: Int
    private let released = Atomic<Bool>(false)

    init(semaphore: Semaphore, slot: Int32, count: Int = 1) {
        self.semaphore = semaphore
        self.slot = slot
        self.count = count
    }

    /// Whether the permit has been released.
    public var isReleased: Bool { released.load(ordering: .acquiring) }

    /// Gives the permit back (to the first waiter if anyone waits).
    ///
    /// Releasing twice does not give back two permits: the second call is ignored and reported to the
    /// ledger as a double release. Use ``releaseChecked(fileID:line:function:)`` to get an error instead.
    public func release(fileID: StaticString = #fileID, line: UInt = #line, function: StaticString = #function) {
        if released.exchange(true, ordering: .acquiringAndReleasing) {
            semaphore.reportDoubleRelease(slot: slot, fileID: fileID, line: line, function: function)
            return
        }
        semaphore.release(slot: slot, count: count, fileID: fileID, line: line, function: function)
    }

    /// Like ``release(fileID:line:function:)``, but a second release throws
    /// ``FuturelockError/alreadyReleased(resource:)`` (it is still reported to the ledger).
    public func releaseChecked(fileID: StaticString = #fileID, line: UInt = #line,
                               function: StaticString = #function) throws(FuturelockError) {
        if released.exchange(true, ordering: .acquiringAndReleasing) {
            semaphore.reportDoubleRelease(slot: slot, fileID: fileID, line: line, function: function)
            throw .alreadyReleased(resource: semaphore.name)
        }
        semaphore.release(slot: slot, count: count, fileID: fileID, line: line, function: function)
    }

    /// Removes this permit's ``count`` permits from the semaphore for good instead of giving them
    /// back: its capacity shrinks by that much (tokio's `SemaphorePermit::forget`). Use it when the
    /// thing the permits stood for is gone. Queued requests for more permits than are left fail with
    /// ``FuturelockError/permitRequestExceedsCapacity(semaphore:requested:capacity:)``.
    ///
    /// Forgetting a permit that was already released or forgotten is ignored and reported to the ledger
    /// as a double release.
    public func forget(fileID: StaticString = #fileID, line: UInt = #line, function: StaticString = #function) {
        if released.exchange(true, ordering: .acquiringAndReleasing) {
            semaphore.reportDoubleRelease(slot: slot, fileID: fileID, line: line, function: function)
            return
        }
        semaphore.forget(slot: slot, count: count, fileID: fileID, line: line, function: function)
    }

    /// Records that the calling task now owns this permit (after it was passed from another task).
    public func claim(fileID: StaticString = #fileID, line: UInt = #line, function: StaticString = #function) {
        guard !isReleased else { return }
        semaphore.claim(slot: slot, fileID: fileID, line: line, function: function)
    }

    /// Records that the permit is being handed to another task whose identity is not known yet (put
    /// in a channel, a reply slot, a shared structure). Until a task claims or releases it, the ledger
    /// shows it as *in transit* and the watchdog treats it as releasable — it never reports a lock on
    /// the strength of a holder the permit has already left.
    public func handOff(fileID: StaticString = #fileID, line: UInt = #line, function: StaticString = #function) {
        guard !isReleased else { return }
        semaphore.claim(slot: slot, as: .none, node: nil, fileID: fileID, line: line, function: function)
    }

    deinit {
        if !released.load(ordering: .acquiring) {
            semaphore.releaseDropped(slot: slot, count: count)
        }
    }
}

/// A channel carrying these records each one as it is sent and received (`handOff` and `claim`).
extension Permit: RecordedHolding {}
