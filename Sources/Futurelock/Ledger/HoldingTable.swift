import DequeModule
import Synchronization

/// The live holdings of one primitive: a slab of stamps indexed by slot.
///
/// An acquire takes a free slot (or appends one) and a release clears it, both O(1) with no hashing
/// and, once the slab has grown to the primitive's peak, no allocation. The slot number travels in the
/// `Permit`/`Lease`/`SendPermit` object, which is what makes a release find its record directly.
/// Each slot also keeps a serial so a snapshot can name a holding stably while it is outstanding.
@usableFromInline
struct HoldingTable {
    @usableFromInline
    struct Entry {
        var stamp: OwnerStamp
        /// The task that acquired it first; differs from `stamp.task` once ownership has moved.
        var acquiredBy: TaskID
        var serial: UInt64
    }

    /// The slab's memory. Not an `Array`: writing a record into `[Entry?]` cost about 150 ns per
    /// acquire+release here (uniqueness checks and element copies through value witnesses on every
    /// store), most of what the ledger added to an uncontended acquire. Raw storage owned by one
    /// class instance, only ever touched under the primitive's lock, writes in place.
    @usableFromInline
    final class Storage {
        var base: UnsafeMutablePointer<Entry?>
        var capacity: Int
        var used = 0

        init() {
            capacity = 4
            base = .allocate(capacity: capacity)
            base.initialize(repeating: nil, count: capacity)
        }

        func grow() {
            let newCapacity = capacity * 2
            let newBase = UnsafeMutablePointer<Entry?>.allocate(capacity: newCapacity)
            newBase.moveInitialize(from: base, count: capacity)
            (newBase + capacity).initialize(repeating: nil, count: newCapacity - capacity)
            base.deallocate()
            base = newBase
            capacity = newCapacity
        }

        deinit {
            base.deinitialize(count: capacity)
            base.deallocate()
        }
    }

    private let storage = Storage()
    private var free: [Int32] = []
    private var serial: UInt64 = 0
    private(set) var count = 0

    @usableFromInline
    mutating func insert(_ stamp: consuming OwnerStamp) -> Int32 {
        serial &+= 1
        count += 1
        let slot: Int32
        if let reused = free.popLast() {
            slot = reused
        } else {
            if storage.used == storage.capacity { storage.grow() }
            slot = Int32(storage.used)
            storage.used += 1
        }
        let task = stamp.task
        storage.base[Int(slot)] = Entry(stamp: stamp, acquiredBy: task, serial: serial)
        return slot
    }

    private func isLive(_ slot: Int32) -> Bool {
        slot >= 0 && Int(slot) < storage.used && storage.base[Int(slot)] != nil
    }

    @discardableResult @usableFromInline
    mutating func remove(_ slot: Int32) -> Entry? {
        guard isLive(slot) else { return nil }
        let entry = storage.base[Int(slot)]
        discard(slot)
        return entry
    }

    /// The task that holds `slot` (without copying the entry).
    func holderTask(_ slot: Int32) -> TaskID? {
        guard slot >= 0, Int(slot) < storage.used else { return nil }
        return storage.base[Int(slot)]?.stamp.task
    }

    /// Clears `slot` without handing the entry back.
    mutating func discard(_ slot: Int32) {
        guard isLive(slot) else { return }
        storage.base[Int(slot)] = nil
        free.append(slot)
        count -= 1
    }

    subscript(slot: Int32) -> Entry? {
        guard slot >= 0, Int(slot) < storage.used else { return nil }
        return storage.base[Int(slot)]
    }

    /// Records that `task` (running in `node`) now owns the holding; returns the previous owner when
    /// it changed.
    mutating func transfer(_ slot: Int32, to task: TaskID, node: ScopeNode?) -> TaskID? {
        guard isLive(slot), let previous = storage.base[Int(slot)]?.stamp.task, previous != task else { return nil }
        storage.base[Int(slot)]!.stamp.task = task
        storage.base[Int(slot)]!.stamp.node = node
        return previous
    }

    func forEach(_ body: (Entry) -> Void) {
        for index in 0..<storage.used {
            if let entry = storage.base[index] { body(entry) }
        }
    }
}

/// A FIFO queue of waiters that also supports O(1) removal of any waiter by id, which cancellation
/// needs: with 180,000 waiters, a linear search per cancelled waiter would be quadratic.
///
/// The order lives in a deque of ids and the waiters in a dictionary; removing a waiter deletes it
/// from the dictionary and leaves its id in the deque as a tombstone that `popFirst` skips. Tombstones
/// are compacted away when they outnumber live waiters.
struct FIFOWaitQueue<Payload> {
    private var order: Deque<UInt64> = []
    private var entries: [UInt64: Payload] = [:]

    var count: Int { entries.count }
    var isEmpty: Bool { entries.isEmpty }

    mutating func append(_ id: UInt64, _ payload: Payload) {
        order.append(id)
        entries[id] = payload
    }

    mutating func popFirst() -> (id: UInt64, payload: Payload)? {
        while let id = order.popFirst() {
            if let payload = entries.removeValue(forKey: id) { return (id, payload) }
        }
        return nil
    }

    func first() -> (id: UInt64, payload: Payload)? {
        for id in order { if let payload = entries[id] { return (id, payload) } }
        return nil
    }

    mutating func remove(_ id: UInt64) -> Payload? {
        guard let payload = entries.removeValue(forKey: id) else { return nil }
        if order.count > 64, order.count > 2 * entries.count { compact() }
        return payload
    }

    mutating func removeAll() -> [Payload] {
        var result: [Payload] = []
        result.reserveCapacity(entries.count)
        while let (_, payload) = popFirst() { result.append(payload) }
        order.removeAll()
        return result
    }

    /// Visits live waiters head first, with their queue position.
    func forEachInOrder(_ body: (Int, UInt64, Payload) -> Void) {
        var position = 0
        for id in order {
            guard let payload = entries[id] else { continue }
            body(position, id, payload)
            position += 1
        }
    }

    private mutating func compact() {
        order = Deque(order.filter { entries[$0] != nil })
    }
}

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
    private let ring: Mutex<EventRing>
    let ledger: Ledger
    let resource: ResourceID

    init?(ledger: Ledger, resource: ResourceID) {
        let size = ledger.isEnabled ? ledger.configuration.eventHistoryPerResource : 0
        guard size > 0 else { return nil }
        self.ring = Mutex(EventRing(capacity: size))
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
