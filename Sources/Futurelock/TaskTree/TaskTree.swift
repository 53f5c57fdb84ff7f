/// The namespace for the toolkit's task-tree entry points: ``scope(_:isolation:_:)``,
/// ``child(_:isolation:_:)``, ``race(_:_:discard:)``, ``openNode(_:)`` and ``currentNode``.
///
/// It is deliberately not named after the module. A public type called `Futurelock` in the module
/// `Futurelock` shadows the module's name in client code, so a client could no longer write
/// `Futurelock.Semaphore` to tell the toolkit's `Semaphore` apart from one of its own or of another
/// library: the name would resolve to the type, which has no member `Semaphore`.
public enum TaskTree {
    /// The innermost tree node bound to the current task (inherited by child tasks).
    @TaskLocal public static var currentNode: ScopeNode?

    /// Runs `body` as a named node of the task tree.
    ///
    /// Everything `body` acquires or waits for — in this task or in any child task it spawns — is
    /// recorded under this node, so a dump reads `request › fetch-bundle › task 812` instead of a bare
    /// task id. Scopes are cheap (one small allocation) but not free: put them around the
    /// sub-operations a person would want named, not around every call.
    ///
    /// - Parameters:
    ///   - name: What the scope does, e.g. `"fetch-bundle"`.
    ///   - body: The work of the scope.
    /// - Returns: What `body` returns.
    public static func scope<Result>(
        _ name: String,
        isolation: isolated (any Actor)? = #isolation,
        _ body: () async throws -> Result
    ) async rethrows -> Result {
        let node = ScopeNode(name: name, taskID: .current, parent: currentNode)
        do {
            let result = try await $currentNode.withValue(node, operation: body, isolation: isolation)
            node.mark(.consumed)
            return result
        } catch {
            node.mark(Task.isCancelled ? .cancelled : .consumed)
            throw error
        }
    }

    /// Opens a node for work whose lifecycle the caller tracks explicitly (the race and group helpers
    /// use this). Call it *inside* the child task, bind it with
    /// `TaskTree.$currentNode.withValue(node) { … }`, mark it `.finished` when the child's body
    /// returns and `.consumed` when the parent takes the result.
    public static func openNode(_ name: String) -> ScopeNode {
        ScopeNode(name: name, taskID: .current, parent: currentNode)
    }
}
