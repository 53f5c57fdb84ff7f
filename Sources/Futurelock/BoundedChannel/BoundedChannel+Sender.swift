// Sender handles: the channel ends for its receivers when the last producer goes away.
//
// With tokio's mpsc, a consumer loop `while let Some(m) = rx.recv().await` ends by itself once every
// `Sender` has been dropped: nobody is left who could send. `BoundedChannel.Sender` gives the same
// rule. Each handle made with `makeSender()` (or `Sender.makeSender()`, the counterpart of cloning)
// counts; when the last one is deinitialised the channel closes exactly as `close()` does — queued
// senders fail, new sends fail, buffered messages and sends on permits reserved before still reach
// the receivers, and they see `nil` once all of that is drained.
//
// Handles are optional. A channel whose producers send through the channel object itself never
// closes on its own; mixing the two is allowed, but once handles were made, dropping the last one
// closes the channel for every sender.

import Synchronization

extension BoundedChannel {
    /// A producer's handle on the channel: sends like the channel, and closes it when the last handle
    /// is gone. See the file header for the rule.
    ///
    /// ```swift
    /// let jobs = try BoundedChannel<Job>(name: "jobs", capacity: 16)
    /// let producer = jobs.makeSender()
    /// Task { for job in batch { try await producer.send(job) } }     // the handle ends with the task
    /// for try await job in jobs { … }                               // ends when every producer is done
    /// ```
    public final class Sender: Sendable {
        /// The channel this handle sends on.
        public let channel: BoundedChannel

        init(channel: BoundedChannel) {
            self.channel = channel
        }

        deinit { channel.senderGone() }

        /// Another handle on the same channel (the channel stays open while any handle exists).
        public func makeSender() -> Sender { channel.makeSender() }

        /// Sends, waiting for a slot: ``BoundedChannel/send(_:fileID:line:function:)``.
        @inlinable
        nonisolated(nonsending)
        public func send(_ value: Element, fileID: StaticString = #fileID, line: UInt = #line,
                         function: StaticString = #function) async throws {
            try await channel.send(value, fileID: fileID, line: line, function: function)
        }

        /// Sends if a slot is free: ``BoundedChannel/trySend(_:fileID:line:function:)``.
        @inlinable
        public func trySend(_ value: Element, fileID: StaticString = #fileID, line: UInt = #line,
                            function: StaticString = #function) throws(FuturelockError) -> Bool {
            try channel.trySend(value, fileID: fileID, line: line, function: function)
        }

        /// Sends, waiting at most `timeout`: ``BoundedChannel/send(_:timeout:fileID:line:function:)``.
        public func send(_ value: Element, timeout: Duration, fileID: StaticString = #fileID,
                         line: UInt = #line, function: StaticString = #function) async throws {
            try await channel.send(value, timeout: timeout, fileID: fileID, line: line, function: function)
        }

        /// Reserves a slot: ``BoundedChannel/reserve(fileID:line:function:)``.
        @inlinable
        nonisolated(nonsending)
        public func reserve(fileID: StaticString = #fileID, line: UInt = #line,
                            function: StaticString = #function) async throws -> SendPermit<Element> {
            try await channel.reserve(fileID: fileID, line: line, function: function)
        }

        /// Reserves a slot if one is free: ``BoundedChannel/tryReserve(fileID:line:function:)``.
        @inlinable
        public func tryReserve(fileID: StaticString = #fileID, line: UInt = #line,
                               function: StaticString = #function) throws(FuturelockError) -> SendPermit<Element>? {
            try channel.tryReserve(fileID: fileID, line: line, function: function)
        }

        /// Reserves a slot, waiting at most `timeout`: ``BoundedChannel/reserve(timeout:fileID:line:function:)``.
        public func reserve(timeout: Duration, fileID: StaticString = #fileID, line: UInt = #line,
                            function: StaticString = #function) async throws -> SendPermit<Element> {
            try await channel.reserve(timeout: timeout, fileID: fileID, line: line, function: function)
        }
    }

    /// A new producer handle. While any handle exists the channel stays open (unless `close()` is
    /// called); when the last one is deinitialised, the channel closes.
    public func makeSender() -> Sender {
        senders.wrappingAdd(1, ordering: .relaxed)
        return Sender(channel: self)
    }

    /// Producer handles alive right now.
    public var senderCount: Int { senders.load(ordering: .relaxed) }

    func senderGone() {
        if senders.wrappingSubtract(1, ordering: .acquiringAndReleasing).newValue == 0 {
            close(fileID: #fileID, line: #line, function: "Sender.deinit")
        }
    }
}
