// What the channel tells the ledger: its resource record, reservations and waiters for snapshots,
// and its event history when the ledger keeps one.

extension BoundedChannel: LedgerTracked {
    /// The head sender's wait (FIFO: the oldest). Receivers waiting for messages are idle, not stuck.
    func oldestWait() -> MonotonicInstant? {
        state.withLock { machine -> MonotonicInstant? in
            guard let head = machine.senders.entries.first(where: { $0.payload != nil })?.payload else { return nil }
            switch head {
            case .send(_, _, let stamp): return stamp?.time
            case .reserve(_, let stamp): return stamp?.time
            }
        }
    }

    func contribute(to builder: inout SnapshotBuilder) {
        state.withLock { machine in
            builder.add(ResourceRecord(
                id: id, kind: .channel, name: name, capacity: capacity, available: machine.available,
                held: machine.held, waiting: machine.senders.count + machine.receivers.count,
                buffered: machine.buffer.count, closed: machine.closed))
            machine.holdings.forEach { entry in
                builder.addHolding(entry, resource: id, kind: .sendSlot,
                                   handsOff: machine.holdings.handsOff(entry.stamp.site))
            }
            // Senders and reservers share one queue, so their positions are counted together.
            machine.senders.forEachInOrder { position, _, waiter in
                switch waiter {
                case .send(_, let continuation, let stamp?):
                    builder.addWait(resource: id, kind: .send, stamp: stamp,
                                    taskAddress: taskAddress(of: continuation), position: position)
                case .reserve(let continuation, let stamp?):
                    builder.addWait(resource: id, kind: .reserve, stamp: stamp,
                                    taskAddress: taskAddress(of: continuation), position: position)
                case .send, .reserve:
                    break
                }
            }
            machine.receivers.forEachInOrder { position, _, waiter in
                if let stamp = waiter.stamp {
                    builder.addWait(resource: id, kind: .receive, stamp: stamp,
                                    taskAddress: taskAddress(of: waiter.continuation), position: position)
                }
            }
        }
        if let history { builder.addEvents(history.events) }
    }

    // MARK: - Event history

    /// Records an event in the history, if it is kept (one branch when it is not).
    @inlinable
    func record(_ kind: LedgerEvent.Kind, _ stamp: OwnerStamp?) {
        if recordsHistory { recordInHistory(kind, stamp) }
    }

    @usableFromInline
    func recordInHistory(_ kind: LedgerEvent.Kind, _ stamp: OwnerStamp?) {
        history?.record(kind, stamp)
    }

    /// Records an event of a fast path, which has no stamp of its own (only called when history is on).
    @usableFromInline
    func recordEvent(_ kind: LedgerEvent.Kind, fileID: StaticString, line: UInt, function: StaticString) {
        guard let history else { return }
        history.record(kind, ledger.stamp(fileID: fileID, line: line, function: function))
    }

    /// Records a reservation granted on the fast path.
    @usableFromInline
    func recordGrant(_ stamp: OwnerStamp?) {
        record(.grant, stamp)
    }
}
