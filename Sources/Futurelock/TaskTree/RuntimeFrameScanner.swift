// Reads the live async frames of a suspended task, to find references to another task's object.
//
// An unstructured `Task {}` is not linked to the task that created it; the only tie is the `Task`
// handle the creator keeps, usually in a local variable or a struct field of its frame. A task's
// frames live in its task allocator: a chain of slabs, each with a header and a used extent that grows
// and shrinks like a stack. While the task is suspended (in a wait whose lock the caller holds) that
// memory does not change, so its words can be read and compared with the address of the task object
// that holds a resource.
//
// A match is evidence, not proof. Frames keep stale words: a handle the code no longer uses can still
// sit in a spill slot, or in a frame that reused the memory of an earlier one. So a match only ever
// supports a `suspected` finding, and the finding says so.
//
// Layout (layout version 1, 64-bit): the allocator sits at byte 112 of the task — the last allocation
// (8 bytes), the first slab (8), flags (4). A slab starts with the slab metadata pointer the runtime
// exports for debuggers (`_swift_concurrency_debug_asyncTaskSlabMetadata`), the next slab (8), its
// capacity (4) and used bytes (4), then, from byte 32, the data. Every slab is checked to carry that
// metadata pointer before its data is read.

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

enum RuntimeFrameScanner {
    static let firstSlabOffset = 120
    static let slabNextOffset = 8
    static let slabCapacityOffset = 16
    static let slabUsedOffset = 20
    static let slabDataOffset = 32
    static let maximumSlabs = 4096
    /// Waiters scanned per resource per snapshot, head first: a task blocked on itself is usually near
    /// the head, and scanning 200,000 waiters under a primitive's lock would stall the service.
    static let waitersScannedPerResource = 64
    /// Bytes of frames read per waiter, and per snapshot: bounds on the work done under a lock.
    static let bytesScannedPerWaiter = 64 * 1024
    static let bytesScannedPerSnapshot = 4 * 1024 * 1024

    private static func exported(_ name: String) -> UInt? {
        guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), name) else { return nil }
        let value = UInt(bitPattern: symbol.load(as: UnsafeRawPointer?.self))
        return value == 0 ? nil : value
    }

    /// The metadata pointer every slab of a task allocator starts with.
    static let slabMetadata: UInt? = exported("_swift_concurrency_debug_asyncTaskSlabMetadata")
    /// The metadata pointer every task object starts with.
    static let taskMetadata: UInt? = exported("_swift_concurrency_debug_asyncTaskMetadata")

    /// The addresses among `targets` that a word of `task`'s live frames equals; `nil` when the frames
    /// could not be read (not suspended, or a slab without the expected header).
    static func references(in task: UnsafeRawPointer, to targets: Set<UInt>, budget: inout Int) -> Set<UInt>? {
        guard let slabMetadata, !targets.isEmpty else { return nil }
        let flags = task.atomicLoadUInt32(at: RuntimeTaskInspector.statusFlagsOffset)
        let busy = RuntimeTaskInspector.runningFlag | RuntimeTaskInspector.enqueuedFlag | RuntimeTaskInspector.completeFlag
        guard flags & busy == 0 else { return nil }
        var found = Set<UInt>()
        var next = task.load(fromByteOffset: firstSlabOffset, as: UnsafeRawPointer?.self)
        var slabs = 0
        let limit = min(budget, bytesScannedPerWaiter)
        var allowance = limit
        defer { budget -= limit - allowance }
        while let slab = next, slabs < maximumSlabs, allowance > 0 {
            slabs += 1
            guard slab.load(as: UInt.self) == slabMetadata else { return nil }
            let capacity = Int(slab.load(fromByteOffset: slabCapacityOffset, as: UInt32.self))
            let used = Int(slab.load(fromByteOffset: slabUsedOffset, as: UInt32.self))
            guard used <= capacity else { return nil }
            let data = slab + slabDataOffset
            let scanned = min(used - used % 8, allowance - allowance % 8)
            allowance -= scanned
            for offset in stride(from: 0, to: scanned, by: 8) {
                let word = data.load(fromByteOffset: offset, as: UInt.self)
                if targets.contains(word) { found.insert(word) }
            }
            next = slab.load(fromByteOffset: slabNextOffset, as: UnsafeRawPointer?.self)
        }
        return found
    }

    /// What a task object at `address` seems to be doing, read without trusting that it is alive:
    /// `nil` unless the memory there still looks like the task with `id` (its type word and id).
    static func peekState(ofTaskAt address: UInt, id: TaskID) -> RuntimeTaskState? {
        guard let taskMetadata, address % 16 == 0,
              SafeMemory.word(at: address).map({ UInt($0) }) == taskMetadata,
              let flagsAndLowID = SafeMemory.word(at: address &+ UInt(RuntimeTaskLayout.flagsOffset)),
              let highID = SafeMemory.word(at: address &+ 144),
              flagsAndLowID >> 32 == id.rawValue & 0xFFFF_FFFF, highID & 0xFFFF_FFFF == id.rawValue >> 32,
              let status = SafeMemory.word(at: address &+ UInt(RuntimeTaskInspector.statusFlagsOffset)) else {
            return nil
        }
        let flags = UInt32(truncatingIfNeeded: status)
        if flags & RuntimeTaskInspector.completeFlag != 0 { return .finished }
        if flags & RuntimeTaskInspector.runningFlag != 0 { return .running }
        if flags & RuntimeTaskInspector.enqueuedFlag != 0 { return .enqueued }
        return .suspended
    }
}
