import Futurelock

/// F8 — ABBA, the classic deadlock.
///
/// A transfer task locks account A then account B; a concurrent report task locks B then A. Each
/// holds what the other waits for. This is a lock-order deadlock across two tasks, not a futurelock,
/// and the watchdog reports it as `deadlock` with the cycle. The locks are held with `withPermit`, so
/// neither permit can have left its task: `certain`.
///
/// Fixed: both take the locks in one global order (A before B).
struct ABBA: Reproducer {
    let name = "abba"
    let form = "F8"
    let summary = "two tasks acquire two resources in opposite order"
    let expectedKind: Finding.Kind? = .deadlock
    let expectedCertainty = Finding.Certainty.certain
    let culpritFile = "ABBA.swift"

    func run(_ code: Code, ledger: Ledger) async throws {
        let accountA = try Semaphore(name: "account-A", permits: 1, ledger: ledger)
        let accountB = try Semaphore(name: "account-B", permits: 1, ledger: ledger)
        let transferHasA = Signal(), reportHasFirst = Signal()
        let named = code == .annotated
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                if named { try await TaskTree.scope("transfer") { try await transfer() } } else { try await transfer() }
            }
            group.addTask {
                if named { try await TaskTree.scope("report") { try await report() } } else { try await report() }
            }
            try await group.waitForAll()
        }

        @Sendable func transfer() async throws {
            try await accountA.withPermit {
                transferHasA.fire()
                await reportHasFirst.wait()
                try await accountB.withPermit {}
            }
        }

        @Sendable func report() async throws {
            await transferHasA.wait()
            if code == .fixed {
                reportHasFirst.fire()
                try await accountA.withPermit { try await accountB.withPermit {} }
            } else {
                try await accountB.withPermit {
                    reportHasFirst.fire()
                    try await accountA.withPermit {}
                }
            }
        }
    }
}
