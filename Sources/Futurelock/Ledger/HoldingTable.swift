/// The live holdings of one primitive: a slab of stamps indexed by slot.
///
/// An acquire takes a free slot (or appends one) and a release clears it, both O(1) with no hashing
/// and, once the slab has grown to the primitive's peak, no allocation. The slot number travels in the
/// `Permit`/`Lease`/`SendPermit` object, which is what makes a release find its record directly.
/// Each slot also keeps a serial so a snapshot can name a holding stably while it is outstanding.
///
/// Entries are trivially copyable (see ``OwnerStamp``), so a store is a plain memory write. The one
/// reference that must outlive the acquire — the stamp's scope node — is retained here when a
/// holding is recorded and released when it is cleared or moves to another node.
@usableFromInline
struct HoldingTable {
    @usableFromInline
    struct Entry: BitwiseCopyable {
        @usableFromInline var stamp: OwnerStamp
        /// The task that acquired it first; differs from `stamp.task` once ownership has moved.
        @usableFromInline var acquiredBy: TaskID
        /// The holding's serial within this table (from 1); 0 marks a free slot.
        @usableFromInline var serial: UInt64
        /// The holder's structured ancestry, read from the runtime when the holding was recorded.
        @usableFromInline var ancestry: TaskAncestry
        /// The holder's task object when the holding was recorded (0 if not known). Never
        /// dereferenced later: the watchdog only compares it with words in a waiter's frames.
        @usableFromInline var holderAddress: UInt
        /// The address of the `Permit`, `SendPermit` or `Lease` object, once it exists (0 before):
        /// what the watchdog looks for in parked results. The object cannot be freed while the entry
        /// is live and the primitive's lock is held, because its deinitialiser needs that lock.
        @usableFromInline var object: UInt
        /// How many units the holding is (several permits acquired at once; 1 otherwise).
        @usableFromInline var units: Int

        @inlinable
        init(stamp: OwnerStamp, acquiredBy: TaskID, serial: UInt64, ancestry: TaskAncestry, holderAddress: UInt,
             units: Int = 1) {
            self.stamp = stamp
            self.acquiredBy = acquiredBy
            self.serial = serial
            self.ancestry = ancestry
            self.holderAddress = holderAddress
            self.object = 0
            self.units = units
        }

        /// Whether the slot holds a live record.
        @inlinable var isLive: Bool { serial != 0 }
    }

    /// The slab's memory: entries, and a stack of free slot numbers. Not `Array`s: writing a record
    /// into `[Entry?]` cost about 150 ns per acquire+release here (uniqueness checks and element
    /// copies through value witnesses on every store). Raw storage owned by one class instance, only
    /// ever touched under the primitive's lock, writes in place. The lock is also why the properties
    /// opt out of dynamic exclusivity checks, which cost another 40–50 ns per acquire+release.
    @usableFromInline
    final class Storage {
        @usableFromInline @exclusivity(unchecked) var entries: UnsafeMutablePointer<Entry>
        @usableFromInline @exclusivity(unchecked) var freeSlots: UnsafeMutablePointer<Int32>
        @usableFromInline @exclusivity(unchecked) var capacity: Int
        /// Slots ever handed out (the high-water mark); `entries[0..<used]` are initialised.
        @usableFromInline @exclusivity(unchecked) var used = 0
        @usableFromInline @exclusivity(unchecked) var freeCount = 0

        /// Acquisition sites whose holdings have been released, claimed or handed off by a task
        /// other than the one holding them: the sign of code that hands holdings on (a `Task {}` that
        /// releases, a worker fed through a stream). Bounded, and touched only when a holding changes
        /// hands. (Kept here, not in the table's value, so the state machines stay plain values.)
        @usableFromInline @exclusivity(unchecked) var handOffSites: Set<StaticCallSite> = []

        /// Where a task's parent pointer is (0: the ledger does not read the runtime, or cannot).
        @usableFromInline let parentOffset: Int

        @usableFromInline
        init(parentOffset: Int) {
            self.parentOffset = parentOffset
            capacity = 4
            entries = .allocate(capacity: capacity)
            freeSlots = .allocate(capacity: capacity)
        }

        @usableFromInline @inline(never)
        func grow() {
            let newCapacity = capacity * 2
            let newEntries = UnsafeMutablePointer<Entry>.allocate(capacity: newCapacity)
            newEntries.moveInitialize(from: entries, count: used)
            entries.deallocate()
            entries = newEntries
            let newFree = UnsafeMutablePointer<Int32>.allocate(capacity: newCapacity)
            newFree.moveInitialize(from: freeSlots, count: freeCount)
            freeSlots.deallocate()
            freeSlots = newFree
            capacity = newCapacity
        }

        deinit {
            // Balance the node retains of holdings still recorded (their owners were dropped
            // without release only if the primitive itself is going away).
            for index in 0..<used where entries[index].isLive {
                entries[index].stamp.nodeReference?.release()
            }
            entries.deallocate()
            freeSlots.deallocate()
        }
    }

    @usableFromInline let storage: Storage
    @usableFromInline var serial: UInt64 = 0
    static let handOffSiteLimit = 4096
    /// Live holdings.
    @inlinable var count: Int { storage.used - storage.freeCount }

    /// A table whose holdings read their tasks' ancestry with `parentOffset` (0: never).
    @inlinable
    init(parentOffset: Int) {
        storage = Storage(parentOffset: parentOffset)
    }

    /// Records a holding for `stamp`'s task, whose task object is at `taskAddress` — the running task
    /// (`currentTaskAddress()`), or a waiter being handed the holding while it is still queued (its
    /// continuation's task). Either way that task and its ancestors are alive, so its ancestry is read
    /// now.
    @inlinable @inline(__always)
    mutating func insert(_ stamp: OwnerStamp, taskAddress: UInt, checked: Bool = false, units: Int = 1) -> Int32 {
        serial &+= 1
        let slot: Int32
        if storage.freeCount > 0 {
            storage.freeCount &-= 1
            slot = storage.freeSlots[storage.freeCount]
        } else {
            if storage.used == storage.capacity { storage.grow() }
            slot = Int32(truncatingIfNeeded: storage.used)
            storage.used &+= 1
        }
        _ = stamp.nodeReference?.retain()
        // An address taken from a waiter's continuation is read only once it shows the stamp's id.
        let address = checked ? Self.verified(taskAddress, is: stamp.task) : taskAddress
        (storage.entries + Int(slot)).initialize(
            to: Entry(stamp: stamp, acquiredBy: stamp.task, serial: serial,
                      ancestry: RuntimeTaskLayout.ancestry(ofTaskAt: address, parentOffset: storage.parentOffset),
                      holderAddress: storage.parentOffset == 0 ? 0 : address, units: units))
        return slot
    }

    /// `address` if the task object there has id `task`, 0 otherwise.
    @usableFromInline
    static func verified(_ address: UInt, is task: TaskID) -> UInt {
        guard let object = OpaquePointer(bitPattern: address) else { return 0 }
        return TaskID(rawValue: _futurelockJobTaskID(object)) == task ? address : 0
    }

    /// Records the address of the holding object of `slot`.
    @inlinable
    mutating func setObject(_ slot: Int32, _ address: UInt) {
        guard isLive(slot) else { return }
        storage.entries[Int(slot)].object = address
    }

    @inlinable @inline(__always)
    func isLive(_ slot: Int32) -> Bool {
        slot >= 0 && Int(slot) < storage.used && storage.entries[Int(slot)].isLive
    }

    /// Clears `slot` and returns what it held (its node is no longer retained by the table: use the
    /// returned entry's node only while the caller knows it is alive, or not at all).
    @discardableResult @inlinable
    mutating func remove(_ slot: Int32) -> Entry? {
        guard isLive(slot) else { return nil }
        let entry = storage.entries[Int(slot)]
        discard(slot)
        return entry
    }

    /// Clears `slot` without handing the entry back.
    @inlinable @inline(__always)
    mutating func discard(_ slot: Int32) {
        guard isLive(slot) else { return }
        let index = Int(slot)
        storage.entries[index].serial = 0
        // The dead entry keeps its stale node pointer; nothing reads a slot whose serial is 0.
        storage.entries[index].stamp.nodeReference?.release()
        storage.freeSlots[storage.freeCount] = slot
        storage.freeCount &+= 1
    }

    /// The task recorded as holding `slot`, without copying its whole record.
    @inlinable
    func holderTask(_ slot: Int32) -> TaskID? {
        isLive(slot) ? storage.entries[Int(slot)].stamp.task : nil
    }

    subscript(slot: Int32) -> Entry? {
        isLive(slot) ? storage.entries[Int(slot)] : nil
    }

    /// Notes who releases `slot` (before the release): a task other than the holder marks the
    /// holding's acquisition site as one that hands holdings on.
    @inlinable @inline(__always)
    mutating func noteRelease(_ slot: Int32, by task: TaskID) {
        guard task != .none, isLive(slot) else { return }
        let stamp = storage.entries[Int(slot)].stamp
        if stamp.task != task { noteHandOff(at: stamp.site) }
    }

    @usableFromInline
    mutating func noteHandOff(at site: StaticCallSite) {
        if storage.handOffSites.count < Self.handOffSiteLimit { storage.handOffSites.insert(site) }
    }

    /// Whether holdings acquired at `site` have changed hands before.
    func handsOff(_ site: StaticCallSite) -> Bool {
        !storage.handOffSites.isEmpty && storage.handOffSites.contains(site)
    }

    /// Records that `task` (running in `node`) now owns the holding; returns the previous owner when
    /// it changed.
    mutating func transfer(_ slot: Int32, to task: TaskID, node: ScopeNode?) -> TaskID? {
        guard isLive(slot) else { return nil }
        let index = Int(slot)
        let previous = storage.entries[index].stamp.task
        guard previous != task else { return nil }
        noteHandOff(at: storage.entries[index].stamp.site)
        let newNode = node.map { Unmanaged.passRetained($0) }
        storage.entries[index].stamp.nodeReference?.release()
        storage.entries[index].stamp.task = task
        storage.entries[index].stamp.nodeReference = newNode
        // A transfer to a task is made by that task itself (a claim, or a release by another task), so
        // its ancestry can be read now; one in transit has none.
        let address = task == .none ? 0 : Self.verified(currentTaskAddress(), is: task)
        storage.entries[index].ancestry = RuntimeTaskLayout.ancestry(ofTaskAt: address, parentOffset: storage.parentOffset)
        storage.entries[index].holderAddress = storage.parentOffset == 0 ? 0 : address
        storage.entries[index].stamp.isPinned = false
        return previous
    }

    /// Visits every live holding. The entries' nodes are retained by the table for the duration.
    func forEach(_ body: (Entry) -> Void) {
        for index in 0..<storage.used where storage.entries[index].isLive {
            body(storage.entries[index])
        }
    }
}

/// The address of a holding object, as its record keeps it.
@inlinable
func objectAddress(_ object: AnyObject) -> UInt {
    UInt(bitPattern: Unmanaged.passUnretained(object).toOpaque())
}
