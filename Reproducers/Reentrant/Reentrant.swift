import Futurelock

/// F7 — re-entrant acquire.
///
/// `reloadConfig` holds the configuration lock and calls `validate`, which takes the same lock to
/// read a consistent view. The semaphore is not re-entrant: the task waits for a permit it holds.
/// A plain self-deadlock, not a futurelock — the watchdog says which.
///
/// Fixed: pass the held permit down instead of acquiring again.
struct Reentrant: Reproducer {
    let name = "reentrant"
    let form = "F7"
    let summary = "a task acquires a non-reentrant permit it already holds"
    let expectedKind = Finding.Kind.selfDeadlock
    let expectedCertainty = Finding.Certainty.certain
    let culpritFile = "Reentrant.swift"

    func run(fixed: Bool, ledger: Ledger) async throws {
        let configLock = try Semaphore(name: "config-lock", permits: 1, ledger: ledger)
        try await TaskTree.scope("reload-config") {
            let permit = try await configLock.acquire()
            defer { permit.release() }
            if fixed {
                validate(holding: permit)
            } else {
                try await validate(configLock)
            }
        }
    }

    func validate(_ configLock: Semaphore) async throws {
        try await configLock.withPermit { /* read a consistent view */ }
    }

    func validate(holding permit: Permit) {
        precondition(!permit.isReleased)
    }
}
