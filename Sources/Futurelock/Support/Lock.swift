import CFuturelockSanitizer
import Synchronization

/// A `Synchronization.Mutex` that ThreadSanitizer can see.
///
/// On Linux `Mutex` is a futex: an uncontended lock or unlock is one atomic compare-and-swap, which
/// ThreadSanitizer understands, but a contended one is finished by the kernel, which it does not. Under
/// TSan the state a plain `Mutex` guards is then reported as racing whenever two threads really
/// compete for it. `Lock` has the same `withLock` as `Mutex` and tells the sanitizer what happened:
/// after taking the mutex it announces an acquire, and before giving it up a release, both keyed by
/// the mutex's own address.
///
/// In a build without ThreadSanitizer both announcements are a compare of a null weak symbol and a
/// branch never taken (see `CFuturelockSanitizer.h`), so `Lock` costs what `Mutex` costs.
///
/// Like `Mutex`, a `Lock` is `~Copyable` and only ever borrowed in place (a stored `let` of a class, a
/// global, a static, a local), so its address — the sanitizer's key — stays the same while it lives.
/// Lock with it, not with `Mutex`, everywhere in this package, tests included: the test command's
/// ThreadSanitizer pass can report the state behind a bare `Mutex` as racing.
@usableFromInline
package struct Lock<Value: ~Copyable>: ~Copyable, Sendable {
    @usableFromInline let mutex: Mutex<Value>

    @inlinable
    package init(_ initialValue: consuming sending Value) {
        mutex = Mutex(initialValue)
    }

    /// Runs `body` with exclusive access to the value, as `Mutex.withLock` does.
    @inlinable @inline(__always)
    package borrowing func withLock<Result: ~Copyable, E: Error>(
        _ body: (inout sending Value) throws(E) -> sending Result
    ) throws(E) -> sending Result {
        // `self` is borrowed in place (a `Mutex` is never moved or copied), so this is the address of
        // the mutex inside its owner, the same for every thread. Taken before locking and without
        // touching the value, so the sanitizer sees no access to it outside the lock.
        let key = withUnsafePointer(to: self) { UnsafeMutableRawPointer(mutating: $0) }
        return try mutex.withLock { (value: inout sending Value) throws(E) -> sending Result in
            fl_tsan_acquire(key)
            defer { fl_tsan_release(key) }
            return try body(&value)
        }
    }
}
