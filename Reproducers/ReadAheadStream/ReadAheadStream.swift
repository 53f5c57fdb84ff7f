import Futurelock

/// F4 — a read-ahead stream.
///
/// A consumer iterates a stream of rate-limited pages. The stream reads one page ahead: when it hands
/// out page n it starts fetching page n+1 in a child task, which takes the rate limiter's only permit
/// and finishes with the page (and the permit) waiting in the stream's buffer. After the first page
/// the consumer stops iterating — the iterator is still alive — and calls the API directly, which
/// needs the permit the read-ahead is holding.
///
/// The read-ahead runs in a `Task {}`, which the runtime does not link to the consumer, so the
/// finding is `suspected`, as for any task handle.
///
/// Fixed: stop the stream properly — drain or cancel the read-ahead and release what it holds — or
/// make the read-ahead release its permit before it parks the page.
struct ReadAheadStream: Reproducer {
    let name = "read-ahead-stream"
    let form = "F4"
    let summary = "a buffered stream pre-fetches a page that holds a permit; the consumer stops and acquires"
    let expectedKind: Finding.Kind? = .futurelock
    let expectedCertainty = Finding.Certainty.suspected
    let culpritFile = "ReadAheadStream.swift"

    struct Page: Sendable {
        var number: Int
        var permit: Permit
    }

    /// Pages fetched through `limiter`, one page read ahead.
    struct Pages: AsyncSequence {
        typealias Element = Page
        let limiter: Semaphore
        let count: Int
        /// Name the read-ahead with `TaskTree.child` (the annotated variant).
        var named = false

        struct Iterator: AsyncIteratorProtocol {
            let limiter: Semaphore
            let count: Int
            let named: Bool
            var position = 0
            var ahead: ReadAhead?

            mutating func next() async throws -> Page? {
                guard position < count else { return nil }
                let current: Page
                if let ahead {
                    current = try await ahead.page()
                } else {
                    current = try await Self.fetch(position, limiter)
                }
                position += 1
                if position < count {
                    let number = position, limiter = limiter
                    ahead = named
                        ? .named(Task { try await TaskTree.child("read-ahead") { try await Self.fetch(number, limiter) } })
                        : .plain(Task { try await Self.fetch(number, limiter) })
                    // Hand out page n only once the read-ahead for n+1 has asked for its permit, as a
                    // pre-fetching stream does (and so every run interleaves the same way).
                    while limiter.waitingCount == 0, limiter.availablePermits == 0 { try await Task.yieldUnlessCancelled() }
                } else {
                    ahead = nil
                }
                return current
            }

            static func fetch(_ number: Int, _ limiter: Semaphore) async throws -> Page {
                Page(number: number, permit: try await limiter.acquire())
            }

            /// Stops the read-ahead and releases whatever it fetched.
            mutating func stop() async {
                guard let ahead else { return }
                ahead.cancel()
                if let page = try? await ahead.page() { page.permit.release() }
                self.ahead = nil
            }
        }

        func makeAsyncIterator() -> Iterator { Iterator(limiter: limiter, count: count, named: named) }
    }

    /// The page being read ahead: a plain task, or (annotated) one whose work is a named child.
    enum ReadAhead {
        case plain(Task<Page, any Error>)
        case named(Task<Tracked<Page>, any Error>)

        func page() async throws -> Page {
            switch self {
            case .plain(let task): return try await task.value
            case .named(let task): return try await task.value.take()
            }
        }

        func cancel() {
            switch self {
            case .plain(let task): task.cancel()
            case .named(let task): task.cancel()
            }
        }
    }

    func run(_ code: Code, ledger: Ledger) async throws {
        let limiter = try Semaphore(name: "api-rate-limit", permits: 1, ledger: ledger)
        if code == .annotated {
            try await TaskTree.scope("sync-pages") { try await sync(limiter, fixed: false, named: true) }
        } else {
            try await sync(limiter, fixed: code == .fixed, named: false)
        }
    }

    /// The consumer as written (only the semaphore swapped).
    func sync(_ limiter: Semaphore, fixed: Bool, named: Bool) async throws {
        var pages = Pages(limiter: limiter, count: 10, named: named).makeAsyncIterator()
        guard let first = try await pages.next() else { return }
        first.permit.release()
        // Page 0 said everything is up to date: stop paging, ask the API directly.
        if fixed { await pages.stop() }
        let permit = try await limiter.acquire()
        permit.release()
        await pages.stop()
    }
}
