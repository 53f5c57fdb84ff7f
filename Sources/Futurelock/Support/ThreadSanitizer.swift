import CFuturelockSanitizer

/// ThreadSanitizer annotations for the one hand-off `Lock` does not cover. Like `Lock`'s, they cost a
/// compare and a branch never taken in a build without the sanitizer.
@usableFromInline
package enum ThreadSanitizer {
    /// Whether the process runs under ThreadSanitizer.
    @inlinable
    package static var isActive: Bool { fl_tsan_is_linked() != 0 }

    /// Call in the waiting task right after a continuation wait returns.
    ///
    /// When a continuation is resumed, the concurrency runtime announces a release keyed by the task,
    /// and when the task is next run by its executor, the matching acquire. But when the resume comes
    /// before the task has reached its `await` (the resumer was quick, or the waiter was still inside
    /// the continuation's closure), the task just carries on, on its own thread, and nothing tells the
    /// sanitizer: what the resumer wrote before resuming — the permit, lease or message it handed over
    /// — then looks unordered with what the waiter does next, a false race. This is that missing
    /// acquire, with the runtime's key (the address of the task object).
    @inlinable @inline(__always)
    package static func acquireAfterResume() {
        guard fl_tsan_is_linked() != 0 else { return }
        acquireCurrentTask()
    }

    @usableFromInline
    static func acquireCurrentTask() {
        withUnsafeCurrentTask { task in
            // `UnsafeCurrentTask` is a single reference to the task object.
            guard let task else { return }
            fl_tsan_acquire(unsafeBitCast(task, to: UnsafeMutableRawPointer.self))
        }
    }
}
