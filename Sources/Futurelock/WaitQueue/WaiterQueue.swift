import DequeModule

/// The FIFO queue of waiters of one primitive — the semaphore's acquirers, the pool's checkouts, the
/// channel's senders and receivers — with O(1) append and pop and O(log n) removal of any waiter by
/// id, which cancellation needs: with 180,000 waiters a linear search per cancelled waiter would be
/// quadratic.
///
/// Entries sit in one ring (`Deque`) in id order, so a waiter is found by binary search, and a removed
/// waiter leaves a tombstone (`payload == nil`) that `popFirstIfAny` and `first` skip; tombstones are
/// compacted away once they outnumber live waiters. Once the ring has grown to the queue's peak,
/// queueing and dequeueing allocate nothing and hash nothing. It is `@inlinable` throughout so that
/// the channel's waiting paths specialise.
///
/// Ids come from the primitive's own counter, taken by a waiter just before it locks to queue, so
/// they are almost always appended in increasing order; in the rare race where a waiter with a
/// smaller id reaches the lock second, it is inserted in id order (a few places from the tail) — its
/// id is its place in the line.
@usableFromInline
struct WaiterQueue<Payload> {
    @usableFromInline
    struct Entry {
        @usableFromInline let id: UInt64
        /// `nil`: a tombstone left by `remove`.
        @usableFromInline var payload: Payload?

        @inlinable
        init(id: UInt64, payload: Payload?) {
            self.id = id
            self.payload = payload
        }
    }

    /// Live waiters and tombstones, in increasing id order, head first.
    @usableFromInline var entries: Deque<Entry> = []
    /// Live waiters (entries that are not tombstones).
    @usableFromInline private(set) var count = 0

    @inlinable init() {}

    @inlinable var isEmpty: Bool { count == 0 }

    @inlinable
    mutating func append(_ id: UInt64, _ payload: Payload) {
        count += 1
        if let last = entries.last, last.id > id {
            insertInIDOrder(Entry(id: id, payload: payload))
        } else {
            entries.append(Entry(id: id, payload: payload))
        }
    }

    /// The rare case: a waiter whose id is smaller than the tail's reached the lock second.
    @inlinable
    mutating func insertInIDOrder(_ entry: Entry) {
        var index = entries.count
        while index > 0, entries[index - 1].id > entry.id { index -= 1 }
        entries.insert(entry, at: index)
    }

    /// The id of the head waiter, or `nil` if none queues.
    @inlinable
    var firstID: UInt64? {
        guard count > 0 else { return nil }
        for entry in entries where entry.payload != nil { return entry.id }
        return nil
    }

    /// The head waiter (the one that has waited longest), or `nil` if none queues.
    @inlinable
    var first: Payload? {
        guard count > 0 else { return nil }
        for entry in entries { if let payload = entry.payload { return payload } }
        return nil
    }

    /// Pops the head waiter; `nil` if none queues.
    @inlinable
    mutating func popFirstIfAny() -> Payload? {
        guard count > 0 else { return nil }
        while let entry = entries.popFirst() {
            if let payload = entry.payload {
                count -= 1
                return payload
            }
        }
        return nil
    }

    /// Pops the head; the caller has checked that the queue is not empty.
    @inlinable
    mutating func popFirstPayload() -> Payload {
        guard let payload = popFirstIfAny() else {
            preconditionFailure("BUG DETECTED: popped an empty waiter queue")
        }
        return payload
    }

    /// Removes the waiter with this id; `nil` if it is not queued (any more).
    @inlinable
    mutating func remove(_ id: UInt64) -> Payload? {
        guard let index = index(of: id), let payload = entries[index].payload else { return nil }
        count -= 1
        if index == entries.count - 1 {
            entries.removeLast()
        } else if index == 0 {
            entries.removeFirst()
        } else {
            entries[index].payload = nil
            if entries.count > 64, entries.count > 2 * count { compact() }
        }
        return payload
    }

    /// Binary search over the id-ordered ring.
    @inlinable
    func index(of id: UInt64) -> Int? {
        var low = 0, high = entries.count
        while low < high {
            let mid = low + (high - low) / 2
            let midID = entries[mid].id
            if midID == id { return mid }
            if midID < id { low = mid + 1 } else { high = mid }
        }
        return nil
    }

    @inlinable
    mutating func compact() {
        entries = Deque(entries.lazy.filter { $0.payload != nil })
    }

    /// Removes every waiter, head first.
    mutating func removeAll() -> [Payload] {
        var result: [Payload] = []
        result.reserveCapacity(count)
        for entry in entries { if let payload = entry.payload { result.append(payload) } }
        entries.removeAll()
        count = 0
        return result
    }

    /// Visits live waiters head first, with their queue position.
    func forEachInOrder(_ body: (Int, UInt64, Payload) -> Void) {
        var position = 0
        for entry in entries {
            guard let payload = entry.payload else { continue }
            body(position, entry.id, payload)
            position += 1
        }
    }
}
