#if canImport(Glibc)
import Glibc
#endif
import Synchronization

/// Reads of memory that may have been freed meanwhile, without the risk of a crash.
///
/// Only the frame scanner's glance at a task object that may be gone needs this. The bytes are written
/// into a pipe the process owns and read back: the kernel copies them, and an address that is no longer
/// mapped fails with `EFAULT` instead of a segmentation fault. (`process_vm_readv` would do the same in
/// one call, but sandboxes that filter system calls, such as systemd's service filter, deny it — some
/// by killing the process.) A read costs two system calls, which only the watchdog pays, for a handful
/// of words.
enum SafeMemory {
    #if os(Linux)
    private static let pipe: Lock<(read: Int32, write: Int32)?> = {
        var ends: [Int32] = [0, 0]
        guard Glibc.pipe(&ends) == 0 else { return Lock(nil) }
        for end in ends { _ = fcntl(end, F_SETFD, FD_CLOEXEC) }
        return Lock((ends[0], ends[1]))
    }()

    /// Whether reads can be made at all.
    static var isAvailable: Bool { pipe.withLock { $0 != nil } }

    /// The 8-byte word at `address`, or `nil` if it cannot be read.
    static func word(at address: UInt) -> UInt64? {
        guard address != 0, address % 8 == 0, let source = UnsafeRawPointer(bitPattern: address) else { return nil }
        return pipe.withLock { ends -> UInt64? in
            guard let pair = ends else { return nil }
            guard write(pair.write, source, 8) == 8 else { return nil }
            var value: UInt64 = 0
            guard read(pair.read, &value, 8) == 8 else {
                // Bytes left in the pipe would answer the next read: stop using it.
                close(pair.read)
                close(pair.write)
                ends = nil
                return nil
            }
            return value
        }
    }
    #else
    static var isAvailable: Bool { false }
    static func word(at address: UInt) -> UInt64? { nil }
    #endif
}

/// The strong and unowned counts of a Swift object, decoded from its inline reference-count word
/// (64-bit layout: bit 0 pure-Swift deallocation, bits 1–31 unowned count, bit 32 deinitialising,
/// bits 33–62 strong count minus one, bit 63 "the counts live in a side table").
struct ReferenceCounts: Equatable {
    /// Strong references.
    var strong: UInt64 = 0
    /// Unowned references, plus one held on behalf of all the strong ones.
    var unowned: UInt64 = 0

    /// Reads the counts of the object at `address`, which the caller knows to be alive. Zero counts
    /// when the object has a side table (it has weak references, or its counts overflowed) or is being
    /// deinitialised — in all of which no ownership can be proved from the counts.
    static func read(objectAt address: UInt) -> ReferenceCounts {
        guard MemoryLayout<UnsafeRawPointer>.size == 8,
              let object = UnsafeRawPointer(bitPattern: address) else { return ReferenceCounts() }
        let word = object.atomicLoadUInt(at: 8)
        guard word & (1 << 63) == 0, word & (1 << 32) == 0 else { return ReferenceCounts() }
        return ReferenceCounts(strong: UInt64((word >> 33) & 0x3FFF_FFFF) + 1,
                               unowned: UInt64((word >> 1) & 0x7FFF_FFFF))
    }
}
