import Futurelock

/// N2 — permits handed to a worker task through an `AsyncStream`.
///
/// A producer acquires a permit per job and yields the job, permit and all, into a stream; a worker
/// task drains the stream and releases each permit when its job is done. With every permit out, the
/// producer waits for the worker. Correct code: the permits are with the worker.
struct StreamHandOff: NearMiss {
    let name = "stream-hand-off"
    let form = "N2"
    let summary = "permits handed to a worker through an AsyncStream; the producer waits for the worker"

    struct Job: Sendable {
        var number: Int
        var permit: Permit
    }

    func run(ledger: Ledger) async throws {
        let slots = try Semaphore(name: "in-flight", permits: 2, ledger: ledger)
        let (jobs, continuation) = AsyncStream.makeStream(of: Job.self)
        let worker = Task {
            for await job in jobs {
                try await Task.sleep(for: job.number == 0 ? quickStep : slowStep)
                job.permit.release()
            }
        }
        for number in 0..<4 {
            continuation.yield(Job(number: number, permit: try await slots.acquire()))
        }
        continuation.finish()
        try await worker.value
    }
}
