/// Runs a wait against a timer, futurelock-safely: whichever finishes first, the group is drained
/// before returning, so a grant that arrives just after the timer fired is returned to the caller
/// instead of being parked, unseen, in an abandoned child's result (the very shape of a futurelock).
enum TimeoutRace {
    private enum Outcome<Value: Sendable>: Sendable {
        case value(Value)
        case failed(any Error)
        case timerFired
        case timerCancelled
    }

    /// The shape every `…(timeout:)` method shares: reject a negative timeout, take what is free
    /// right now without starting a race, otherwise race the waiting form against the timer, and
    /// record that the caller — not the race's child task that did the waiting — owns the result.
    static func acquire<Holding: Sendable>(
        resource: String, timeout: Duration,
        immediately: () throws -> Holding?,
        waiting: @escaping @Sendable () async throws -> Holding,
        claim: (Holding) -> Void = { _ in }
    ) async throws -> Holding {
        guard timeout >= .zero else { throw FuturelockError.invalidTimeout(resource: resource, timeout: timeout) }
        if let holding = try immediately() { return holding }
        let holding = try await run(resource: resource, timeout: timeout, waiting)
        claim(holding)
        return holding
    }

    static func run<Value: Sendable>(
        resource: String, timeout: Duration, _ operation: @escaping @Sendable () async throws -> Value
    ) async throws -> Value {
        let outcome = await withTaskGroup(of: Outcome<Value>.self) { group -> Outcome<Value> in
            group.addTask {
                do { return .value(try await operation()) } catch { return .failed(error) }
            }
            group.addTask {
                do {
                    try await Task.sleep(for: timeout)
                    return .timerFired
                } catch {
                    return .timerCancelled
                }
            }
            var value: Value?
            var failure: (any Error)?
            var timerFired = false
            // Drain both children: the group never ends with a result nobody looked at.
            while let next = await group.next() {
                switch next {
                case .value(let v): value = v; group.cancelAll()
                // The wait's own error ends the race at once: the timeout is an upper bound, not a
                // delay (a pool whose factory fails must not make its caller wait out the timer).
                case .failed(let error): failure = error; group.cancelAll()
                case .timerFired: timerFired = true; group.cancelAll()
                case .timerCancelled: break
                }
            }
            if let value { return .value(value) }
            if timerFired, !Task.isCancelled, failure is CancellationError { return .timerFired }
            return .failed(failure ?? CancellationError())
        }
        switch outcome {
        case .value(let value): return value
        case .timerFired: throw FuturelockError.timedOut(resource: resource, after: timeout)
        case .failed(let error): throw error
        case .timerCancelled: throw CancellationError()
        }
    }
}
