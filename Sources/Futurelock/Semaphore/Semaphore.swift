// A FIFO-fair counting semaphore whose permits are owned objects recorded in the ledger.
//
// Fairness. Waiters are served strictly in arrival order. A release never increments a counter that a
// newcomer could grab: when anyone is waiting, the released permit is handed directly to the head
// waiter (the hand-off), inside the same critical section that removes it from the queue. The fast
// path (`tryAcquire`, and the first step of `acquire`) only succeeds when a permit is free *and* the
// queue is empty, so nobody barges past a waiter.
//
// Hand-off is also exactly what makes futurelocks possible: once a permit has been handed to a waiter,
// it belongs to that waiter's task whether or not the task ever looks at it again. The ledger records
// the hand-off so the watchdog can say which task — and which child or scope of it — now holds it.
//
// Cancellation. A waiter registers a cancellation handler before it suspends. If the task is cancelled
// while the waiter is still queued, the waiter is removed (O(log n)) and `acquire` throws
// `CancellationError`. If cancellation races with a hand-off and the permit was already handed over,
// the woken waiter sees its task is cancelled, releases the permit — which hands it to the next waiter
// — and throws. A cancelled `acquire` therefore never returns a permit and never loses one.
//
// Ownership. A `Permit` is released exactly once: `release()` or the end of `withPermit`. A second
// release is ignored and reported to the ledger as a double release (never double-counted). A permit
// that is dropped without release is released by its deinitialiser and reported as a leak with the
// site that acquired it. When a task other than the acquirer releases or claims a permit, the ledger
// records the move of ownership.
//
// Locking. One `Mutex` per semaphore guards its state machine. Continuations are resumed and problems
// reported only after the lock is released.

import Synchronization

/// A FIFO-fair counting semaphore with owned, recorded permits. See the file header for the rules.
public final class Semaphore: Sendable, HoldingTransferring {
    /// The name used in dumps and errors.
    public let name: String
    /// The number of permits in all, free and held. It starts at `permits:` and changes only through
    /// ``addPermits(_:fileID:line:function:)``, ``forgetPermits(_:fileID:line:function:)`` and
    /// ``Permit/forget(fileID:line:function:)``.
    public var capacity: Int { state.withLock { $0.capacity } }

    /// The most permits a semaphore can have in all (as tokio's, far more than any real use).
    public static let maxPermits = Int.max >> 3
    /// The ledger that records this semaphore's holdings and waiters.
    public let ledger: Ledger
    /// This semaphore's id in the ledger.
    public let id: ResourceID

    let state: Lock<StateMachine>
    private let waiterSerial = Atomic<UInt64>(0)
    private let history: EventHistory?

    /// Creates a semaphore.
    ///
    /// - Parameters:
    ///   - name: A name a person recognises in a dump, e.g. `"db-connections"`.
    ///   - permits: How many permits exist; at least 1.
    ///   - ledger: Where holdings and waits are recorded (defaults to the process-wide ledger).
    /// - Throws: ``FuturelockError/invalidCapacity(resource:value:)`` when `permits < 1` or above
    ///   ``maxPermits``.
    public init(name: String, permits: Int, ledger: Ledger = .shared) throws(FuturelockError) {
        guard permits >= 1, permits <= Self.maxPermits else { throw .invalidCapacity(resource: name, value: permits) }
        self.name = name
        self.ledger = ledger
        self.state = Lock(StateMachine(capacity: permits, runtimeParentOffset: ledger.runtime.parentOffset))
        self.id = ledger.nextResourceID()
        self.history = EventHistory(ledger: ledger, resource: id)
        ledger.register(self, id: id)
    }

    deinit { ledger.unregister(id) }

    /// Whether ``close(fileID:line:function:)`` has been called.
    public var isClosed: Bool { state.withLock { $0.closed } }

    /// Closes the semaphore: every queued `acquire` throws ``FuturelockError/semaphoreClosed(semaphore:)``,
    /// and so does every later one; `tryAcquire` returns `nil`. Permits held at that moment stay valid
    /// and can be released as usual. Calling it again does nothing. (tokio's `Semaphore::close`.)
    public func close(fileID: StaticString = #fileID, line: UInt = #line, function: StaticString = #function) {
        guard let waiters = state.withLock({ $0.close() }) else { return }
        record(.close, ledger.stamp(fileID: fileID, line: line, function: function))
        for waiter in waiters { waiter.resume(throwing: FuturelockError.semaphoreClosed(semaphore: name)) }
    }

    /// Permits free right now (a hint: it may change before you act on it).
    public var availablePermits: Int { state.withLock { $0.available } }

    /// Tasks waiting right now.
    public var waitingCount: Int { state.withLock { $0.waiters.count } }

    // MARK: - Acquiring

    /// Waits for a permit, first come, first served.
    ///
    /// - Returns: The permit, owned by the calling task until it is released.
    /// - Throws: `CancellationError` if the task is cancelled before the permit is granted (a permit
    ///   granted concurrently with the cancellation is passed on to the next waiter, never kept).
    nonisolated(nonsending)
    public func acquire(fileID: StaticString = #fileID, line: UInt = #line,
                        function: StaticString = #function) async throws -> Permit {
        if !ledger.isEnabled, let permit = grantUntracked() { return permit }
        return try await acquire(stamped: ledger.stamp(fileID: fileID, line: line, function: function))
    }

    /// The fast path with the ledger off: a permit if one is free and nobody waits.
    @inline(__always)
    private func grantUntracked() -> Permit? {
        state.withLock { $0.tryAcquireUntracked() } ? Permit(semaphore: self, slot: StateMachine.untrackedSlot) : nil
    }

    /// Waits for `permits` permits at once, first come, first served: while this request waits at the
    /// head of the queue, nobody behind it is served, so a large request is never starved by a stream
    /// of small ones (tokio's `acquire_many`). The returned ``Permit`` stands for all of them
    /// (``Permit/count``) and releases them together.
    ///
    /// - Throws: ``FuturelockError/invalidPermitCount(semaphore:value:)`` when `permits < 1`;
    ///   ``FuturelockError/permitRequestExceedsCapacity(semaphore:requested:capacity:)`` when the
    ///   semaphore has fewer permits in all (also if permits are forgotten while it waits);
    ///   ``FuturelockError/semaphoreClosed(semaphore:)``; `CancellationError`.
    nonisolated(nonsending)
    public func acquire(permits: Int, fileID: StaticString = #fileID, line: UInt = #line,
                        function: StaticString = #function) async throws -> Permit {
        guard permits >= 1 else { throw FuturelockError.invalidPermitCount(semaphore: name, value: permits) }
        return try await acquire(stamped: ledger.stamp(fileID: fileID, line: line, function: function), count: permits)
    }

    @inline(__always)
    nonisolated(nonsending)
    private func acquire(stamped stamp: OwnerStamp?, count: Int = 1) async throws -> Permit {
        if let permit = grantNow(stamp, count: count) {
            record(.grant, stamp)
            return permit
        }
        return try await acquireSlow(stamp, count: count)
    }

    /// The fast path: a permit if one is free and nobody waits. With the ledger on, the `Permit` is
    /// made under the lock, so its record knows the object's address without locking again.
    @inline(__always)
    private func grantNow(_ stamp: OwnerStamp?, count: Int = 1) -> Permit? {
        guard stamp != nil else {
            return state.withLock({ $0.tryAcquire(nil, count: count) }).map { Permit(semaphore: self, slot: $0, count: count) }
        }
        return state.withLock { machine -> Permit? in
            guard let slot = machine.tryAcquire(stamp, count: count) else { return nil }
            let permit = Permit(semaphore: self, slot: slot, count: count)
            machine.noteObject(objectAddress(permit), slot: slot)
            return permit
        }
    }

    nonisolated(nonsending)
    private func acquireSlow(_ stamp: OwnerStamp?, count: Int) async throws -> Permit {
        let slot = try await waitForSlot(stamp, count: count)
        let permit = Permit(semaphore: self, slot: slot, count: count)
        if slot != StateMachine.untrackedSlot { noteObject(permit, slot: slot) }
        return permit
    }

    /// The scoped form's acquire: the permits are recorded under a slot and no `Permit` object is
    /// made (nothing outside the scoped call could ever see it), so `withPermit` allocates nothing.
    @inline(__always)
    nonisolated(nonsending)
    private func acquireSlot(stamped stamp: OwnerStamp?, count: Int) async throws -> Int32 {
        if let slot = state.withLock({ $0.tryAcquire(stamp, count: count) }) {
            record(.grant, stamp)
            return slot
        }
        return try await waitForSlot(stamp, count: count)
    }

    /// Queues for `count` permits and returns the slot they were granted under.
    nonisolated(nonsending)
    private func waitForSlot(_ stamp: OwnerStamp?, count: Int) async throws -> Int32 {
        // Taken before locking, as the channel does, so ids reach the queue in (nearly) increasing
        // order: the queue keeps waiters in id order and finds a cancelled one by binary search.
        let waiterID = waiterSerial.wrappingAdd(1, ordering: .relaxed).newValue
        record(.waitStart, stamp)
        let slot: Int32
        do {
            defer { ThreadSanitizer.acquireAfterResume() }  // the waiter's side of the hand-off (Support/ThreadSanitizer.swift)
            // The closures stay small and call out to plain functions: whatever they hold lives in
            // the task's async frames, and a waiting task whose frames outgrow the task's first
            // allocator slab pays for a second one (about 1 KB per parked task).
            slot = try await withTaskCancellationHandler {
                try await withUnsafeThrowingContinuation { (continuation: StateMachine.Continuation) in
                    enqueue(continuation, id: waiterID, stamp: stamp, count: count)
                }
            } onCancel: {
                cancelWaiter(id: waiterID)
            }
        } catch {
            record(error is CancellationError ? .cancelled : .waitEnd, stamp)
            throw error
        }
        if Task.isCancelled {
            // Cancelled after the hand-off: pass the permits on rather than return them to a caller
            // that has stopped wanting them.
            release(slot: slot, count: count, fileID: #fileID, line: #line, function: #function)
            record(.cancelled, stamp)
            throw CancellationError()
        }
        record(.waitEnd, stamp)
        return slot
    }

    /// Queues a waiter, or resumes it at once (granted, cancelled, closed, or asking for too much).
    @inline(never)
    private func enqueue(_ continuation: StateMachine.Continuation, id waiterID: UInt64, stamp: OwnerStamp?, count: Int) {
        let isCancelled = Task.isCancelled  // read before locking: less work under a contended lock
        let action = state.withLock {
            $0.enqueue(id: waiterID, continuation, stamp: stamp, count: count, isCancelled: isCancelled)
        }
        switch action {
        case .suspended: break
        case .resumeGranted(let continuation, let slot): continuation.resume(returning: slot)
        case .resumeCancelled(let continuation): continuation.resume(throwing: CancellationError())
        case .resumeClosed(let continuation):
            continuation.resume(throwing: FuturelockError.semaphoreClosed(semaphore: name))
        case .resumeExceedsCapacity(let continuation, let capacity):
            continuation.resume(throwing: FuturelockError.permitRequestExceedsCapacity(
                semaphore: name, requested: count, capacity: capacity))
        }
    }

    /// A waiter's task was cancelled: removes it if it still queues, and serves whoever that lets in.
    @inline(never)
    private func cancelWaiter(id waiterID: UInt64) {
        let (continuation, served) = state.withLock { $0.cancel(id: waiterID) }
        continuation?.resume(throwing: CancellationError())
        perform(served)
    }

    /// Takes a permit if one is free and nobody is waiting; never suspends.
    public func tryAcquire(fileID: StaticString = #fileID, line: UInt = #line,
                           function: StaticString = #function) -> Permit? {
        // Ledger off: nothing is stamped or recorded, and no empty stamp is built and passed along.
        guard ledger.isEnabled else { return grantUntracked() }
        let stamp = ledger.stamp(fileID: fileID, line: line, function: function)
        guard let permit = grantNow(stamp) else { return nil }
        record(.grant, stamp)
        return permit
    }

    /// Takes `permits` permits at once if that many are free and nobody is waiting; never suspends.
    ///
    /// - Returns: `nil` when they are not free right now, or the semaphore is closed.
    /// - Throws: ``FuturelockError/invalidPermitCount(semaphore:value:)`` when `permits < 1`, and
    ///   ``FuturelockError/permitRequestExceedsCapacity(semaphore:requested:capacity:)`` when the
    ///   semaphore has fewer permits in all (waiting would never help either).
    public func tryAcquire(permits: Int, fileID: StaticString = #fileID, line: UInt = #line,
                           function: StaticString = #function) throws(FuturelockError) -> Permit? {
        try validate(request: permits)
        let stamp = ledger.stamp(fileID: fileID, line: line, function: function)
        guard let permit = grantNow(stamp, count: permits) else { return nil }
        record(.grant, stamp)
        return permit
    }

    private func validate(request permits: Int) throws(FuturelockError) {
        guard permits >= 1 else { throw .invalidPermitCount(semaphore: name, value: permits) }
        let capacity = self.capacity
        guard permits <= capacity else {
            throw .permitRequestExceedsCapacity(semaphore: name, requested: permits, capacity: capacity)
        }
    }

    /// Waits for `permits` permits at once (see ``acquire(permits:fileID:line:function:)``), but gives
    /// up after `timeout`; nothing is held then.
    public func acquire(permits: Int, timeout: Duration, fileID: StaticString = #fileID, line: UInt = #line,
                        function: StaticString = #function) async throws -> Permit {
        try validate(request: permits)
        return try await TimeoutRace.acquire(
            resource: name, timeout: timeout,
            immediately: { try tryAcquire(permits: permits, fileID: fileID, line: line, function: function) },
            waiting: { try await self.acquire(permits: permits, fileID: fileID, line: line, function: function) },
            claim: { $0.claim(fileID: fileID, line: line, function: function) })
    }

    /// Waits for a permit, but gives up after `timeout`.
    ///
    /// - Throws: ``FuturelockError/timedOut(resource:after:)`` (nothing is held),
    ///   ``FuturelockError/invalidTimeout(resource:timeout:)`` for a negative timeout, or
    ///   `CancellationError`.
    public func acquire(timeout: Duration, fileID: StaticString = #fileID, line: UInt = #line,
                        function: StaticString = #function) async throws -> Permit {
        try await TimeoutRace.acquire(
            resource: name, timeout: timeout,
            immediately: { tryAcquire(fileID: fileID, line: line, function: function) },
            waiting: { try await self.acquire(fileID: fileID, line: line, function: function) },
            claim: { $0.claim(fileID: fileID, line: line, function: function) })
    }

    /// Runs `body` while holding `permits` permits acquired at once, and releases them however `body`
    /// ends. Throws as ``acquire(permits:fileID:line:function:)`` does.
    public func withPermits<Result>(
        _ permits: Int,
        fileID: StaticString = #fileID, line: UInt = #line, function: StaticString = #function,
        isolation: isolated (any Actor)? = #isolation,
        _ body: () async throws -> Result
    ) async throws -> Result {
        guard permits >= 1 else { throw FuturelockError.invalidPermitCount(semaphore: name, value: permits) }
        // The permits never reach `body`, so only the end of this call can release them: the ledger
        // marks the holding pinned, which lets the watchdog prove a lock that rests on it.
        var stamp = ledger.stamp(fileID: fileID, line: line, function: function)
        stamp?.isPinned = true
        let slot = try await acquireSlot(stamped: stamp, count: permits)
        defer { release(slot: slot, count: permits, fileID: fileID, line: line, function: function) }
        return try await body()
    }

    // MARK: - Adding and forgetting permits

    /// Adds `count` permits to the semaphore; waiters at the head of the queue get them at once
    /// (tokio's `add_permits`). Adding to a closed semaphore grows it but grants nothing.
    ///
    /// - Throws: ``FuturelockError/invalidPermitCount(semaphore:value:)`` when `count < 0` or the total
    ///   would pass ``maxPermits``; nothing changes then.
    public func addPermits(_ count: Int, fileID: StaticString = #fileID, line: UInt = #line,
                           function: StaticString = #function) throws(FuturelockError) {
        guard count >= 0 else { throw .invalidPermitCount(semaphore: name, value: count) }
        guard count > 0 else { return }
        let served = state.withLock { machine -> StateMachine.ReleaseAction? in
            guard machine.capacity <= Self.maxPermits - count else { return nil }
            return machine.addPermits(count)
        }
        guard let served else { throw .invalidPermitCount(semaphore: name, value: count) }
        record(.permitsAdded, ledger.stamp(fileID: fileID, line: line, function: function))
        perform(served)
    }

    /// Removes up to `count` *free* permits from the semaphore for good and returns how many were
    /// removed (tokio's `forget_permits`); held permits are not touched. Queued requests for more
    /// permits than are left fail with
    /// ``FuturelockError/permitRequestExceedsCapacity(semaphore:requested:capacity:)``.
    ///
    /// - Throws: ``FuturelockError/invalidPermitCount(semaphore:value:)`` when `count < 0`.
    @discardableResult
    public func forgetPermits(_ count: Int, fileID: StaticString = #fileID, line: UInt = #line,
                              function: StaticString = #function) throws(FuturelockError) -> Int {
        guard count >= 0 else { throw .invalidPermitCount(semaphore: name, value: count) }
        guard count > 0 else { return 0 }
        let (forgotten, failed, served) = state.withLock { $0.forgetPermits(count) }
        if forgotten > 0 { record(.permitsForgotten, ledger.stamp(fileID: fileID, line: line, function: function)) }
        fail(failed)
        perform(served)
        return forgotten
    }

    func forget(slot: Int32, count: Int, fileID: StaticString, line: UInt, function: StaticString) {
        let (failed, served) = state.withLock { $0.forget(slot: slot, count: count) }
        if history != nil { record(.permitsForgotten, ledger.stamp(fileID: fileID, line: line, function: function)) }
        fail(failed)
        perform(served)
    }

    private func fail(_ waiters: StateMachine.Failed) {
        guard !waiters.isEmpty else { return }
        let capacity = self.capacity
        for waiter in waiters {
            waiter.continuation.resume(throwing: FuturelockError.permitRequestExceedsCapacity(
                semaphore: name, requested: waiter.requested, capacity: capacity))
        }
    }

    /// Resumes the waiters a release, an addition or a cancellation served.
    @inline(__always)
    private func perform(_ action: StateMachine.ReleaseAction) {
        switch action {
        case .none: break
        case .handOff(let continuation, let slot, let stamp):
            record(.handoff, stamp)
            continuation.resume(returning: slot)
        case .handOffs(let grants):
            for grant in grants {
                record(.handoff, grant.stamp)
                grant.continuation.resume(returning: grant.slot)
            }
        }
    }

    /// Runs `body` while holding a permit, and releases it however `body` ends.
    public func withPermit<Result>(
        fileID: StaticString = #fileID, line: UInt = #line, function: StaticString = #function,
        isolation: isolated (any Actor)? = #isolation,
        _ body: () async throws -> Result
    ) async throws -> Result {
        try await withPermits(1, fileID: fileID, line: line, function: function, isolation: isolation, body)
    }

    // MARK: - Releasing (called by Permit)

    func release(slot: Int32, count: Int, fileID: StaticString, line: UInt, function: StaticString) {
        if slot == StateMachine.untrackedSlot {
            // Ledger off: nobody to note and no history.
            perform(state.withLock { $0.release(slot: slot, count: count) })
            return
        }
        // Who releases matters when it is not the holder: the acquisition site hands permits on
        // (and the event history records the move).
        let releaser = ledger.context.task
        let (action, moved) = state.withLock { machine -> (StateMachine.ReleaseAction, Bool) in
            var moved = false
            if releaser != .none, let holder = machine.holdings.holderTask(slot), holder != releaser {
                if history != nil {
                    _ = machine.transfer(slot: slot, to: releaser, node: nil)
                } else {
                    machine.noteRelease(slot: slot, by: releaser)
                }
                moved = true
            }
            return (machine.release(slot: slot, count: count), moved)
        }
        if history != nil {
            let stamp = ledger.stamp(fileID: fileID, line: line, function: function)
            if moved { record(.transfer, stamp) }
            record(.release, stamp)
        }
        perform(action)
    }

    func transferHolding(slot: Int32, to task: TaskID, node: ScopeNode?) -> Bool {
        state.withLock { $0.transfer(slot: slot, to: task, node: node) } != nil
    }

    func noteObject(_ object: AnyObject, slot: Int32) {
        let address = objectAddress(object)
        state.withLock { $0.noteObject(address, slot: slot) }
    }

    func reportDoubleRelease(slot: Int32, fileID: StaticString, line: UInt, function: StaticString) {
        ledger.reportDoubleRelease(resource: id, name: name, kind: .permit, fileID: fileID, line: line,
                                   function: function)
    }

    func releaseDropped(slot: Int32, count: Int) {
        let (entry, action) = state.withLock { machine in
            (machine.holdings[slot], machine.release(slot: slot, count: count))
        }
        perform(action)
        ledger.reportDropped(resource: id, name: name, kind: .permit, entry: entry)
    }

    // MARK: - Event history

    @inline(__always)
    func record(_ kind: LedgerEvent.Kind, _ stamp: OwnerStamp?) {
        history?.record(kind, stamp)
    }
}

extension Semaphore: LedgerTracked {
    func oldestWait() -> MonotonicInstant? {
        state.withLock { $0.waiters.first?.stamp?.time }
    }

    func contribute(to builder: inout SnapshotBuilder) {
        state.withLock { machine in
            let request = machine.headRequest
            builder.add(ResourceRecord(
                id: id, kind: .semaphore, name: name, capacity: machine.capacity, available: machine.available,
                held: machine.held, waiting: machine.waiters.count, closed: machine.closed,
                headRequest: request > 1 ? request : nil))
            machine.holdings.forEach { entry in
                builder.addHolding(entry, resource: id, kind: .permit,
                                   handsOff: machine.holdings.handsOff(entry.stamp.site))
            }
            machine.waiters.forEachInOrder { position, _, waiter in
                if let stamp = waiter.stamp {
                    builder.addWait(resource: id, kind: .acquire, stamp: stamp,
                                    taskAddress: taskAddress(of: waiter.continuation), position: position,
                                    units: waiter.count)
                }
            }
        }
        if let history { builder.addEvents(history.events) }
    }
}
