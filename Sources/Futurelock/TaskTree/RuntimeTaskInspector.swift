// Reads the structured children of a task that is suspended in a wait of an instrumented primitive,
// and proves which holdings sit, unshared, in the results those children have parked.
//
// When it is sound. The reader runs under the lock of the primitive the task waits on, after checking
// that the task is still queued there and that the runtime marks it suspended. Such a task cannot run
// until that primitive resumes it, which needs the lock — so it cannot consume a group result, leave a
// task group, or finish an `async let` meanwhile. That is what keeps the memory read here alive:
// - the task's status records (its task groups and `async let`s) are its own and stay put;
// - a child of an (accumulating) task group stays linked to the group, and allocated, until the parent
//   consumes it with `next()` or leaves the group — both need the parent to run;
// - an `async let` child lives in its parent's frame until the parent awaits or leaves it.
// A discarding group frees each child the moment it completes, from the child's own thread, so its
// children are never read: their results are `Void` anyway and cannot carry a holding. The runtime
// does not mark a group as discarding except through the group object's type, so the reader only
// walks groups whose type it has seen to be an accumulating group (learned by the self-test).
//
// The proof of a parked holding. The snapshot knows the address of every live holding object of the
// resource (a `Permit`, `SendPermit` or `Lease` cannot be freed while its entry is live and the lock is
// held: its deinitialiser needs the lock). A finished child's result is scanned, as raw words, for those
// addresses; for each one found C times, the object's strong count is read before the result is
// copied, while the copy (made by the result type's value witnesses, which retain exactly the
// references the value holds directly) is alive, and after it is gone. Only if the counts read C, 2C
// and C — so the result holds C references, and they are all the references there are — with no
// unowned reference and no weak one (a side table), is the holding proved parked: nothing but that
// result can ever release it. A word that merely equals the address (an integer, a stale byte) is not
// retained by the copy and fails the test; so does a holding reached through another object, an
// array or an indirect payload, whose copy retains the box, not the holding. No reflection and no
// user code runs: a copy and its destruction only retain and release, and the copy can never drop the
// last reference.
//
// One caveat on "no user code": a result type imported from C++ with a copy constructor or destructor
// of its own would run that code here, under the lock; Swift and C types only retain and release.
//
// What it cannot see: references kept as `Unmanaged` or `unowned(unsafe)`, which the counts do not
// include, and a result that carries an object's address without owning it.

import Synchronization

/// How a task stands, as the runtime's status flags (and its future's status) say.
public enum RuntimeTaskState: String, Sendable, Hashable, Codable, CustomStringConvertible {
    /// On a thread right now.
    case running
    /// Ready to run, waiting for an executor.
    case enqueued
    /// Suspended (awaiting something).
    case suspended
    /// Completed with a value that has not been consumed by the parent yet.
    case finished
    /// Completed by throwing.
    case failed

    public var description: String { rawValue }
}

/// One structured child of a suspended waiter.
struct InspectedChild: Sendable {
    var id: TaskID
    var kind: RuntimeTaskKind
    var state: RuntimeTaskState
    /// Holding objects (address → references) proved to sit only in its result.
    var parked: [UInt: Int]
    /// For a `finished` child: its result's type holds no references at all (`Void`, plain values),
    /// so nothing can be parked in it.
    var resultHoldsNoReferences = false
}

/// A permit, send slot or lease object, as a `BoundedChannel` sees one it carries.
protocol RecordedHolding: AnyObject {
    /// Records that the holding is on its way to a task not known yet (sent through a channel).
    func handOff(fileID: StaticString, line: UInt, function: StaticString)
    /// Records that the calling task owns the holding now (received from a channel).
    func claim(fileID: StaticString, line: UInt, function: StaticString)
}

enum RuntimeTaskInspector {
    // Offsets for layout version 1 on 64-bit platforms (checked by `RuntimeTaskLayout` and the
    // self-test before anything here is used).
    static let statusFlagsOffset = 96
    static let statusRecordOffset = 104
    static let runningFlag: UInt32 = 0x800
    static let enqueuedFlag: UInt32 = 0x1000
    static let completeFlag: UInt32 = 0x2000
    static let dependencyFlag: UInt32 = 0x4000

    static let recordParentOffset = 8
    static let asyncLetRecordKind: UInt8 = 1
    static let taskGroupRecordKind: UInt8 = 2
    static let highestKnownRecordKind: UInt8 = 6
    static let recordFirstChildOffset = 16
    static let asyncLetTaskAndFlagsOffset = 24
    /// A group's status record sits one word into the group object.
    static let groupRecordOffsetInGroup = 8

    static let childParentOffset = 208
    static let childNextOffset = 216
    static let groupChildGroupOffset = 224
    static let futureFragmentOffset = 224
    static let groupChildFragmentSize = 8
    static let futureResultTypeOffset = 8
    static let futureStorageOffset = 24

    /// Bounds on the walk, so a corrupted or unexpected structure cannot make it loop for long.
    static let maximumRecords = 1024
    static let maximumChildren = 10_000

    enum Outcome {
        /// The task is not (yet) suspended; nothing was read.
        case notSuspended
        /// A status record of a kind this reader does not know: the layout differs.
        case unknownLayout(String)
        case children([InspectedChild])
    }

    /// Reads the children of `task` (id `id`), which must be queued in a wait of a primitive whose
    /// lock the caller holds. `groupType` is the group-object type word of accumulating task groups.
    static func inspect(task address: UInt, id: TaskID, groupType: UInt, lookingFor objects: Set<UInt>) -> Outcome {
        guard let task = UnsafeRawPointer(bitPattern: address) else { return .notSuspended }
        guard TaskID(rawValue: _futurelockJobTaskID(OpaquePointer(task))) == id else {
            return .unknownLayout("the waiting task's id does not match its record")
        }
        let flags = task.atomicLoadUInt32(at: statusFlagsOffset)
        guard flags & (runningFlag | enqueuedFlag | completeFlag) == 0, flags & dependencyFlag != 0 else {
            return .notSuspended
        }
        var children: [InspectedChild] = []
        var record = task.load(fromByteOffset: statusRecordOffset, as: UnsafeRawPointer?.self)
        var visited = 0
        while let current = record, visited < maximumRecords {
            visited += 1
            let kind = current.load(as: UInt8.self)
            guard kind <= highestKnownRecordKind else {
                return .unknownLayout("status record kind \(kind) is not one the reader knows")
            }
            switch kind {
            case asyncLetRecordKind:
                guard let child = current.load(fromByteOffset: recordFirstChildOffset, as: UnsafeRawPointer?.self) else { break }
                let tagged = current.load(fromByteOffset: asyncLetTaskAndFlagsOffset, as: UInt.self)
                guard tagged & ~0xF == UInt(bitPattern: child) else {
                    return .unknownLayout("an async let record does not point at its task")
                }
                guard let inspected = inspectChild(child, parent: task, group: nil, objects: objects) else {
                    return .unknownLayout("an async let child does not point back at its parent")
                }
                children.append(inspected)
            case taskGroupRecordKind:
                let group = current - groupRecordOffsetInGroup
                guard group.load(as: UInt.self) == groupType else { break }  // discarding, or unknown
                var next = current.load(fromByteOffset: recordFirstChildOffset, as: UnsafeRawPointer?.self)
                var count = 0
                while let child = next, count < maximumChildren {
                    count += 1
                    guard let inspected = inspectChild(child, parent: task, group: group, objects: objects) else {
                        return .unknownLayout("a task-group child does not point back at its parent and group")
                    }
                    children.append(inspected)
                    next = child.load(fromByteOffset: childNextOffset, as: UnsafeRawPointer?.self)
                }
            default:
                break
            }
            record = current.load(fromByteOffset: recordParentOffset, as: UnsafeRawPointer?.self)
        }
        return .children(children)
    }

    /// One child, checked to be linked to `parent` (and `group`); `nil` when the links disagree.
    private static func inspectChild(_ child: UnsafeRawPointer, parent: UnsafeRawPointer,
                                     group: UnsafeRawPointer?, objects: Set<UInt>) -> InspectedChild? {
        guard child.load(fromByteOffset: childParentOffset, as: UnsafeRawPointer?.self) == parent else { return nil }
        let jobFlags = child.load(fromByteOffset: RuntimeTaskLayout.flagsOffset, as: UInt32.self)
        let kind = RuntimeTaskKind(flags: jobFlags)
        var fragment = futureFragmentOffset
        if let group {
            guard kind == .groupChild,
                  child.load(fromByteOffset: groupChildGroupOffset, as: UnsafeRawPointer?.self) == group else { return nil }
            fragment += groupChildFragmentSize
        } else {
            guard kind == .asyncLet else { return nil }
        }
        let id = TaskID(rawValue: _futurelockJobTaskID(OpaquePointer(child)))
        // The future's status is written, with release ordering, after its result.
        let futureStatus = child.atomicLoadUInt(at: fragment) & 3
        let state: RuntimeTaskState
        switch futureStatus {
        case 1: state = .finished
        case 2: state = .failed
        default:
            let flags = child.atomicLoadUInt32(at: statusFlagsOffset)
            if flags & runningFlag != 0 {
                state = .running
            } else if flags & enqueuedFlag != 0 {
                state = .enqueued
            } else {
                state = .suspended
            }
        }
        var inspected = InspectedChild(id: id, kind: kind, state: state, parked: [:])
        if state == .finished,
           let metadata = child.load(fromByteOffset: fragment + futureResultTypeOffset, as: UnsafeRawPointer?.self) {
            let type = unsafeBitCast(metadata, to: Any.Type.self)
            inspected.resultHoldsNoReferences = ParkedResultSearch.holdsNoReferences(type)
            if !inspected.resultHoldsNoReferences, !objects.isEmpty {
                inspected.parked = ParkedResultSearch.parked(objects, inResultOf: type, fragment: child + fragment)
            }
        }
        return inspected
    }

    /// The group-object type word of the innermost task group of the *current* task, read from its
    /// own status records (the self-test learns accumulating and discarding groups' this way).
    static func innermostGroupTypeOfCurrentTask() -> UInt? {
        guard let task = currentTaskFunction?() else { return nil }
        var record = UnsafeRawPointer(task).load(fromByteOffset: statusRecordOffset, as: UnsafeRawPointer?.self)
        var visited = 0
        while let current = record, visited < maximumRecords {
            visited += 1
            if current.load(as: UInt8.self) == taskGroupRecordKind {
                return (current - groupRecordOffsetInGroup).load(as: UInt.self)
            }
            record = current.load(fromByteOffset: recordParentOffset, as: UnsafeRawPointer?.self)
        }
        return nil
    }
}

/// Proves which holding objects sit only in a parked result (see the file header).
enum ParkedResultSearch {
    /// Whether values of `type` contain no references (empty or plain data).
    static func holdsNoReferences(_ type: Any.Type) -> Bool {
        func check<Value>(_: Value.Type) -> Bool { MemoryLayout<Value>.size == 0 || _isPOD(Value.self) }
        return _openExistential(type, do: check)
    }

    /// The objects among `objects` that the result of the future fragment at `fragment` (of result
    /// type `type`) alone holds, with how many references it holds to each.
    static func parked(_ objects: Set<UInt>, inResultOf type: Any.Type, fragment: UnsafeRawPointer) -> [UInt: Int] {
        func search<Result>(_: Result.Type) -> [UInt: Int] {
            // The runtime aligns the result's absolute address, not its offset in the fragment.
            let alignment = UInt(MemoryLayout<Result>.alignment)
            let start = UInt(bitPattern: fragment) &+ UInt(RuntimeTaskInspector.futureStorageOffset)
            guard let storage = UnsafeRawPointer(bitPattern: (start &+ alignment &- 1) & ~(alignment &- 1)) else {
                return [:]
            }
            let size = MemoryLayout<Result>.size
            // A type that holds a reference is word-aligned, so its references sit at word offsets.
            guard size >= 8, alignment >= 8 else { return [:] }
            var counts: [UInt: UInt64] = [:]
            for offset in stride(from: 0, through: size - 8, by: 8) {
                let word = storage.load(fromByteOffset: offset, as: UInt.self)
                if objects.contains(word) { counts[word, default: 0] += 1 }
            }
            guard !counts.isEmpty else { return [:] }
            let before = Dictionary(uniqueKeysWithValues: counts.keys.map { ($0, ReferenceCounts.read(objectAt: $0)) })
            let during = whileCopied(Result.self, at: storage, reading: Array(counts.keys))
            var result: [UInt: Int] = [:]
            for (object, occurrences) in counts {
                let after = ReferenceCounts.read(objectAt: object)
                let sole = ReferenceCounts(strong: occurrences, unowned: 1)
                if before[object] == sole, after == sole, during[object]?.strong == 2 * occurrences,
                   during[object]?.unowned == 1 {
                    result[object] = Int(occurrences)
                }
            }
            return result
        }
        return _openExistential(type, do: search)
    }

    /// Copies the result, reads the counts of `objects` while the copy holds its references, and
    /// destroys the copy. Not inlined, so the copy is gone when it returns.
    @inline(never)
    static func whileCopied<Result>(_: Result.Type, at storage: UnsafeRawPointer,
                                    reading objects: [UInt]) -> [UInt: ReferenceCounts] {
        let copy = storage.load(as: Result.self)
        return withExtendedLifetime(copy) {
            Dictionary(uniqueKeysWithValues: objects.map { ($0, ReferenceCounts.read(objectAt: $0)) })
        }
    }
}

extension UnsafeRawPointer {
    /// A 32-bit load with acquire ordering from memory another thread writes atomically.
    func atomicLoadUInt32(at offset: Int) -> UInt32 {
        (self + offset).assumingMemoryBound(to: Atomic<UInt32>.self).pointee.load(ordering: .acquiring)
    }

    /// A word load with acquire ordering from memory another thread writes atomically.
    func atomicLoadUInt(at offset: Int) -> UInt {
        (self + offset).assumingMemoryBound(to: Atomic<UInt>.self).pointee.load(ordering: .acquiring)
    }
}
