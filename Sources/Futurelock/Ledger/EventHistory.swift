import Synchronization

/// A bounded ring of recent events of one resource (only allocated when history is on).
struct EventRing {
    private var buffer: [LedgerEvent] = []
    private var next = 0
    let capacity: Int

    init(capacity: Int) { self.capacity = capacity }

    mutating func append(_ event: LedgerEvent) {
        guard capacity > 0 else { return }
        if buffer.count < capacity {
            buffer.append(event)
        } else {
            buffer[next] = event
            next = (next + 1) % capacity
        }
    }

    var events: [LedgerEvent] {
        buffer.count < capacity ? buffer : Array(buffer[next...] + buffer[..<next])
    }
}

/// The event history of one resource, allocated only when the ledger keeps history.
final class EventHistory: Sendable {
    private let ring: Lock<EventRing>
    let ledger: Ledger
    let resource: ResourceID

    init?(ledger: Ledger, resource: ResourceID) {
        let size = ledger.isEnabled ? ledger.configuration.eventHistoryPerResource : 0
        guard size > 0 else { return nil }
        self.ring = Lock(EventRing(capacity: size))
        self.ledger = ledger
        self.resource = resource
    }

    func record(_ kind: LedgerEvent.Kind, _ stamp: OwnerStamp?) {
        guard let stamp else { return }
        let event = LedgerEvent(
            sequence: ledger.nextEventSequence(), time: .now, kind: kind, resource: resource,
            task: stamp.task, node: stamp.nodeID, site: stamp.site.callSite)
        ring.withLock { $0.append(event) }
    }

    var events: [LedgerEvent] { ring.withLock { $0.events } }
}
