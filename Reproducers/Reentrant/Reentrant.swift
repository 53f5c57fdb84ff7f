import Futurelock

/// F7 — re-entrant acquire.
///
/// `reloadConfig` holds the configuration lock and calls `validate`, which takes the same lock to
/// read a consistent view. The semaphore is not re-entrant: the task waits for a permit it holds.
/// A plain self-deadlock, not a futurelock — the watchdog says which.
///
/// The outer hold is `withPermit`, so the permit never leaves the task: `certain`. (Held as a
/// `Permit` object instead, it could have been handed to another task that will release it, and the
/// finding would be `suspected`.)
///
/// Fixed: pass the held permit's protection down instead of acquiring again.
struct Reentrant: Reproducer {
    let name = "reentrant"
    let form = "F7"
    let summary = "a task acquires a non-reentrant permit it already holds"
    let expectedKind: Finding.Kind? = .selfDeadlock
    let expectedCertainty = Finding.Certainty.certain
    let culpritFile = "Reentrant.swift"

    func run(_ code: Code, ledger: Ledger) async throws {
        let configLock = try Semaphore(name: "config-lock", permits: 1, ledger: ledger)
        switch code {
        case .buggy:
            try await reloadConfig(configLock, fixed: false)
        case .fixed:
            try await reloadConfig(configLock, fixed: true)
        case .annotated:
            try await TaskTree.scope("reload-config") { try await reloadConfig(configLock, fixed: false) }
        }
    }

    func reloadConfig(_ configLock: Semaphore, fixed: Bool) async throws {
        try await configLock.withPermit {
            if fixed {
                validateHoldingLock()
            } else {
                try await validate(configLock)
            }
        }
    }

    func validate(_ configLock: Semaphore) async throws {
        try await configLock.withPermit { /* read a consistent view */ }
    }

    func validateHoldingLock() { /* the caller holds the lock: read directly */ }
}
