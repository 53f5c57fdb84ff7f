import Futurelock

/// F1 — task-group race, parked result.
///
/// A request handler races a database fetch against a timeout in a task group. The fetch child
/// acquires the only database permit and finishes; its result — holding the permit — sits unconsumed
/// in the group, because the timeout child won and the handler stopped calling `next()`. The handler
/// then falls back to fetching directly, and waits for the permit its own group is holding.
///
/// The runtime shows the fetch child finished, its result holding the permit and nothing else
/// holding it, while its parent waits: `certain`, with or without annotation.
///
/// Fixed: when the timeout wins, cancel the group and drain it, releasing what the losing fetch
/// holds, before acquiring again.
struct TaskGroupRace: Reproducer {
    let name = "task-group-race"
    let form = "F1"
    let summary = "a task-group race whose losing child parks a permit; the parent acquires again"
    let expectedKind: Finding.Kind? = .futurelock
    let expectedCertainty = Finding.Certainty.certain
    let culpritFile = "TaskGroupRace.swift"

    func run(_ code: Code, ledger: Ledger) async throws {
        let database = try Semaphore(name: "db-connections", permits: 1, ledger: ledger)
        if code == .annotated {
            try await annotated(database)
        } else {
            try await handleRequest(database, fixed: code == .fixed)
        }
    }

    enum Arm: Sendable {
        case fetched(Permit)
        case timedOut
    }

    /// The code as written, with only the semaphore swapped.
    func handleRequest(_ database: Semaphore, fixed: Bool) async throws {
        let raceDecided = Signal()
        try await withThrowingTaskGroup(of: Arm.self) { group in
            group.addTask {
                let permit = try await database.acquire()
                await raceDecided.wait()                   // the query is slower than the timeout
                return .fetched(permit)
            }
            group.addTask {
                // The timeout fires while the fetch holds the permit.
                while database.availablePermits > 0 { try await Task.yieldUnlessCancelled() }
                return .timedOut
            }
            let first = try await group.next()
            raceDecided.fire()
            guard case .timedOut = first else { return }
            if fixed {
                group.cancelAll()
                for try await arm in group {
                    if case .fetched(let permit) = arm { permit.release() }
                }
            }
            // Fall back to a direct fetch.
            let permit = try await database.acquire()
            permit.release()
        }
    }

    enum TrackedArm: Sendable {
        case fetched(Tracked<Permit>)
        case timedOut
    }

    /// The same bug with the request and the fetch named: the dump reads `handle-request › task › fetch`.
    func annotated(_ database: Semaphore) async throws {
        let raceDecided = Signal()
        try await TaskTree.scope("handle-request") {
            try await withThrowingTaskGroup(of: TrackedArm.self) { group in
                group.addTask {
                    .fetched(try await TaskTree.child("fetch") {
                        let permit = try await database.acquire()
                        await raceDecided.wait()
                        return permit
                    })
                }
                group.addTask {
                    while database.availablePermits > 0 { try await Task.yieldUnlessCancelled() }
                    return .timedOut
                }
                let first = try await group.next()
                raceDecided.fire()
                guard case .timedOut = first else { return }
                let permit = try await database.acquire()
                permit.release()
            }
        }
    }
}
