import Synchronization

/// One reserved slot of a ``BoundedChannel``, owned by the task that reserved it until it is used.
///
/// A permit is used exactly once: ``send(_:fileID:line:function:)`` puts a message into the reserved
/// slot without waiting, ``release(fileID:line:function:)`` gives the slot back unused (to the first
/// queued sender, if any). Either use spends the permit; a second use is ignored and reported to the
/// ledger as a double release (a second `send` also throws, so a message is never silently dropped).
/// A permit dropped without being used gives its slot back by itself and is reported as a leak with
/// the site that reserved it.
///
/// While it is outstanding the permit occupies a slot exactly as a buffered message does: with a
/// capacity-1 channel, every other sender waits until it is used. That is the ingredient of the
/// reserve-then-send futurelock, so hold permits briefly and never across a wait for something the
/// receiver side needs.
public final class SendPermit<Element: Sendable>: Sendable {
    /// The channel the slot belongs to.
    public let channel: BoundedChannel<Element>
    @usableFromInline let slot: Int32
    @usableFromInline let used = Atomic<Bool>(false)

    @usableFromInline
    init(channel: BoundedChannel<Element>, slot: Int32) {
        self.channel = channel
        self.slot = slot
    }

    /// Whether the permit has been used (sent on or released).
    public var isUsed: Bool { used.load(ordering: .acquiring) }

    /// Sends a message into the reserved slot. Never waits, and never fails for a closed channel:
    /// closing stops new sends and reservations, while a slot reserved before the close still
    /// delivers its message (receivers drain it before they see the end of the channel).
    ///
    /// - Throws: ``FuturelockError/alreadyReleased(resource:)`` if the permit was already used (the
    ///   message was not sent; the misuse is reported to the ledger).
    @inlinable
    public func send(_ value: Element, fileID: StaticString = #fileID, line: UInt = #line,
                     function: StaticString = #function) throws(FuturelockError) {
        if used.exchange(true, ordering: .acquiringAndReleasing) {
            channel.reportDoubleUse(fileID: fileID, line: line, function: function)
            throw .alreadyReleased(resource: channel.name)
        }
        channel.sendReserved(slot: slot, value, fileID: fileID, line: line, function: function)
    }

    /// Gives the slot back unused: to the first queued sender if anyone waits, otherwise it becomes free.
    ///
    /// Using a permit twice does not free two slots: a second call is ignored and reported to the
    /// ledger as a double release.
    public func release(fileID: StaticString = #fileID, line: UInt = #line, function: StaticString = #function) {
        if used.exchange(true, ordering: .acquiringAndReleasing) {
            channel.reportDoubleUse(fileID: fileID, line: line, function: function)
            return
        }
        channel.releaseReserved(slot: slot, fileID: fileID, line: line, function: function)
    }

    /// Records that the calling task now owns this permit (after it was passed from another task).
    public func claim(fileID: StaticString = #fileID, line: UInt = #line, function: StaticString = #function) {
        guard !isUsed else { return }
        channel.claim(slot: slot, fileID: fileID, line: line, function: function)
    }

    /// Records that the slot is being handed to another task whose identity is not known yet. Until a
    /// task claims it, sends on it or releases it, the ledger shows it as *in transit*, and the
    /// watchdog never blames the task it left.
    public func handOff(fileID: StaticString = #fileID, line: UInt = #line, function: StaticString = #function) {
        guard !isUsed else { return }
        channel.claim(slot: slot, as: .none, node: nil, fileID: fileID, line: line, function: function)
    }

    /// Gives the slot back without recording a release: used by a reserver that was handed a slot
    /// after its task was cancelled.
    @inlinable
    func giveBack() {
        guard !used.exchange(true, ordering: .acquiringAndReleasing) else { return }
        channel.resume(channel.state.withLock { $0.releaseReserved(slot: slot) })
    }

    deinit {
        if !used.load(ordering: .acquiring) {
            channel.releaseDropped(slot: slot)
        }
    }
}

// MARK: - The channel's side of a permit

extension BoundedChannel {
    @inlinable
    func sendReserved(slot: Int32, _ value: Element, fileID: StaticString, line: UInt,
                      function: StaticString) {
        if carriesHoldings { noteSending(value, fileID: fileID, line: line, function: function) }
        // A sender other than the reserver marks the reserving site as one that hands slots on.
        let sender = slot >= 0 ? ledger.context.task : .none
        switch state.withLock({ $0.sendReserved(slot: slot, value, by: sender) }) {
        case .buffered:
            break
        case .delivered(let receiver, let value, let wakeups):
            deliver(value, to: receiver)
            resume(wakeups)
        }
        if recordsHistory { recordEvent(.send, fileID: fileID, line: line, function: function) }
    }

    func releaseReserved(slot: Int32, fileID: StaticString, line: UInt, function: StaticString) {
        let releaser = slot >= 0 ? ledger.context.task : .none
        let wakeups = state.withLock { $0.releaseReserved(slot: slot, by: releaser) }
        if recordsHistory { recordEvent(.release, fileID: fileID, line: line, function: function) }
        resume(wakeups)
    }

    func transferHolding(slot: Int32, to task: TaskID, node: ScopeNode?) -> Bool {
        state.withLock { $0.transfer(slot: slot, to: task, node: node) } != nil
    }

    @usableFromInline
    func reportDoubleUse(fileID: StaticString, line: UInt, function: StaticString) {
        ledger.reportDoubleRelease(resource: id, name: name, kind: .sendSlot, fileID: fileID, line: line,
                                   function: function)
    }

    func releaseDropped(slot: Int32) {
        let (entry, wakeups) = state.withLock { machine in
            (machine.holdings[slot], machine.releaseReserved(slot: slot))
        }
        resume(wakeups)
        ledger.reportDropped(resource: id, name: name, kind: .sendSlot, entry: entry)
    }
}

/// A channel carrying these records each one as it is sent and received (`handOff` and `claim`).
extension SendPermit: RecordedHolding {}
