extension TaskTree {
    /// Races `operations`; the first to finish wins — and no loser is left holding anything.
    ///
    /// This is the futurelock-safe shape of "select": the losers are cancelled and *drained* before
    /// `race` returns, and any value a loser produced anyway (it acquired its permit just as the winner
    /// finished) is handed to `discard`, which should release it. Only then does the caller's code
    /// continue, so a later acquire can never queue behind a permit parked in a losing arm.
    ///
    /// Each arm runs as a tracked child node (`"<name>#<index>"`), so a dump shows the race and its arms.
    ///
    /// ```swift
    /// enum Arm: Sendable { case fetched(Permit), timedOut }
    /// let winner = try await TaskTree.race("fetch-or-timeout", [
    ///     { .fetched(try await db.acquire()) },
    ///     { try await Task.sleep(for: .seconds(1)); return .timedOut },
    /// ], discard: { if case .fetched(let permit) = $0 { permit.release() } })
    /// ```
    ///
    /// - Returns: The value of the first operation to finish.
    /// - Throws: The error of the first operation to finish, if it threw.
    public static func race<Value: Sendable>(
        _ name: String = "race",
        _ operations: [@Sendable () async throws -> Value],
        discard: @escaping @Sendable (Value) async -> Void
    ) async throws -> Value {
        precondition(!operations.isEmpty, "TaskTree.race needs at least one operation")
        return try await scope(name) {
            try await withThrowingTaskGroup(of: Tracked<Result<Value, any Error>>.self) { group in
                for (index, operation) in operations.enumerated() {
                    group.addTask {
                        await child("\(name)#\(index)") {
                            do { return .success(try await operation()) } catch { return .failure(error) }
                        }
                    }
                }
                var winner: Result<Value, any Error>?
                while let finished = try await group.next() {
                    let result = finished.take()
                    if winner == nil {
                        winner = result
                        group.cancelAll()
                    } else if case .success(let value) = result {
                        await discard(value)
                    }
                }
                return try winner!.get()
            }
        }
    }
}
