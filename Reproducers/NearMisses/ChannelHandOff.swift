import Futurelock

/// N3 — permits handed to another task through a `BoundedChannel`.
///
/// A dispatcher acquires a GPU permit per job and sends the permit through a channel to a worker,
/// which releases it when the job is done. The channel records each permit as *in transit* when it is
/// sent and as the worker's when it is received — no `handOff()` call — so the dispatcher, waiting for
/// the next permit, is never blamed for permits it no longer has. Correct code.
struct ChannelHandOff: NearMiss {
    let name = "channel-hand-off"
    let form = "N3"
    let summary = "permits sent through a BoundedChannel to a worker; the sender waits for the worker"

    func run(ledger: Ledger) async throws {
        let gpu = try Semaphore(name: "gpu", permits: 1, ledger: ledger)
        let work = try BoundedChannel<Permit>(name: "gpu-work", capacity: 4, ledger: ledger)
        let worker = Task {
            for try await permit in work {
                try await Task.sleep(for: slowStep)
                permit.release()
            }
        }
        for _ in 0..<3 {
            try await work.send(try await gpu.acquire())
        }
        work.close()
        try await worker.value
    }
}
