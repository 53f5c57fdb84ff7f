import Futurelock

/// F8 — ABBA, the classic deadlock.
///
/// A transfer task locks account A then account B; a concurrent report task locks B then A. Each
/// holds what the other waits for. This is a lock-order deadlock across two tasks, not a futurelock,
/// and the watchdog reports it as `deadlock` with the cycle.
///
/// Fixed: both take the locks in one global order (A before B).
struct ABBA: Reproducer {
    let name = "abba"
    let form = "F8"
    let summary = "two tasks acquire two resources in opposite order"
    let expectedKind = Finding.Kind.deadlock
    let expectedCertainty = Finding.Certainty.certain
    let culpritFile = "ABBA.swift"

    func run(fixed: Bool, ledger: Ledger) async throws {
        let accountA = try Semaphore(name: "account-A", permits: 1, ledger: ledger)
        let accountB = try Semaphore(name: "account-B", permits: 1, ledger: ledger)
        let transferHasA = Signal(), reportHasFirst = Signal()
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                try await TaskTree.scope("transfer") {
                    let a = try await accountA.acquire()
                    transferHasA.fire()
                    await reportHasFirst.wait()
                    let b = try await accountB.acquire()
                    b.release(); a.release()
                }
            }
            group.addTask {
                try await TaskTree.scope("report") {
                    await transferHasA.wait()
                    if fixed {
                        reportHasFirst.fire()
                        let a = try await accountA.acquire()
                        let b = try await accountB.acquire()
                        b.release(); a.release()
                    } else {
                        let b = try await accountB.acquire()
                        reportHasFirst.fire()
                        let a = try await accountA.acquire()
                        a.release(); b.release()
                    }
                }
            }
            try await group.waitForAll()
        }
    }
}
