// The yardstick for Futurelock's primitives: a plain, uninstrumented FIFO semaphore and bounded
// channel, each a `Mutex` around a `Deque` of continuations — the design a careful engineer writes
// in an afternoon. It records nothing, names nothing and has no ledger. It lives in a module of its
// own, as Futurelock does, so both are measured across a module boundary. Correct but minimal:
// cancellation removes a waiter by a linear search, which is fine for a benchmark.

import DequeModule
import Synchronization

/// A FIFO-fair counting semaphore: a released permit goes straight to the oldest waiter.
public final class PlainSemaphore: Sendable {
    private struct State {
        var available: Int
        var waiters: Deque<(id: UInt64, continuation: UnsafeContinuation<Void, any Error>)> = []
        var nextID: UInt64 = 0
    }
    private let state: Mutex<State>

    public init(permits: Int) { state = Mutex(State(available: permits)) }

    public var waitingCount: Int { state.withLock { $0.waiters.count } }

    public func acquire() async throws {
        let fast = state.withLock { state -> Bool in
            guard state.available > 0, state.waiters.isEmpty else { return false }
            state.available -= 1
            return true
        }
        if fast { return }
        let id = state.withLock { state -> UInt64 in state.nextID &+= 1; return state.nextID }
        try await withTaskCancellationHandler {
            try await withUnsafeThrowingContinuation { (continuation: UnsafeContinuation<Void, any Error>) in
                let grantedNow = state.withLock { state -> Bool in
                    if state.available > 0, state.waiters.isEmpty {
                        state.available -= 1
                        return true
                    }
                    state.waiters.append((id, continuation))
                    return false
                }
                if grantedNow { continuation.resume() }
            }
        } onCancel: {
            let removed = state.withLock { state -> UnsafeContinuation<Void, any Error>? in
                guard let index = state.waiters.firstIndex(where: { $0.id == id }) else { return nil }
                return state.waiters.remove(at: index).continuation
            }
            removed?.resume(throwing: CancellationError())
        }
    }

    /// Takes a permit if one is free and nobody waits; never suspends.
    public func tryAcquire() -> Bool {
        state.withLock { state -> Bool in
            guard state.available > 0, state.waiters.isEmpty else { return false }
            state.available -= 1
            return true
        }
    }

    public func release() {
        let next = state.withLock { state -> UnsafeContinuation<Void, any Error>? in
            if let waiter = state.waiters.popFirst() { return waiter.continuation }
            state.available += 1
            return nil
        }
        next?.resume()
    }
}

/// A bounded multi-producer, single-consumer channel: senders wait in FIFO order while the buffer is
/// full; `receive()` returns `nil` once the channel is closed and drained.
public final class PlainChannel<Element: Sendable>: Sendable {
    private struct State {
        var buffer: Deque<Element> = []
        var senders: Deque<(element: Element, continuation: UnsafeContinuation<Void, any Error>)> = []
        var receiver: UnsafeContinuation<Element?, Never>?
        var closed = false
    }
    private struct Closed: Error {}
    private enum SendStep { case done, resume(UnsafeContinuation<Element?, Never>), wait, queued, closed }
    private enum ReceiveStep { case element(Element, UnsafeContinuation<Void, any Error>?), finished, wait }
    private let state: Mutex<State>
    private let capacity: Int

    public init(capacity: Int) {
        self.capacity = capacity
        state = Mutex(State())
    }

    public func send(_ element: Element) async throws {
        let fast = state.withLock { state -> SendStep in
            if state.closed { return .closed }
            if let receiver = state.receiver {
                state.receiver = nil
                return .resume(receiver)
            }
            guard state.buffer.count < capacity, state.senders.isEmpty else { return .wait }
            state.buffer.append(element)
            return .done
        }
        switch fast {
        case .done: return
        case .resume(let receiver): receiver.resume(returning: element); return
        case .closed: throw Closed()
        case .wait, .queued: break
        }
        try await withUnsafeThrowingContinuation { (continuation: UnsafeContinuation<Void, any Error>) in
            let slow = state.withLock { state -> SendStep in
                if state.closed { return .closed }
                if let receiver = state.receiver {
                    state.receiver = nil
                    return .resume(receiver)
                }
                if state.buffer.count < capacity, state.senders.isEmpty {
                    state.buffer.append(element)
                    return .done
                }
                state.senders.append((element, continuation))
                return .queued
            }
            switch slow {
            case .queued, .wait: break
            case .done: continuation.resume()
            case .resume(let receiver): receiver.resume(returning: element); continuation.resume()
            case .closed: continuation.resume(throwing: Closed())
            }
        }
    }

    public func receive() async -> Element? {
        switch state.withLock({ Self.take(&$0) }) {
        case .element(let element, let sender):
            sender?.resume()
            return element
        case .finished:
            return nil
        case .wait:
            return await withUnsafeContinuation { (continuation: UnsafeContinuation<Element?, Never>) in
                let slow = state.withLock { state -> ReceiveStep in
                    let step = Self.take(&state)
                    if case .wait = step { state.receiver = continuation }
                    return step
                }
                switch slow {
                case .wait: break
                case .element(let element, let sender): sender?.resume(); continuation.resume(returning: element)
                case .finished: continuation.resume(returning: nil)
                }
            }
        }
    }

    /// The next message, if there is one: from the buffer (its freed slot goes to the oldest waiting
    /// sender's element), else straight from the oldest waiting sender.
    private static func take(_ state: inout State) -> ReceiveStep {
        if let element = state.buffer.popFirst() {
            if let sender = state.senders.popFirst() {
                state.buffer.append(sender.element)
                return .element(element, sender.continuation)
            }
            return .element(element, nil)
        }
        if let sender = state.senders.popFirst() { return .element(sender.element, sender.continuation) }
        return state.closed ? .finished : .wait
    }

    public func close() {
        let (receiver, senders) = state.withLock { state in
            state.closed = true
            defer { state.receiver = nil; state.senders.removeAll() }
            return (state.receiver, state.senders.map(\.continuation))
        }
        receiver?.resume(returning: nil)
        for sender in senders { sender.resume(throwing: Closed()) }
    }
}
