// Cheap capture of the current thread's return addresses.
//
// Acquisition sites are recorded on the primitives' paths, so capture must not symbolicate, allocate
// strings or take locks: it copies raw return addresses (glibc's `backtrace()`, which unwinds with the
// .eh_frame tables every Swift binary has) and leaves naming them to `Symbolicator`, later and cached.

import CLibdw
import Glibc

/// Returns the return addresses of the current thread's stack, innermost first, starting with the
/// caller of this function (this function's own frame is not included).
///
/// Pass the result to ``Symbolicator/symbolicate(backtrace:)`` or, one by one, to
/// ``Symbolicator/symbolicate(returnAddress:)``. The first call in a process may be slower because glibc
/// loads its unwinder lazily.
///
/// - Parameter maxFrames: the most addresses to return.
@inline(never)
public func captureBacktrace(maxFrames: Int = 32) -> [UInt] {
    guard maxFrames > 0 else { return [] }
    // One extra slot for this function's own frame, which is dropped. No closure-taking helpers here:
    // in a debug build a closure is a frame of its own and would shift what gets dropped.
    let capacity = maxFrames + 1
    let buffer = UnsafeMutablePointer<UnsafeMutableRawPointer?>.allocate(capacity: capacity)
    defer { buffer.deallocate() }
    let count = Int(backtrace(buffer, Int32(capacity)))
    guard count > 1 else { return [] }
    return UnsafeBufferPointer(start: buffer + 1, count: count - 1).map { UInt(bitPattern: $0) }
}
