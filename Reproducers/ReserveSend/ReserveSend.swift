import Futurelock

/// F5 — reserve in one arm of a race, send in the other's continuation.
///
/// A job submitter races "reserve a slot in the capacity-1 job queue, then build the job" against a
/// deadline. The reserve arm gets the slot and finishes with its `SendPermit` parked in the group;
/// the deadline wins, and its continuation sends a "skipped" marker on the same channel — which waits
/// for the slot the losing arm holds. The worker that drains the channel is idle: the channel is empty.
///
/// Fixed: when the deadline wins, cancel and drain the group, releasing the losing arm's slot, then send.
struct ReserveSend: Reproducer {
    let name = "reserve-send"
    let form = "F5"
    let summary = "a reserved send slot parked in a losing race arm; the winner sends on the same channel"
    let expectedKind: Finding.Kind? = .futurelock
    let expectedCertainty = Finding.Certainty.certain
    let culpritFile = "ReserveSend.swift"

    enum Arm: Sendable {
        case reserved(SendPermit<String>)
        case deadline
    }

    enum TrackedArm: Sendable {
        case reserved(Tracked<SendPermit<String>>)
        case deadline
    }

    func run(_ code: Code, ledger: Ledger) async throws {
        let jobs = try BoundedChannel<String>(name: "jobs", capacity: 1, ledger: ledger)
        let worker = Task {
            for try await _ in jobs {}
        }
        // When the scenario is cancelled (a hung variant at its timeout), `submit` throws before the
        // channel is closed: end the worker too, or it waits on the channel for ever.
        defer { worker.cancel() }
        if code == .annotated {
            try await TaskTree.scope("submit") { try await submitAnnotated(jobs) }
        } else {
            try await submit(jobs, fixed: code == .fixed)
        }
        jobs.close()
        try await worker.value
    }

    /// The code as written, with only the channel swapped.
    func submit(_ jobs: BoundedChannel<String>, fixed: Bool) async throws {
        let raceDecided = Signal()
        try await withThrowingTaskGroup(of: Arm.self) { group in
            group.addTask {
                let slot = try await jobs.reserve()
                await raceDecided.wait()                   // building the job takes longer than the deadline
                return .reserved(slot)
            }
            group.addTask {
                while jobs.availableSlots > 0 { try await Task.yieldUnlessCancelled() }
                return .deadline
            }
            let first = try await group.next()
            raceDecided.fire()
            guard case .deadline = first else { return }
            if fixed {
                group.cancelAll()
                for try await arm in group {
                    if case .reserved(let slot) = arm { slot.release() }
                }
            }
            try await jobs.send("skipped")
        }
    }

    /// The same bug with the reserve arm named.
    func submitAnnotated(_ jobs: BoundedChannel<String>) async throws {
        let raceDecided = Signal()
        try await withThrowingTaskGroup(of: TrackedArm.self) { group in
            group.addTask {
                .reserved(try await TaskTree.child("reserve-and-build") {
                    let slot = try await jobs.reserve()
                    await raceDecided.wait()
                    return slot
                })
            }
            group.addTask {
                while jobs.availableSlots > 0 { try await Task.yieldUnlessCancelled() }
                return .deadline
            }
            let first = try await group.next()
            raceDecided.fire()
            guard case .deadline = first else { return }
            try await jobs.send("skipped")
        }
    }
}
