// futurelock-bench: side-by-side micro-benchmarks of Futurelock's primitives (ledger on / ledger off)
// against swift-async-algorithms' MultiProducerSingleConsumerAsyncChannel and AsyncChannel, plus an
// optional scale mode for the watchdog and the dumps.
//
//   swift run -c release futurelock-bench            full run (several repetitions, medians)
//   swift run -c release futurelock-bench --quick    reduced counts, for a CI smoke run
//   swift run -c release futurelock-bench scale [--waiters N] [--quick]
//   extra flags: --reps N (measured repetitions; one unmeasured warm-up repetition is always added),
//                --only KEY-PREFIX (repeatable; keys: sem-uncontended, sem-try, sem-scoped, sem-grandchild, cap1-1p,
//                cap1024-1p, cap1024-16p, chan-uncontended, sem-contended)
//
// Method. Every scenario runs all its variants once per repetition, in an order rotated each
// repetition so slow drifts of a noisy machine hit every variant alike; the first repetition is a
// warm-up and is discarded. Figures are medians with the min..max of the measured repetitions.
// The three uncontended semaphore scenarios, where one operation takes 60–150 ns, use many short
// repetitions (201 of 20,000 operations) instead of a few long ones: this machine's noise comes in
// bursts of a second or more, and short back-to-back pairs land inside the same burst.
// "Cost on/off" is the time per operation with the ledger on divided by the same with it off (> 1
// means the ledger costs something). The verdict uses the median of the per-repetition ratios — the
// two variants of one repetition run back to back, so a burst slows both — and the ratio of the
// medians and of the minimums are printed beside it as a check.
// Everything runs off the main actor, on the global concurrent executor.

import AsyncAlgorithms
import Foundation
@_spi(Benchmarks) import Futurelock
import PlainReference
import Synchronization
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

// MARK: - Measurement plumbing

/// One timed run: how many operations (or messages) in how many nanoseconds, and a checksum of what
/// was received so that no work can be optimised away.
struct Sample: Sendable {
    var ops: Int
    var nanoseconds: UInt64
    var checksum: Int = 0
}

enum Metric: Sendable {
    /// Nanoseconds per operation (lower is better).
    case nsPerOp
    /// Operations per second, with the unit's name (higher is better).
    case perSecond(String)

    func value(_ sample: Sample) -> Double {
        let ns = Double(max(sample.nanoseconds, 1))
        switch self {
        case .nsPerOp: return ns / Double(sample.ops)
        case .perSecond: return Double(sample.ops) / ns * 1e9
        }
    }

    /// Time per operation in ns, whatever the metric (for cost ratios).
    func cost(_ value: Double) -> Double {
        switch self {
        case .nsPerOp: return value
        case .perSecond: return 1e9 / value
        }
    }

    func format(_ value: Double) -> String {
        switch self {
        case .nsPerOp: return String(format: "%.1f ns/op", value)
        case .perSecond(let unit):
            if value >= 1e6 { return String(format: "%.3f M %@/s", value / 1e6, unit) }
            return String(format: "%.1f k %@/s", value / 1e3, unit)
        }
    }
}

struct Variant: Sendable {
    var name: String
    var run: @Sendable () async throws -> Sample
}

struct Scenario: Sendable {
    var key: String
    var title: String
    var metric: Metric
    var variants: [Variant]
    /// Measured repetitions, when the scenario needs another count than the run's default.
    var reps: Int? = nil
    /// Whether the 1.3× ledger-cost line is one of the project's performance targets for this scenario
    /// (the targets are listed in Docs/Guides/Performance.md, "Where the targets stand"). The
    /// extra scenarios (the synchronous `tryAcquire` path, and `acquire` inside a scope) are judged
    /// against the same line and reported, but listed apart.
    var isTarget = true
}

struct Result: Sendable {
    var scenario: Scenario
    /// samples[variant][repetition], as metric values.
    var values: [[Double]]

    func median(_ variant: String) -> Double? {
        guard let index = scenario.variants.firstIndex(where: { $0.name == variant }) else { return nil }
        return Stats.median(values[index])
    }

    func series(_ variant: String) -> [Double]? {
        scenario.variants.firstIndex(where: { $0.name == variant }).map { values[$0] }
    }
}

enum Stats {
    static func median(_ xs: [Double]) -> Double {
        let s = xs.sorted()
        guard !s.isEmpty else { return .nan }
        return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
    }
}

@inline(__always)
func nowNanoseconds() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
}

/// Resident set size in bytes, from /proc/self/statm (0 where it does not exist).
func residentBytes() -> Int {
    let fd = open("/proc/self/statm", O_RDONLY)
    guard fd >= 0 else { return 0 }
    defer { close(fd) }
    var buffer = [UInt8](repeating: 0, count: 128)
    let count = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
    guard count > 0 else { return 0 }
    let fields = String(decoding: buffer[0..<count], as: UTF8.self).split(separator: " ")
    guard fields.count > 1, let pages = Int(fields[1]) else { return 0 }
    return pages * Int(sysconf(Int32(_SC_PAGESIZE)))
}

func formatBytes(_ bytes: Int) -> String {
    let b = Double(bytes)
    if Swift.abs(b) >= 1_048_576 { return String(format: "%.1f MiB", b / Double(1 << 20)) }
    if Swift.abs(b) >= 1024 { return String(format: "%.1f KiB", b / Double(1 << 10)) }
    return "\(bytes) B"
}

func pad(_ s: String, _ width: Int) -> String {
    s.count >= width ? s : s + String(repeating: " ", count: width - s.count)
}

func padLeft(_ s: String, _ width: Int) -> String {
    s.count >= width ? s : String(repeating: " ", count: width - s.count) + s
}

// MARK: - Configuration

struct Config: Sendable {
    var quick: Bool
    var reps: Int
    /// Operations per repetition, and repetitions, of the uncontended semaphore scenarios.
    var semaphoreOps: Int
    var semaphoreReps: Int
    var channelUncontendedOps: Int
    var cap1Messages: Int
    var cap1024Messages: Int
    var asyncChannelMessages: Int
    var contendedTasks = 64
    var contendedRoundsPerTask: Int
    /// Run only the scenarios whose key starts with one of these (empty: all).
    var only: [String] = []

    static func make(quick: Bool, reps: Int?) -> Config {
        if quick {
            return Config(quick: true, reps: reps ?? 3, semaphoreOps: 5_000, semaphoreReps: 41,
                          channelUncontendedOps: 100_000,
                          cap1Messages: 20_000, cap1024Messages: 40_000, asyncChannelMessages: 5_000,
                          contendedRoundsPerTask: 200)
        }
        return Config(quick: false, reps: reps ?? 7, semaphoreOps: 20_000, semaphoreReps: 201,
                          channelUncontendedOps: 1_000_000,
                      cap1Messages: 200_000, cap1024Messages: 500_000, asyncChannelMessages: 50_000,
                      contendedRoundsPerTask: 2_000)
    }
}

// MARK: - Benchmarks: Futurelock

enum LedgerMode: String, Sendable {
    case on = "ledger on"
    case off = "ledger off"

    /// A fresh ledger per run when on, so runs do not share registries.
    func make() -> Ledger { self == .on ? Ledger() : Ledger.disabled }
}

enum FuturelockBench {
    /// Scenario 1c: the same loop inside a `TaskTree.scope`, so every holding names a scope node
    /// (which the holding record retains and its release releases).
    static func semaphoreScoped(_ mode: LedgerMode, ops: Int) async throws -> Sample {
        try await TaskTree.scope("bench-scope") { try await semaphoreUncontended(mode, ops: ops) }
    }

    /// The uncontended pair run by a grandchild task (a task-group child of a task-group child), so
    /// every stamp reads two structured ancestors from the runtime.
    static func semaphoreInGrandchild(_ mode: LedgerMode, ops: Int) async throws -> Sample {
        try await withThrowingTaskGroup(of: Sample.self) { outer in
            outer.addTask {
                try await withThrowingTaskGroup(of: Sample.self) { inner in
                    inner.addTask { try await semaphoreUncontended(mode, ops: ops) }
                    return try await inner.next()!
                }
            }
            return try await outer.next()!
        }
    }

    static func semaphoreUncontended(_ mode: LedgerMode, ops: Int) async throws -> Sample {
        let semaphore = try Semaphore(name: "bench-uncontended", permits: 1, ledger: mode.make())
        let start = nowNanoseconds()
        for _ in 0..<ops {
            let permit = try await semaphore.acquire()
            permit.release()
        }
        return Sample(ops: ops, nanoseconds: nowNanoseconds() - start)
    }

    /// The scoped form: `withPermit` around an empty body (no `Permit` object is made).
    static func semaphoreWithPermit(_ mode: LedgerMode, ops: Int) async throws -> Sample {
        let semaphore = try Semaphore(name: "bench-with-permit", permits: 1, ledger: mode.make())
        var count = 0
        let start = nowNanoseconds()
        for _ in 0..<ops {
            try await semaphore.withPermit { count &+= 1 }
        }
        return Sample(ops: ops, nanoseconds: nowNanoseconds() - start, checksum: count)
    }

    static func semaphoreTryAcquire(_ mode: LedgerMode, ops: Int) throws -> Sample {
        let semaphore = try Semaphore(name: "bench-try", permits: 1, ledger: mode.make())
        var granted = 0
        let start = nowNanoseconds()
        for _ in 0..<ops {
            if let permit = semaphore.tryAcquire() {
                granted &+= 1
                permit.release()
            }
        }
        return Sample(ops: ops, nanoseconds: nowNanoseconds() - start, checksum: granted)
    }

    static func semaphoreContended(_ mode: LedgerMode, tasks: Int, rounds: Int) async throws -> Sample {
        let semaphore = try Semaphore(name: "bench-contended", permits: 1, ledger: mode.make())
        let start = nowNanoseconds()
        try await withThrowingDiscardingTaskGroup { group in
            for _ in 0..<tasks {
                group.addTask {
                    for _ in 0..<rounds {
                        let permit = try await semaphore.acquire()
                        permit.release()
                    }
                }
            }
        }
        return Sample(ops: tasks * rounds, nanoseconds: nowNanoseconds() - start)
    }

    static func channelUncontended(_ mode: LedgerMode, capacity: Int, ops: Int) async throws -> Sample {
        let channel = try BoundedChannel<Int>(name: "bench-uncontended", capacity: capacity, ledger: mode.make())
        var sum = 0
        let start = nowNanoseconds()
        for i in 0..<ops {
            try await channel.send(i)
            if let value = try await channel.receive() { sum &+= value }
        }
        return Sample(ops: ops, nanoseconds: nowNanoseconds() - start, checksum: sum)
    }

    static func channelThroughput(_ mode: LedgerMode, capacity: Int, producers: Int, messages: Int) async throws -> Sample {
        let channel = try BoundedChannel<Int>(name: "bench-throughput", capacity: capacity, ledger: mode.make())
        let perProducer = messages / producers
        let total = perProducer * producers
        let start = nowNanoseconds()
        let sum = try await withThrowingTaskGroup(of: Void.self, returning: Int.self) { group in
            for _ in 0..<producers {
                group.addTask {
                    for i in 0..<perProducer { try await channel.send(i) }
                }
            }
            var sum = 0
            for _ in 0..<total {
                guard let value = try await channel.receive() else { break }
                sum &+= value
            }
            try await group.waitForAll()
            return sum
        }
        return Sample(ops: total, nanoseconds: nowNanoseconds() - start, checksum: sum)
    }
}

// MARK: - Benchmarks: the plain Mutex+Deque reference design

/// The same workloads on `PlainReference`: what an uninstrumented FIFO design costs on this runtime.
enum PlainBench {
    static func semaphoreUncontended(ops: Int) async throws -> Sample {
        let semaphore = PlainSemaphore(permits: 1)
        let start = nowNanoseconds()
        for _ in 0..<ops {
            try await semaphore.acquire()
            semaphore.release()
        }
        return Sample(ops: ops, nanoseconds: nowNanoseconds() - start)
    }

    static func semaphoreContended(tasks: Int, rounds: Int) async throws -> Sample {
        let semaphore = PlainSemaphore(permits: 1)
        let start = nowNanoseconds()
        try await withThrowingDiscardingTaskGroup { group in
            for _ in 0..<tasks {
                group.addTask {
                    for _ in 0..<rounds {
                        try await semaphore.acquire()
                        semaphore.release()
                    }
                }
            }
        }
        return Sample(ops: tasks * rounds, nanoseconds: nowNanoseconds() - start)
    }

    static func channelUncontended(ops: Int) async throws -> Sample {
        let channel = PlainChannel<Int>(capacity: 1)
        var sum = 0
        let start = nowNanoseconds()
        for i in 0..<ops {
            try await channel.send(i)
            if let value = await channel.receive() { sum &+= value }
        }
        return Sample(ops: ops, nanoseconds: nowNanoseconds() - start, checksum: sum)
    }

    static func channelThroughput(capacity: Int, producers: Int, messages: Int) async throws -> Sample {
        let channel = PlainChannel<Int>(capacity: capacity)
        let perProducer = messages / producers
        let total = perProducer * producers
        let start = nowNanoseconds()
        let sum = try await withThrowingTaskGroup(of: Void.self, returning: Int.self) { group in
            for _ in 0..<producers {
                group.addTask {
                    for i in 0..<perProducer { try await channel.send(i) }
                }
            }
            var sum = 0
            for _ in 0..<total {
                guard let value = await channel.receive() else { break }
                sum &+= value
            }
            try await group.waitForAll()
            return sum
        }
        return Sample(ops: total, nanoseconds: nowNanoseconds() - start, checksum: sum)
    }
}

// MARK: - Benchmarks: swift-async-algorithms

@available(macOS 15.0, iOS 18.0, tvOS 18.0, watchOS 11.0, visionOS 2.0, *)
final class MPSCSourceBox: @unchecked Sendable {
    // Handed to exactly one producer task, which takes it out before the first send.
    var source: MultiProducerSingleConsumerAsyncChannel<Int, Never>.Source?
}

@available(macOS 15.0, iOS 18.0, tvOS 18.0, watchOS 11.0, visionOS 2.0, *)
enum MPSCBench {
    /// Watermark backpressure closest to a bounded channel of `capacity` slots: producers are
    /// suspended once `capacity` elements are buffered and resumed as soon as fewer than `capacity`
    /// are (low == high). A suspended producer's element is already buffered, so with P producers up to
    /// capacity + P - 1 elements can be in flight.
    static func strategy(capacity: Int) -> MultiProducerSingleConsumerAsyncChannel<Int, Never>.Source.BackpressureStrategy {
        .watermark(low: capacity, high: capacity)
    }

    static func throughput(capacity: Int, producers: Int, messages: Int) async throws -> Sample {
        var pair = MultiProducerSingleConsumerAsyncChannel.makeChannel(
            of: Int.self, backpressureStrategy: strategy(capacity: capacity))
        var channel = pair.takeChannel()
        var source = consume pair.source
        let boxes = (0..<producers).map { _ in MPSCSourceBox() }
        for index in 1..<max(producers, 1) { boxes[index].source = source.makeAdditionalSource() }
        boxes[0].source = consume source
        let perProducer = messages / producers
        let total = perProducer * producers
        let start = nowNanoseconds()
        var sum = 0
        try await withThrowingDiscardingTaskGroup { group in
            for box in boxes {
                group.addTask {
                    var source = box.source.take()!
                    for i in 0..<perProducer { try await source.send(i) }
                    // No finish(): finishing one source finishes the channel for all; dropping the last
                    // source finishes it.
                    _ = consume source
                }
            }
            var received = 0
            while received < total, let value = await channel.next() {
                sum &+= value
                received += 1
            }
        }
        return Sample(ops: total, nanoseconds: nowNanoseconds() - start, checksum: sum)
    }

    /// Reference only: one task sends then receives (watermark 1024, so the send never suspends).
    static func uncontended(ops: Int) async throws -> Sample {
        var pair = MultiProducerSingleConsumerAsyncChannel.makeChannel(
            of: Int.self, backpressureStrategy: strategy(capacity: 1024))
        var channel = pair.takeChannel()
        var source = consume pair.source
        var sum = 0
        let start = nowNanoseconds()
        for i in 0..<ops {
            try await source.send(i)
            if let value = await channel.next() { sum &+= value }
        }
        let elapsed = nowNanoseconds() - start
        source.finish()
        return Sample(ops: ops, nanoseconds: elapsed, checksum: sum)
    }
}

enum AsyncChannelBench {
    /// AsyncChannel is a rendezvous channel: every send waits for its receive, whatever "capacity" says.
    static func throughput(producers: Int, messages: Int) async throws -> Sample {
        let channel = AsyncChannel<Int>()
        let perProducer = messages / producers
        let total = perProducer * producers
        let start = nowNanoseconds()
        var sum = 0
        await withDiscardingTaskGroup { group in
            for _ in 0..<producers {
                group.addTask {
                    for i in 0..<perProducer { await channel.send(i) }
                }
            }
            var iterator = channel.makeAsyncIterator()
            var received = 0
            while received < total, let value = await iterator.next() {
                sum &+= value
                received += 1
            }
        }
        channel.finish()
        return Sample(ops: total, nanoseconds: nowNanoseconds() - start, checksum: sum)
    }
}

// MARK: - The suite

enum Suite {
    static let on = LedgerMode.on.rawValue
    static let off = LedgerMode.off.rawValue
    static let mpsc = "MPSC channel"
    static let asyncChannel = "AsyncChannel"
    static let plain = "plain Mutex+Deque"

    static func scenarios(_ config: Config) -> [Scenario] {
        var scenarios: [Scenario] = []
        let semOps = config.semaphoreOps
        scenarios.append(Scenario(
            key: "sem-uncontended", title: "1. Semaphore acquire()+release(), uncontended", metric: .nsPerOp,
            variants: [LedgerMode.on, .off].map { mode in
                Variant(name: mode.rawValue) { try await FuturelockBench.semaphoreUncontended(mode, ops: semOps) }
            } + [Variant(name: plain) { try await PlainBench.semaphoreUncontended(ops: semOps) }],
            reps: config.semaphoreReps))
        scenarios.append(Scenario(
            key: "sem-with-permit", title: "1a. Semaphore withPermit { }, uncontended", metric: .nsPerOp,
            variants: [LedgerMode.on, .off].map { mode in
                Variant(name: mode.rawValue) { try await FuturelockBench.semaphoreWithPermit(mode, ops: semOps) }
            } + [Variant(name: plain) { try await PlainBench.semaphoreUncontended(ops: semOps) }],
            reps: config.semaphoreReps))
        scenarios.append(Scenario(
            key: "sem-try", title: "1b. Semaphore tryAcquire()+release() (sync path)", metric: .nsPerOp,
            variants: [LedgerMode.on, .off].map { mode in
                Variant(name: mode.rawValue) { try FuturelockBench.semaphoreTryAcquire(mode, ops: semOps) }
            }, reps: config.semaphoreReps, isTarget: false))

        scenarios.append(Scenario(
            key: "sem-scoped", title: "1c. acquire()+release() inside a TaskTree.scope", metric: .nsPerOp,
            variants: [LedgerMode.on, .off].map { mode in
                Variant(name: mode.rawValue) { try await FuturelockBench.semaphoreScoped(mode, ops: semOps) }
            }, reps: config.semaphoreReps, isTarget: false))
        scenarios.append(Scenario(
            key: "sem-grandchild", title: "1d. acquire()+release() in a grandchild task (ancestry read)", metric: .nsPerOp,
            variants: [LedgerMode.on, .off].map { mode in
                Variant(name: mode.rawValue) { try await FuturelockBench.semaphoreInGrandchild(mode, ops: semOps) }
            }, reps: config.semaphoreReps, isTarget: false))

        let shapes: [(key: String, title: String, capacity: Int, producers: Int, messages: Int)] = [
            ("cap1-1p", "2a. send+receive, capacity 1, 1 producer -> 1 consumer", 1, 1, config.cap1Messages),
            ("cap1024-1p", "2b. send+receive, capacity 1024, 1 producer -> 1 consumer", 1024, 1, config.cap1024Messages),
            ("cap1024-16p", "2c. send+receive, capacity 1024, 16 producers -> 1 consumer", 1024, 16, config.cap1024Messages),
        ]
        let asyncMessages = config.asyncChannelMessages
        for shape in shapes {
            var variants = [LedgerMode.on, .off].map { mode in
                Variant(name: mode.rawValue) {
                    try await FuturelockBench.channelThroughput(mode, capacity: shape.capacity,
                                                                producers: shape.producers, messages: shape.messages)
                }
            }
            variants.append(Variant(name: plain) {
                try await PlainBench.channelThroughput(capacity: shape.capacity, producers: shape.producers,
                                                       messages: shape.messages)
            })
            if #available(macOS 15.0, iOS 18.0, tvOS 18.0, watchOS 11.0, visionOS 2.0, *) {
                variants.append(Variant(name: mpsc) {
                    try await MPSCBench.throughput(capacity: shape.capacity, producers: shape.producers,
                                                   messages: shape.messages)
                })
            }
            variants.append(Variant(name: asyncChannel) {
                try await AsyncChannelBench.throughput(producers: shape.producers, messages: asyncMessages)
            })
            scenarios.append(Scenario(key: shape.key, title: shape.title, metric: .perSecond("msg"), variants: variants))
        }

        let chanOps = config.channelUncontendedOps
        var uncontended = [LedgerMode.on, .off].map { mode in
            Variant(name: mode.rawValue) { try await FuturelockBench.channelUncontended(mode, capacity: 1, ops: chanOps) }
        }
        uncontended.append(Variant(name: plain) { try await PlainBench.channelUncontended(ops: chanOps) })
        if #available(macOS 15.0, iOS 18.0, tvOS 18.0, watchOS 11.0, visionOS 2.0, *) {
            uncontended.append(Variant(name: mpsc + " (ref)") { try await MPSCBench.uncontended(ops: chanOps) })
        }
        scenarios.append(Scenario(
            key: "chan-uncontended", title: "3. send then receive in one task, capacity 1", metric: .nsPerOp,
            variants: uncontended))

        let tasks = config.contendedTasks, rounds = config.contendedRoundsPerTask
        scenarios.append(Scenario(
            key: "sem-contended", title: "4. contended hand-off: 1 permit, \(tasks) tasks acquire/release",
            metric: .perSecond("op"),
            variants: [LedgerMode.on, .off].map { mode in
                Variant(name: mode.rawValue) {
                    try await FuturelockBench.semaphoreContended(mode, tasks: tasks, rounds: rounds)
                }
            } + [Variant(name: plain) { try await PlainBench.semaphoreContended(tasks: tasks, rounds: rounds) }]))
        return scenarios
    }

    static func run(_ config: Config) async throws {
        let header = "futurelock-bench: \(config.quick ? "QUICK (reduced counts; figures are indicative only)" : "full run")"
            + ", \(config.reps) measured repetitions + 1 warm-up, medians [min..max]"
        print(header)
        print("cores: \(ProcessInfo.processInfo.activeProcessorCount)")
        print("")
        var results: [Result] = []
        var checksum = 0
        print(pad("scenario / variant", 44) + padLeft("median", 20) + "   " + "[min .. max]")
        print(String(repeating: "-", count: 100))
        for scenario in scenarios(config)
        where config.only.isEmpty || config.only.contains(where: { scenario.key.hasPrefix($0) }) {
            var values = Array(repeating: [Double](), count: scenario.variants.count)
            for rep in 0...(scenario.reps ?? config.reps) {
                for step in 0..<scenario.variants.count {
                    let index = (step + rep) % scenario.variants.count
                    let sample = try await scenario.variants[index].run()
                    checksum &+= sample.checksum
                    if rep > 0 { values[index].append(scenario.metric.value(sample)) }
                }
            }
            let result = Result(scenario: scenario, values: values)
            results.append(result)
            print(scenario.title)
            for (index, variant) in scenario.variants.enumerated() {
                let xs = values[index]
                let line = "    " + pad(variant.name, 40)
                    + padLeft(scenario.metric.format(Stats.median(xs)), 20)
                    + "   [" + scenario.metric.format(xs.min() ?? .nan) + " .. " + scenario.metric.format(xs.max() ?? .nan) + "]"
                print(line)
            }
        }
        print(String(repeating: "-", count: 100))
        printRatios(results)
        print("")
        print("(checksum \(checksum))")
    }

    static func printRatios(_ results: [Result]) {
        func result(_ key: String) -> Result? { results.first { $0.scenario.key == key } }

        print("")
        print("Ledger cost: time/op with ledger on ÷ time/op with ledger off  (target ≤ 1.30, aim ≤ 1.10)")
        print("    " + pad("scenario", 46) + padLeft("per-rep med", 12) + padLeft("of medians", 11)
              + padLeft("of bests", 10) + "   verdict (per-rep median)")
        var missed: [String] = []
        var extraOver: [String] = []
        for r in results where r.series(on) != nil && r.series(off) != nil {
            let metric = r.scenario.metric
            let onCosts = r.series(on)!.map(metric.cost), offCosts = r.series(off)!.map(metric.cost)
            let ofMedians = Stats.median(onCosts) / Stats.median(offCosts)
            let ofBests = (onCosts.min() ?? .nan) / (offCosts.min() ?? .nan)
            let paired = Stats.median(zip(onCosts, offCosts).map { $0 / $1 })
            let verdict: String
            if r.scenario.isTarget {
                verdict = paired <= 1.10 ? "met (within aim)" : paired <= 1.30 ? "met" : "MISSED"
                if paired > 1.30 { missed.append(r.scenario.title) }
            } else {
                verdict = (paired <= 1.30 ? "within 1.30" : "OVER 1.30") + " (extra scenario, not a target)"
                if paired > 1.30 { extraOver.append(r.scenario.title + String(format: ": %.2fx", paired)) }
            }
            print("    " + pad(r.scenario.title.prefix(46).description, 46)
                  + padLeft(String(format: "%.2fx", paired), 12) + padLeft(String(format: "%.2fx", ofMedians), 11)
                  + padLeft(String(format: "%.2fx", ofBests), 10) + "   " + verdict)
        }

        print("")
        print("Our channel vs MultiProducerSingleConsumerAsyncChannel: msg/s ours ÷ msg/s MPSC  (target ≥ 1.00 with the ledger on)")
        print("    " + pad("scenario", 46) + padLeft("ledger on", 11) + padLeft("ledger off", 12) + padLeft("on, per-rep", 13) + "   verdict (ledger on)")
        for key in ["cap1-1p", "cap1024-1p", "cap1024-16p"] {
            guard let r = result(key), let m = r.median(mpsc), let onMedian = r.median(on), let offMedian = r.median(off) else {
                print("    \(key): MPSC channel not measured on this platform")
                continue
            }
            let paired = Stats.median(zip(r.series(on)!, r.series(mpsc)!).map { $0 / $1 })
            let ratio = onMedian / m
            if ratio < 1.0 { missed.append(r.scenario.title + " vs MPSC") }
            print("    " + pad(r.scenario.title.prefix(46).description, 46)
                  + padLeft(String(format: "%.2fx", ratio), 11) + padLeft(String(format: "%.2fx", offMedian / m), 12)
                  + padLeft(String(format: "%.2fx", paired), 13)
                  + "   " + (ratio >= 1.0 ? "met" : "MISSED"))
        }
        if let r = result("chan-uncontended"), let m = r.median(mpsc + " (ref)"), let onMedian = r.median(on) {
            print("    " + pad("3. one task send then receive (time/op, ref)", 46)
                  + padLeft(String(format: "%.2fx", m / onMedian), 11)
                  + padLeft(String(format: "%.2fx", m / (r.median(off) ?? .nan)), 12)
                  + padLeft("", 13) + "   (reference: MPSC ns/op ÷ ours; >1 = ours faster)")
        }
        print("")
        print("Ours vs the plain Mutex+Deque design: time/op ours ÷ time/op plain, per-rep medians")
        print("  (targets: ledger off ≤ 1.20 everywhere; ledger on ≤ 1.50 for uncontended acquire+release, ≤ 1.20 elsewhere)")
        print("    " + pad("scenario", 46) + padLeft("off÷plain", 11) + padLeft("on÷plain", 10) + "   verdict")
        for r in results where r.series(plain) != nil {
            let metric = r.scenario.metric
            let plainCosts = r.series(plain)!.map(metric.cost)
            func ratio(_ variant: String) -> Double? {
                r.series(variant).map { Stats.median(zip($0.map(metric.cost), plainCosts).map { $0 / $1 }) }
            }
            guard let offRatio = ratio(off), let onRatio = ratio(on) else { continue }
            let onTarget = r.scenario.key.hasPrefix("sem-uncontended") || r.scenario.key == "sem-with-permit" ? 1.50 : 1.20
            let met = offRatio <= 1.20 && onRatio <= onTarget
            if !met { missed.append(r.scenario.title + " vs plain") }
            print("    " + pad(r.scenario.title.prefix(46).description, 46)
                  + padLeft(String(format: "%.2fx", offRatio), 11) + padLeft(String(format: "%.2fx", onRatio), 10)
                  + "   " + (met ? "met" : "MISSED"))
        }
        print("")
        if missed.isEmpty {
            print("All targets met in this run.")
        } else {
            print("Targets MISSED in this run (\(missed.count)):")
            for m in missed { print("    - \(m)") }
        }
        if !extraOver.isEmpty {
            print("Extra scenarios over the 1.30 line (\(extraOver.count)):")
            for m in extraOver { print("    - \(m)") }
        }
    }
}

// MARK: - Scale mode

enum Scale {
    static func measure<T>(_ label: String, _ body: () throws -> T) rethrows -> (T, String) {
        let rss0 = residentBytes()
        let start = nowNanoseconds()
        let value = try body()
        let elapsed = nowNanoseconds() - start
        let rss1 = residentBytes()
        return (value, line(label, elapsed) + "   RSS +" + formatBytes(rss1 - rss0))
    }

    static func line(_ label: String, _ nanoseconds: UInt64) -> String {
        "    " + pad(label, 44) + padLeft(String(format: "%.3f s", Double(nanoseconds) / 1e9), 10)
    }

    static func lineCount(_ s: String) -> Int {
        var n = 0
        for byte in s.utf8 where byte == UInt8(ascii: "\n") { n += 1 }
        if let last = s.utf8.last, last != UInt8(ascii: "\n") { n += 1 }
        return n
    }

    static func run(waiters: Int) async throws {
        print("futurelock-bench scale: \(waiters) tasks parked on one Semaphore (ledger on) behind one held permit")
        let ledger = Ledger()
        let semaphore = try Semaphore(name: "scale", permits: 1, ledger: ledger)
        let held = try await semaphore.acquire()
        let rssBefore = residentBytes()
        let parkStart = nowNanoseconds()
        let releaseStart = try await withThrowingDiscardingTaskGroup(returning: UInt64.self) { group in
            for _ in 0..<waiters {
                group.addTask {
                    let permit = try await semaphore.acquire()
                    permit.release()
                }
            }
            // Wait until every task is queued (polling with yields, no sleeps).
            while semaphore.waitingCount < waiters { await Task.yield() }
            let parked = nowNanoseconds() - parkStart
            let rssParked = residentBytes()
            print(Scale.line("park \(waiters) waiters", parked) + "   RSS +" + formatBytes(rssParked - rssBefore)
                  + String(format: "   (%.2f KiB per waiter)", Double(rssParked - rssBefore) / Double(waiters) / 1024))

            let (snapshot, snapshotLine) = Scale.measure("ledger.snapshot()") { ledger.snapshot() }
            print(snapshotLine + "   (\(snapshot.waits.count) waits, \(snapshot.holdings.count) holdings)")

            let watchdog = Watchdog(ledger: ledger)
            let checkStart = nowNanoseconds()
            let (report, checkLine) = Scale.measure("Watchdog(ledger:).check()") { watchdog.check() }
            let checkSeconds = Double(nowNanoseconds() - checkStart) / 1e9
            print(checkLine + "   (\(report.findings.count) findings: \(report.findings.map { $0.kind.rawValue }.joined(separator: ", ")))")

            // Same state, thresholds at zero, so the 200k-waiter stall is a finding and the dump has to
            // group it.
            let strict = Watchdog(ledger: ledger, configuration: .init(
                waitThreshold: .zero, policy: DetectionPolicy(gracePeriod: .zero, stallThreshold: .zero, leakThreshold: .zero)))
            let (strictReport, strictLine) = Scale.measure("check() with zero thresholds") { strict.check() }
            print(strictLine + "   (\(strictReport.findings.count) findings: \(strictReport.findings.map { $0.kind.rawValue }.joined(separator: ", ")))")

            var ungrouped: [String] = []
            for (name, r) in [("default", report), ("zero thresholds", strictReport)] {
                for format in [DumpFormat.text, .jsonLines] {
                    let (text, line) = try Scale.measure("render(.\(format)) [\(name)]") { try r.dump.render(format) }
                    let lines = lineCount(text)
                    print(line + "   (\(lines) lines, \(formatBytes(text.utf8.count)))")
                    // "Grouped": the dump must not grow with the number of waiters.
                    if lines > 1_000 || lines * 10 > waiters { ungrouped.append(".\(format) [\(name)]: \(lines) lines") }
                }
            }
            print("  targets:")
            print("    full check under 1 s: " + String(format: "%.3f s", checkSeconds)
                  + (checkSeconds < 1.0 ? "  met" : "  MISSED"))
            for format in [DumpFormat.text, .jsonLines] {
                let bad = ungrouped.filter { $0.hasPrefix(".\(format) ") }
                print("    .\(format) dump grouped (size independent of the \(waiters) waiters): "
                      + (bad.isEmpty ? "met" : "MISSED (" + bad.joined(separator: "; ") + ")"))
            }
            print("  (RSS deltas are indicative: freed memory is reused by the allocator and not returned)")

            // Release: the permit is handed from waiter to waiter; the group then waits for every task.
            let releaseStart = nowNanoseconds()
            held.release()
            return releaseStart
        }
        let released = nowNanoseconds() - releaseStart
        print(Scale.line("release and unwind", released) + "   (all \(waiters) tasks acquired, released, finished)")
        print("    RSS now: \(formatBytes(residentBytes())) (was \(formatBytes(rssBefore)) before parking)")
    }
}

// MARK: - Memory per parked waiter

/// Bytes per task parked on one semaphore, ours (ledger off and on) against the plain design. Each
/// variant runs in a fresh process (so no variant reuses memory another freed): it parks `waiters`
/// tasks behind one held permit and reports the growth of the resident set ÷ `waiters` — the task's
/// own record, its allocator slab, its async frames and the queue entry.
enum MemoryPerWaiter {
    static func park(_ waiters: Int, acquire: @escaping @Sendable () async throws -> Void,
                     waiting: @escaping @Sendable () -> Int, release: () -> Void) async throws -> Double {
        let before = residentBytes()
        var perWaiter = 0.0
        try await withThrowingDiscardingTaskGroup { group in
            for _ in 0..<waiters { group.addTask { try await acquire() } }
            while waiting() < waiters { await Task.yield() }
            perWaiter = Double(residentBytes() - before) / Double(waiters)
            release()
        }
        return perWaiter
    }

    static func measure(_ variant: String, waiters: Int) async throws -> Double {
        switch variant {
        case "plain":
            let semaphore = PlainSemaphore(permits: 1)
            try await semaphore.acquire()
            return try await park(waiters, acquire: { try await semaphore.acquire(); semaphore.release() },
                                  waiting: { semaphore.waitingCount }, release: { semaphore.release() })
        default:
            let mode: LedgerMode = variant == "on" ? .on : .off
            let semaphore = try Semaphore(name: "memory", permits: 1, ledger: mode.make())
            let held = try await semaphore.acquire()
            return try await park(waiters, acquire: { try await semaphore.acquire().release() },
                                  waiting: { semaphore.waitingCount }, release: { held.release() })
        }
    }

    /// Runs each variant three times, each in a child process, and prints the medians.
    static func run(waiters: Int) throws {
        print("futurelock-bench memory: resident bytes per task parked on one semaphore (\(waiters) waiters, each run in a fresh process, median of 3)")
        var results: [(String, Double)] = []
        for (variant, name) in [("plain", Suite.plain), ("off", Suite.off), ("on", Suite.on)] {
            var samples: [Double] = []
            for _ in 0..<3 {
                let process = Process()
                process.executableURL = URL(fileURLWithPath: CommandLine.arguments[0])
                process.arguments = ["memory", "--variant", variant, "--waiters", String(waiters)]
                let pipe = Pipe()
                process.standardOutput = pipe
                try process.run()
                let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
                process.waitUntilExit()
                guard process.terminationStatus == 0,
                      let value = Double(output.trimmingCharacters(in: .whitespacesAndNewlines)) else {
                    throw BenchError("memory run for \(variant) failed: \(output)")
                }
                samples.append(value)
            }
            results.append((name, Stats.median(samples)))
        }
        let plainBytes = results[0].1
        for (name, bytes) in results {
            print("    " + pad(name, 24) + padLeft(String(format: "%.0f B", bytes), 10)
                  + padLeft(String(format: "%.2fx plain", bytes / plainBytes), 14)
                  + padLeft(String(format: "%+.0f B", bytes - plainBytes), 10))
        }
        let worst = results.dropFirst().map(\.1).max() ?? plainBytes
        print("  target: within 10% of the plain design: " + (worst <= plainBytes * 1.10 ? "met" : "MISSED")
              + String(format: " (worst %.2fx)", worst / plainBytes))
    }
}

struct BenchError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

// MARK: - Entry point

struct Arguments {
    var scale = false
    var memory = false
    var memoryVariant: String?
    var pieces = false
    var quick = false
    var waiters = 200_000
    var reps: Int?
    var only: [String] = []

    init(_ args: [String]) {
        var i = 0
        while i < args.count {
            switch args[i] {
            case "scale": scale = true
            case "memory": memory = true
            case "--variant":
                i += 1
                if i < args.count, ["plain", "off", "on"].contains(args[i]) { memoryVariant = args[i] } else { Arguments.usage() }
            case "pieces": pieces = true
            case "--quick": quick = true
            case "--waiters":
                i += 1
                if i < args.count, let n = Int(args[i]), n > 0 { waiters = n } else { Arguments.usage() }
            case "--reps":
                i += 1
                if i < args.count, let n = Int(args[i]), n > 0 { reps = n } else { Arguments.usage() }
            case "--only":
                i += 1
                if i < args.count { only.append(args[i]) } else { Arguments.usage() }
            case "-h", "--help": Arguments.usage(exitCode: 0)
            default: Arguments.usage()
            }
            i += 1
        }
    }

    static func usage(exitCode: Int32 = 2) -> Never {
        print("usage: futurelock-bench [--quick] [--reps N] [--only KEY-PREFIX]...\n       futurelock-bench scale [--waiters N] [--quick]\n       futurelock-bench memory [--waiters N]\n       futurelock-bench pieces")
        exit(exitCode)
    }
}

/// What one ledger-on acquire+release is made of: each read the stamp makes, timed alone the way the
/// ledger makes it (and the public, slower way beside it), next to the whole operation with the
/// ledger on and off.
enum LedgerPieces {
    @inline(never) static func sink<T>(_ value: T) { withExtendedLifetime(value) {} }

    static func time(_ operations: Int, _ body: () -> Void) -> Double {
        let start = nowNanoseconds()
        body()
        return Double(nowNanoseconds() - start) / Double(operations)
    }

    static func run() {
        let operations = 2_000_000
        let ledger = Ledger()
        print("futurelock-bench pieces: ns per call, \(operations) calls, 5 rounds (best round last)")
        print("  vDSO clock entry point found: \(LedgerProbes.usesVDSOClock(ledger))")
        var rows: [[Double]] = []
        for _ in 1...5 {
            var accumulator: UInt64 = 0
            var bound = 0
            let taskID = time(operations) { for _ in 0..<operations { accumulator &+= LedgerProbes.taskID(ledger) } }
            let publicTaskID = time(operations) { for _ in 0..<operations { accumulator &+= TaskID.current.rawValue } }
            let node = time(operations) { for _ in 0..<operations { if LedgerProbes.hasNode(ledger) { bound &+= 1 } } }
            let publicNode = time(operations) { for _ in 0..<operations { sink(TaskTree.currentNode) } }
            let clock = time(operations) { for _ in 0..<operations { accumulator &+= LedgerProbes.coarseNanoseconds(ledger) } }
            let publicClock = time(operations) { for _ in 0..<operations { accumulator &+= MonotonicInstant.coarseNow.nanoseconds } }
            let on = try! Semaphore(name: "pieces-on", permits: 1, ledger: Ledger())
            let off = try! Semaphore(name: "pieces-off", permits: 1, ledger: .disabled)
            let withLedger = time(operations) { for _ in 0..<operations { on.tryAcquire()!.release() } }
            let withoutLedger = time(operations) { for _ in 0..<operations { off.tryAcquire()!.release() } }
            sink(accumulator &+ UInt64(bound))
            rows.append([taskID, publicTaskID, node, publicNode, clock, publicClock, withLedger, withoutLedger])
        }
        func f(_ value: Double) -> String { String(format: "%5.1f", value) }
        print("  " + ["task id", "(TaskID.current)", "node", "(currentNode)", "clock", "(coarseNow)",
                      "on", "off"].map { pad($0, 9) }.joined(separator: " "))
        for row in rows.sorted(by: { $0[6] > $1[6] }) {
            print("  " + row.map { pad(f($0), 9) }.joined(separator: " "))
        }
        print("  an acquire makes the three reads in the first, third and fifth columns; a release none")
        print("  (unless event history is on). The parenthesised columns are the public APIs, for comparison.")
    }
}

let arguments = Arguments(Array(CommandLine.arguments.dropFirst()))
do {
    try await Task.detached {
        if arguments.pieces {
            LedgerPieces.run()
        } else if arguments.memory, let variant = arguments.memoryVariant {
            print(String(format: "%.1f", try await MemoryPerWaiter.measure(variant, waiters: arguments.waiters)))
        } else if arguments.memory {
            try MemoryPerWaiter.run(waiters: arguments.waiters)
        } else if arguments.scale {
            try await Scale.run(waiters: arguments.quick && arguments.waiters == 200_000 ? 10_000 : arguments.waiters)
        } else {
            var config = Config.make(quick: arguments.quick, reps: arguments.reps)
            config.only = arguments.only
            try await Suite.run(config)
        }
    }.value
} catch {
    print("futurelock-bench: error: \(error)")
    exit(1)
}
