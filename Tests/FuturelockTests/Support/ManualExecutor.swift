import Synchronization
@testable import Futurelock

/// A task executor that runs nothing until the test says so: the deterministic event loop the tests
/// use to stop a task between "its continuation was resumed" and "it ran again".
final class ManualExecutor: TaskExecutor, @unchecked Sendable {
    // `jobs` is only touched under its mutex; UnownedJob is a plain reference to a runtime job.
    private let jobs = Lock<[UnownedJob]>([])

    func enqueue(_ job: consuming ExecutorJob) {
        let unowned = UnownedJob(job)
        jobs.withLock { $0.append(unowned) }
    }

    /// Runs queued jobs (and the jobs they enqueue) until none is left; returns how many ran.
    @discardableResult
    func drain() -> Int {
        var ran = 0
        while true {
            let batch = jobs.withLock { queue -> [UnownedJob] in
                defer { queue.removeAll() }
                return queue
            }
            if batch.isEmpty { return ran }
            for job in batch {
                job.runSynchronously(on: asUnownedTaskExecutor())
                ran += 1
            }
        }
    }

    var pending: Int { jobs.withLock { $0.count } }
}

/// A one-shot gate: tasks wait until the test opens it.
final class Gate: Sendable {
    private let state = Lock<(open: Bool, waiters: [CheckedContinuation<Void, Never>])>((false, []))

    func wait() async {
        await withCheckedContinuation { continuation in
            let resumeNow = state.withLock { state -> Bool in
                if state.open { return true }
                state.waiters.append(continuation)
                return false
            }
            if resumeNow { continuation.resume() }
        }
    }

    func open() {
        let waiters = state.withLock { state -> [CheckedContinuation<Void, Never>] in
            state.open = true
            defer { state.waiters.removeAll() }
            return state.waiters
        }
        for waiter in waiters { waiter.resume() }
    }
}

/// Polls `condition`, yielding between tries, until it holds. Tests that use it carry a time limit;
/// when the limit cancels the test, the loop stops, so a condition that never holds fails the test
/// instead of hanging it.
func eventually(_ condition: () -> Bool) async {
    while !condition(), !Task.isCancelled { await Task.yield() }
}

/// A value shared between test tasks under a lock (a class, so escaping closures can capture it).
final class Locked<Value: Sendable>: Sendable {
    private let storage: Lock<Value>
    init(_ value: Value) { storage = Lock(value) }
    func withLock<R: Sendable>(_ body: (inout sending Value) -> sending R) -> R { storage.withLock(body) }
    var value: Value { storage.withLock { $0 } }
}

/// An integer counter shared between test tasks.
final class Counter: Sendable {
    private let storage = Atomic<Int>(0)
    @discardableResult
    func increment() -> Int { storage.wrappingAdd(1, ordering: .relaxed).newValue }
    func decrement() { storage.wrappingSubtract(1, ordering: .relaxed) }
    var value: Int { storage.load(ordering: .relaxed) }
    func raise(to candidate: Int) {
        var current = storage.load(ordering: .relaxed)
        while candidate > current {
            let (done, original) = storage.compareExchange(expected: current, desired: candidate, ordering: .relaxed)
            if done { return }
            current = original
        }
    }
}
