import DequeModule

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
