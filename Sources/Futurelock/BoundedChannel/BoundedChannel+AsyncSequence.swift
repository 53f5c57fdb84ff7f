// Iterating a channel receives from it.
//
// Each `next()` is one `receive()`: the loop ends when the channel is closed and drained. Several
// iterators over one channel are several receivers: each message goes to exactly one of them, in
// the order the receivers queued.
//
// Cancellation: `next()` throws `CancellationError` when the task is cancelled while it waits, so a
// `for try await` loop can tell "the channel is finished" (the loop ends) from "I was cancelled" (the
// loop throws). After the first `nil` or the first error, the iterator returns `nil` for ever. As with
// `receive()`, a message that was already handed to the iterator when the cancellation arrived is
// returned, not dropped, and messages already buffered are still returned to a cancelled task — it only
// throws where it would have to wait.

extension BoundedChannel: AsyncSequence {
    /// Receives messages until the channel is closed and drained.
    public struct AsyncIterator: AsyncIteratorProtocol {
        @usableFromInline let channel: BoundedChannel<Element>
        @usableFromInline var finished = false

        @usableFromInline
        init(channel: BoundedChannel<Element>) { self.channel = channel }

        /// The next message, `nil` when the channel is closed and drained.
        ///
        /// - Throws: `CancellationError` if the task is cancelled while waiting for a message.
        @inlinable
        public mutating func next() async throws -> Element? {
            try await next(isolation: nil)
        }

        /// The next message, received on the caller's executor.
        ///
        /// - Throws: `CancellationError` if the task is cancelled while waiting for a message.
        @inlinable
        public mutating func next(isolation actor: isolated (any Actor)?) async throws -> Element? {
            guard !finished else { return nil }
            do {
                guard let value = try await channel.receive() else {
                    finished = true
                    return nil
                }
                return value
            } catch {
                finished = true
                throw error
            }
        }
    }

    /// An iterator that receives from this channel.
    @inlinable
    public func makeAsyncIterator() -> AsyncIterator {
        AsyncIterator(channel: self)
    }
}
