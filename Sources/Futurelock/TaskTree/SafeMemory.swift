#if canImport(Glibc)
import Glibc
#endif

/// Reads of memory that may have been freed meanwhile, without the risk of a crash.
///
/// The watchdog reads a holding object's reference count to prove that nothing but a parked child
/// result refers to it. Until that proof is complete it does not know the object is alive, so it reads
/// through `process_vm_readv` on its own process: the kernel copies the bytes, and an address that is
/// no longer mapped fails with `EFAULT` instead of a segmentation fault. A read costs a system call,
/// which only the watchdog pays, and only for the few holdings a finding rests on.
enum SafeMemory {
    #if os(Linux)
    private typealias ReadFunction = @convention(c) (
        pid_t, UnsafePointer<iovec>?, UInt, UnsafePointer<iovec>?, UInt, UInt) -> Int

    /// `process_vm_readv`, looked up once (the Glibc module does not export `<sys/uio.h>`'s).
    private static let read: ReadFunction? = {
        guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "process_vm_readv") else { return nil }
        return unsafeBitCast(symbol, to: ReadFunction.self)
    }()

    private static let pid = getpid()

    /// Whether reads can be made at all.
    static var isAvailable: Bool { read != nil }

    /// The 8-byte word at `address`, or `nil` if it cannot be read.
    static func word(at address: UInt) -> UInt64? {
        guard let read, address != 0, address % 8 == 0 else { return nil }
        var value: UInt64 = 0
        let copied = withUnsafeMutablePointer(to: &value) { destination -> Int in
            var local = iovec(iov_base: UnsafeMutableRawPointer(destination), iov_len: 8)
            var remote = iovec(iov_base: UnsafeMutableRawPointer(bitPattern: address), iov_len: 8)
            return read(pid, &local, 1, &remote, 1, 0)
        }
        return copied == 8 ? value : nil
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
    var strong: UInt64
    /// Unowned references, plus one held on behalf of all the strong ones.
    var unowned: UInt64

    /// Reads the counts of the object at `address`. `nil` when the word cannot be read, the object
    /// has a side table (it has weak references, or its counts overflowed), or it is being
    /// deinitialised — in all of which no ownership can be proved from the counts.
    static func read(objectAt address: UInt) -> ReferenceCounts? {
        guard MemoryLayout<UnsafeRawPointer>.size == 8,
              let word = SafeMemory.word(at: address &+ 8) else { return nil }
        guard word & (1 << 63) == 0, word & (1 << 32) == 0 else { return nil }
        return ReferenceCounts(strong: ((word >> 33) & 0x3FFF_FFFF) + 1,
                               unowned: (word >> 1) & 0x7FFF_FFFF)
    }
}
