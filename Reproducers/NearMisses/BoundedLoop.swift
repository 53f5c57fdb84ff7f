import Futurelock

/// N1 — the everyday bounded-concurrency loop.
///
/// A loop acquires a permit, starts a `Task` that does a job and releases the permit when it ends,
/// and acquires again: with every permit out, the loop waits for a job to finish. The loop waits
/// while "holding" permits it acquired — but they are with the jobs, which release them. Correct code.
///
/// The ledger sees a permit acquired at the loop's site released by another task as soon as the first
/// (quick) job ends; from then on a permit the loop acquired there counts as handed on, and the long
/// waits that follow are not reported.
struct BoundedLoop: NearMiss {
    let name = "bounded-loop"
    let form = "N1"
    let summary = "acquire, start a Task that releases when its job ends, acquire again"

    func run(ledger: Ledger) async throws {
        let workers = try Semaphore(name: "workers", permits: 2, ledger: ledger)
        var jobs: [Task<Void, any Error>] = []
        for index in 0..<5 {
            let permit = try await workers.acquire()
            jobs.append(Task {
                defer { permit.release() }
                try await Task.sleep(for: index == 0 ? quickStep : slowStep)   // the job
            })
        }
        for job in jobs { try await job.value }
    }
}
