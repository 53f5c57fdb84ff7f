/// The result of work run with ``TaskTree/child(_:isolation:_:)``: the value, plus the tree node
/// that records whether anyone has taken it yet.
///
/// A child that finished while holding a permit, and whose result still sits unconsumed in a task
/// group, an `async let` or a task handle, is the heart of a futurelock. Wrapping the child's work in
/// `TaskTree.child` and taking the result with ``take()`` lets the watchdog *prove* that state
/// (certain) instead of inferring it from time (suspected).
public struct Tracked<Value: Sendable>: Sendable {
    /// The node of the child's work.
    public let node: ScopeNode
    private let value: Value

    init(node: ScopeNode, value: Value) {
        self.node = node
        self.value = value
    }

    /// The value; marks the child's result as consumed.
    public func take() -> Value {
        node.mark(.consumed)
        return value
    }
}

extension TaskTree {
    /// Runs `body` as a tracked child node: the node is marked *finished* when `body` returns and
    /// *consumed* only when the parent calls ``Tracked/take()`` on the result.
    ///
    /// Use it for the body of a task-group child, an `async let` or a `Task {}` whose result carries
    /// a permit, lease or send slot:
    /// ```swift
    /// group.addTask { try await TaskTree.child("fetch") { try await db.acquire() } }
    /// ```
    public static func child<Value: Sendable>(
        _ name: String,
        isolation: isolated (any Actor)? = #isolation,
        _ body: () async throws -> Value
    ) async rethrows -> Tracked<Value> {
        let node = ScopeNode(name: name, taskID: .current, parent: currentNode)
        do {
            let value = try await $currentNode.withValue(node, operation: body, isolation: isolation)
            node.mark(.finished)
            return Tracked(node: node, value: value)
        } catch {
            // A child that threw parks nothing: whatever it held was released as it unwound.
            node.mark(Task.isCancelled ? .cancelled : .consumed)
            throw error
        }
    }
}
