// Shared machinery of the model-checked state-machine tests (`*ModelTests`).
//
// Each model test drives one primitive's state machine (the value type that holds all of its logic)
// with random programs — sequences of operations, each exactly the sequence of state-machine calls the
// wrapper class makes for it — and runs a small reference model beside it. After every operation it
// compares the two and checks the rules of the primitive's file header: capacity conserved, FIFO
// hand-off, no message lost or duplicated, every continuation resumed exactly once.
//
// Programs come from PropertyBased (`propertyCheck`) with a custom generator: operations are generated
// independently of the state, and every operation names what it acts on by a number taken modulo
// what exists when it runs (a waiter, a permit, a lease), doing nothing if nothing does. So any
// subsequence of a program is a valid program, and the shrinker (`ProgramShrinker`, delta debugging by
// removing chunks) can cut a failing program of thousands of operations down to the few that matter.
//
// Continuations. The machines store `UnsafeContinuation`s and hand them back in their actions; the
// wrapper resumes each continuation it is handed exactly once (see the wrappers). So "every waiter is
// resumed exactly once" is, at the machine's level, "every continuation given to the machine comes
// back in exactly one action". Two modes check it:
//   - forged: a continuation is a bit pattern naming a serial number (`UnsafeContinuation` is one raw
//     pointer, trivially copyable, and the machines only store, compare-by-identity and return it).
//     The pattern must look like a real pointer (aligned, ≥ 4096): small values are the pointer's
//     extra inhabitants, which enums use as their tags (`Optional.none`, other cases).
//     It is never resumed — the token's return is the observation. Only valid with the ledger off
//     (nil stamps): with a stamp, a hand-off reads the waiter's task object through the continuation.
//     This is the mode that runs the bulk (10^6 operations in seconds).
//   - real: each continuation belongs to a real suspended task, made in batches; the test resumes
//     what the machine hands back, each task records what it was resumed with, and at the end of each
//     program every record must match what the model expected. Runs with the ledger on (stamps, so
//     the holding tables and the hand-off's reading of the waiter's task are exercised too).
// A continuation handed back twice, or one never handed back, is a failure in both modes; a real one
// is never resumed twice (the token ledger refuses), and tasks left suspended by a failing program
// are resumed with `HarnessCleanup` so that no task leaks.
//
// Reproducing. A failure prints the program (shrunk) and PropertyBased's seed; rerun that one program
// with `FUTURELOCK_MODEL_SEED='<seed>' swift test --skip-build --filter <the test>` (the seed is the
// base64 string inside `.fixedSeed("…")`; filter to the one test, since every model test runs that
// seed). PropertyBased then runs that single program (and shrinks it again); once the bug is fixed
// it reports "A fixed seed was used, but no expectation failure occured" — unset the variable.
// `FUTURELOCK_MODEL_SCALE=<n>` multiplies the number of programs (a longer soak).

import PropertyBased
import Synchronization
import Testing
@testable import Futurelock

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// MARK: - Seeds, scale and reporting

enum ModelRun {
    static let seedVariable = "FUTURELOCK_MODEL_SEED"
    static let scaleVariable = "FUTURELOCK_MODEL_SCALE"

    static func environment(_ name: String) -> String? {
        guard let value = getenv(name) else { return nil }
        let string = String(cString: value)
        return string.isEmpty ? nil : string
    }

    /// `.fixedSeed(…)` from `FUTURELOCK_MODEL_SEED` (one program, that seed), else the default
    /// (shrinking on). Evaluated when the tests are discovered.
    static var seedTrait: any TestTrait {
        guard let seed = environment(seedVariable) else { return EnableShrinkTrait.shrinking(true) }
        let trimmed = seed.filter { $0 != "\"" && $0 != "(" && $0 != ")" }
        guard let rng = Xoshiro(seed: trimmed) else {
            return EnableShrinkTrait.shrinking(true)  // reported by `checkSeedVariable()`
        }
        let state = rng.currentState
        return FixedSeedTrait.fixedSeed(state.0, state.1, state.2, state.3)
    }

    /// Records an issue when `FUTURELOCK_MODEL_SEED` is set but is not a seed.
    static func checkSeedVariable() {
        guard let seed = environment(seedVariable) else { return }
        let trimmed = seed.filter { $0 != "\"" && $0 != "(" && $0 != ")" }
        if Xoshiro(seed: trimmed) == nil {
            Issue.record("\(seedVariable)=\(seed) is not a PropertyBased seed (the base64 string in `.fixedSeed(\"…\")`)")
        }
    }

    /// Programs to run: `base` times `FUTURELOCK_MODEL_SCALE` (default 1).
    static func programs(_ base: Int) -> Int {
        let scale = environment(scaleVariable).flatMap { Double($0) } ?? 1
        return max(1, Int((Double(base) * scale).rounded()))
    }

    static func seconds(_ duration: Duration) -> Double {
        let (s, attoseconds) = duration.components
        return Double(s) + Double(attoseconds) / 1e18
    }
}

/// What a model test counts, for its closing line (and the report quoting it).
final class ModelStats: @unchecked Sendable {
    // Only touched by the test's own task, one program at a time.
    var programs = 0
    var operations = 0
    var drainOperations = 0
    var episodes = 0
    var maxQueue = 0
    var events: [String: Int] = [:]

    func note(_ event: String, _ count: Int = 1) { events[event, default: 0] += count }

    static func twoDecimals(_ value: Double) -> String {
        let hundredths = Int((value * 100).rounded())
        let fraction = hundredths % 100
        return "\(hundredths / 100).\(fraction < 10 ? "0" : "")\(fraction)"
    }

    func line(_ name: String, elapsed: Duration) -> String {
        let seconds = ModelRun.seconds(elapsed)
        let total = operations + drainOperations
        let perOp = total > 0 ? seconds / Double(total) * 1e6 : 0
        let interesting = events.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
        return "[model] \(name): \(operations) operations + \(drainOperations) drain steps checked "
            + "(\(programs) programs, \(episodes) machine lifetimes, longest queue \(maxQueue)) in "
            + "\(Self.twoDecimals(seconds)) s (\(Self.twoDecimals(perOp)) µs/op); \(interesting)"
    }
}

// MARK: - Programs and shrinking

/// A deterministic generator for one program (seeded from PropertyBased's generator).
struct SplitMix: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    mutating func below(_ bound: Int) -> Int { Int(next() % UInt64(bound)) }
    mutating func chance(_ percent: Int) -> Bool { below(100) < percent }
    mutating func pick() -> UInt16 { UInt16(truncatingIfNeeded: next()) }
    /// A number in `range`.
    mutating func within(_ range: ClosedRange<Int>) -> Int { range.lowerBound + below(range.count) }

    /// An index drawn with the given weights.
    mutating func weighted(_ weights: [Int]) -> Int {
        let total = weights.reduce(0, +)
        var roll = below(total)
        for (index, weight) in weights.enumerated() {
            if roll < weight { return index }
            roll -= weight
        }
        return weights.count - 1
    }
}

/// One random program: a profile (for the printout) and the operations.
struct ModelProgram<Op: Sendable & CustomStringConvertible>: Sendable, CustomTestStringConvertible {
    var profile: String
    var capacity: Int
    var ops: [Op]
    /// Seeds the choices the end-of-lifetime drain makes (send or release a permit, and so on).
    var drainSeed: UInt64

    var testDescription: String {
        let shown = ops.count <= 300 ? ops : Array(ops.prefix(60))
        let list = shown.enumerated().map { "\($0.offset): \($0.element)" }.joined(separator: ", ")
        let more = ops.count > shown.count ? ", … (\(ops.count - shown.count) more; shrinking prints the short form)" : ""
        return "program[\(profile), capacity \(capacity), \(ops.count) ops, drain \(drainSeed)] { \(list)\(more) }"
    }
}

/// Delta-debugging candidates: the program without one chunk, chunks halving from half the program
/// down to single operations. Lazy, so a long program costs nothing until it fails.
struct ProgramShrinker<Op: Sendable & CustomStringConvertible>: Sequence, Sendable {
    let program: ModelProgram<Op>

    struct Iterator: IteratorProtocol {
        let program: ModelProgram<Op>
        var chunk: Int
        var start = 0
        var triedSmallerCapacity = false

        mutating func next() -> ModelProgram<Op>? {
            let count = program.ops.count
            while chunk >= 1 {
                if start < count {
                    var candidate = program
                    candidate.ops.removeSubrange(start..<Swift.min(count, start + chunk))
                    start += chunk
                    return candidate
                }
                chunk /= 2
                start = 0
            }
            if !triedSmallerCapacity, program.capacity > 1 {
                triedSmallerCapacity = true
                var candidate = program
                candidate.capacity -= 1
                return candidate
            }
            return nil
        }
    }

    func makeIterator() -> Iterator {
        Iterator(program: program, chunk: Swift.max(1, program.ops.count / 2))
    }
}

extension ModelProgram {
    /// A random program of a profile: a length drawn from `length`, each operation made by `op` from
    /// the index `weights` draws, then the first machine's capacity drawn from `capacities` and the
    /// drain seed — in this order, which (with the profile drawn first) fixes the program a seed makes.
    static func random(_ rng: inout SplitMix, profile: String, capacities: ClosedRange<Int>, weights: [Int],
                       length: ClosedRange<Int>, op: (inout SplitMix, Int) -> Op) -> ModelProgram {
        let count = rng.within(length)
        var ops: [Op] = []
        ops.reserveCapacity(count)
        for _ in 0..<count {
            let choice = rng.weighted(weights)
            ops.append(op(&rng, choice))
        }
        return ModelProgram(profile: profile, capacity: rng.within(capacities), ops: ops, drainSeed: rng.next())
    }

    /// A PropertyBased generator of programs from `make` (given a seed), shrinking with `ProgramShrinker`.
    static func generator(_ make: @escaping @Sendable (inout SplitMix) -> ModelProgram)
        -> Generator<ModelProgram, ProgramShrinker<Op>> {
        Generator(run: { rng in
            var local = SplitMix(seed: rng.next())
            return make(&local)
        }, shrink: { ProgramShrinker(program: $0) })
    }
}

// MARK: - The driver, the program loop and the test body

/// An operation of a model test's programs.
protocol ModelOp: Sendable, CustomStringConvertible {
    /// A random program (`length` operations).
    static func makeProgram(_ rng: inout SplitMix, length: ClosedRange<Int>) -> ModelProgram<Self>
    /// The new machine's capacity if this is `restart(capacity:)` (drain and check this machine, then
    /// start a new one; handled by the program loop), else nil.
    var restartCapacity: Int? { get }
}

/// One primitive's machine and reference model side by side (`SemaphoreDriver`, …): what the program
/// loop (`run`) and the test body (`check`) need of it.
protocol ModelDriver: AnyObject {
    associatedtype Op: ModelOp
    /// Names the model in the closing `[model] …` line ("Semaphore model").
    static var title: String { get }
    /// A driver for one program, its first machine of `program.capacity`.
    init(program: ModelProgram<Op>, real: Bool, stampLedger: Ledger?, stats: ModelStats)

    var ledger: TokenLedger { get }
    var stats: ModelStats { get }
    var failures: Failures { get set }
    /// The machine and the model, for a failure report.
    var stateDescription: String { get }
    /// The program as a failure report prints it (default: `testDescription`).
    func describe(_ program: ModelProgram<Op>) -> String
    /// Real mode, before each operation: keeps suspended tasks in stock in each of its `Tokens`.
    func prepareTokens() async
    /// Ends the tasks each of its `Tokens` left suspended (`Tokens.cleanUp`).
    func cleanUpTokens()
    func apply(_ op: Op)
    /// Compares machine and model after an operation.
    func checkState()
    /// Ends the machine's lifetime and checks that everything came back (uses `drainStep`).
    func drain(_ rng: inout SplitMix)
    /// A new machine (after `drain`).
    func restart(capacity: Int)
}

/// The two modes of every model test (see the header).
enum ModelMode {
    /// The bulk: forged continuations, ledger off.
    case forged
    /// Real suspended tasks as waiters, ledger on: every resumption observed by the task itself.
    case real
}

extension ModelDriver {
    func describe(_ program: ModelProgram<Op>) -> String { program.testDescription }

    /// One step of `drain` (counted apart from the program's operations): noted, then checked.
    func drainStep(_ name: String) {
        stats.drainOperations += 1
        failures.noteStep(name, keep: true)
        if !failures.failed { checkState() }
    }

    /// The end of `drain`: the machine holds no continuation any more.
    func checkNoContinuationLeft() {
        let left = ledger.stillInMachine
        failures.check(left.isEmpty, "continuations never resumed: \(left.prefix(8))")
    }

    /// Runs one program: each operation (a restart drains the machine and starts a new one), the state
    /// compared after each, a final drain; then the real tasks' observations and the failure report.
    static func run(_ program: ModelProgram<Op>, real: Bool, stampLedger: Ledger?, stats: ModelStats,
                    name: String) async {
        let driver = Self(program: program, real: real, stampLedger: stampLedger, stats: stats)
        var drainRNG = SplitMix(seed: program.drainSeed)
        stats.programs += 1
        stats.episodes += 1
        for op in program.ops {
            if real { await driver.prepareTokens() }
            driver.failures.noteStep(op.description, keep: true)
            stats.operations += 1
            // The loop never suspends otherwise: let other tests (and the real waiters' tasks) run.
            if stats.operations % 128 == 0 { await Task.yield() }
            if let capacity = op.restartCapacity {
                driver.drain(&drainRNG)
                if driver.failures.failed { break }
                driver.restart(capacity: capacity)
            } else {
                driver.apply(op)
            }
            if driver.failures.failed { break }
            driver.checkState()
            if driver.failures.failed { break }
        }
        if !driver.failures.failed { driver.drain(&drainRNG) }
        let state = driver.stateDescription
        stats.note("continuationsResumed", driver.ledger.resumedCount)
        driver.cleanUpTokens()
        await driver.ledger.verifyObservations(into: &driver.failures)
        driver.failures.report(name, program: driver.describe(program), state: state)
    }

    /// The body of a model test (`name` is the test function's): random programs in `mode` through
    /// `propertyCheck` — 160 of 1500–3500 operations forged, 60 of 800–1600 real, times
    /// `FUTURELOCK_MODEL_SCALE` — then the `[model] …` line.
    static func check(_ mode: ModelMode, name: String, sourceLocation: SourceLocation = #_sourceLocation) async {
        ModelRun.checkSeedVariable()
        let stats = ModelStats()
        let real = mode == .real
        let stampLedger = real ? Ledger(configuration: .init()) : nil
        let start = ContinuousClock.now
        let length = real ? 800...1600 : 1500...3500
        await propertyCheck(count: ModelRun.programs(real ? 60 : 160),
                            input: ModelProgram.generator { Op.makeProgram(&$0, length: length) },
                            perform: { program in
                                await run(program, real: real, stampLedger: stampLedger, stats: stats, name: name)
                            }, sourceLocation: sourceLocation)
        let modeName = real ? "real continuations, ledger on" : "forged continuations, ledger off"
        print(stats.line("\(title) (\(modeName))", elapsed: ContinuousClock.now - start))
    }
}

// MARK: - Failure recording

/// Collects the first failure of a program, with the step and the recent operations.
struct Failures {
    private(set) var message: String?
    var step = 0
    var phase = "program"
    var recent: [String] = []

    var failed: Bool { message != nil }

    mutating func fail(_ text: @autoclosure () -> String) {
        guard message == nil else { return }
        message = text()
    }

    /// `condition` or a failure.
    @inline(__always)
    mutating func check(_ condition: Bool, _ text: @autoclosure () -> String) {
        if !condition { fail(text()) }
    }

    mutating func noteStep(_ op: @autoclosure () -> String, keep: Bool) {
        step += 1
        if keep {
            recent.append(op())
            if recent.count > 24 { recent.removeFirst(recent.count - 24) }
        }
    }

    func report(_ name: String, program: String, state: String) {
        guard let message else { return }
        Issue.record("""
            \(name) model: \(message)
              at \(phase) step \(step); recent operations (oldest first): \(recent.joined(separator: " → "))
              machine/model state after it: \(state)
              \(program)
              To rerun this program alone: \(ModelRun.seedVariable)='<seed from the .fixedSeed(…) line below>' \
            swift test --skip-build --filter \(name)
            """)
    }
}

// MARK: - Continuation tokens

/// How a continuation was (or is to be) resumed.
enum Resumption: Equatable, Sendable, CustomStringConvertible {
    case void
    case slot(Int32)
    case message(Int?)
    case connection(Int, Int32)
    case create
    case replace(Int)
    case cancelled
    case closed
    case shutDown
    case exceedsCapacity
    /// Never handed back by the machine; resumed by the test so that the task ends.
    case cleanup
    case otherError(String)

    var description: String {
        switch self {
        case .void: "ok"
        case .slot(let slot): "slot \(slot)"
        case .message(let message): message.map { "message \($0)" } ?? "end"
        case .connection(let connection, let slot): "connection \(connection) (slot \(slot))"
        case .create: "right to create"
        case .replace(let connection): "right to replace connection \(connection)"
        case .cancelled: "CancellationError"
        case .closed: "closed"
        case .shutDown: "poolShutdown"
        case .exceedsCapacity: "exceedsCapacity"
        case .cleanup: "cleanup"
        case .otherError(let text): "error \(text)"
        }
    }

    static func of(_ error: any Error) -> Resumption {
        if error is CancellationError { return .cancelled }
        if error is HarnessCleanup { return .cleanup }
        if let error = error as? FuturelockError {
            switch error {
            case .channelClosed, .semaphoreClosed: return .closed
            case .poolShutdown: return .shutDown
            case .permitRequestExceedsCapacity: return .exceedsCapacity
            default: return .otherError("\(error)")
            }
        }
        return .otherError("\(error)")
    }
}

struct HarnessCleanup: Error {}

/// The continuations of one program: which exist, which the machine holds, how each was resumed.
final class TokenLedger: @unchecked Sendable {
    enum State: Equatable {
        /// Made (a real one: its task is suspended) but not given to the machine yet.
        case spare
        /// Given to the machine; not handed back yet.
        case inMachine
        /// Handed back and resumed (`Resumption` is what it was resumed with).
        case resumed(Resumption)
    }

    let real: Bool
    // Driver-only (the test's task).
    private(set) var states: [State] = []
    private(set) var resumedCount = 0
    /// What the real tasks saw, recorded by each task itself.
    private let observed = Lock<[Int: Resumption]>([:])

    init(real: Bool) { self.real = real }

    func allocate(_ count: Int, as state: State) -> Int {
        let first = states.count
        states.append(contentsOf: repeatElement(state, count: count))
        return first
    }

    func setState(_ serial: Int, _ state: State) {
        if case .resumed = state { resumedCount += 1 }
        states[serial] = state
    }

    func record(_ serial: Int, observed resumption: Resumption) {
        observed.withLock { $0[serial] = resumption }
    }

    /// Serials the machine still holds.
    var stillInMachine: [Int] { states.indices.filter { states[$0] == .inMachine } }

    /// Waits until every real task that was resumed has recorded what it saw, then compares.
    func verifyObservations(into failures: inout Failures) async {
        guard real else { return }
        let expected = states.filter { if case .resumed = $0 { true } else { false } }.count
        let deadline = ContinuousClock.now + .seconds(30)
        while observed.withLock({ $0.count }) < expected, ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(1))
        }
        let seen = observed.withLock { $0 }
        for (serial, state) in states.enumerated() {
            guard case .resumed(let resumption) = state else { continue }
            guard let got = seen[serial] else {
                failures.fail("task of continuation #\(serial) was resumed (\(resumption)) but never ran on")
                return
            }
            if got != resumption {
                failures.fail("task of continuation #\(serial) saw \(got), expected \(resumption)")
                return
            }
        }
        if seen.count != expected {
            failures.fail("\(seen.count) tasks recorded a resumption, \(expected) were resumed")
        }
    }
}

/// Makes continuations of one type for a program, forged or real, and resumes what the machine hands
/// back — at most once each.
final class Tokens<T: Sendable>: @unchecked Sendable {
    typealias Continuation = UnsafeContinuation<T, any Error>

    let ledger: TokenLedger
    private let observe: @Sendable (T) -> Resumption
    // Driver-only.
    private var stock: [(serial: Int, continuation: Continuation)] = []
    private var serialByAddress: [UInt: Int] = [:]
    /// Arrivals of a batch of real continuations (written by the new tasks).
    private let arrivals = Lock<(remaining: Int, done: CheckedContinuation<Void, Never>?,
                                  arrived: [(serial: Int, continuation: Continuation)])>((0, nil, []))

    init(_ ledger: TokenLedger, observe: @escaping @Sendable (T) -> Resumption) {
        self.ledger = ledger
        self.observe = observe
    }

    /// A real mode program keeps a few suspended tasks in stock before each operation.
    @inline(__always)
    func prepare(_ needed: Int = 2) async {
        if ledger.real, stock.count < needed { await spawn(48) }
    }

    private func spawn(_ count: Int) async {
        let first = ledger.allocate(count, as: .spare)
        await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
            arrivals.withLock { $0 = (count, done, []) }
            for serial in first..<(first + count) {
                Task.detached { [self] in
                    let resumption: Resumption
                    do {
                        let value = try await withUnsafeThrowingContinuation { (continuation: Continuation) in
                            self.arrive(serial, continuation)
                        }
                        resumption = self.observe(value)
                    } catch {
                        resumption = .of(error)
                    }
                    self.ledger.record(serial, observed: resumption)
                }
            }
        }
        let batch = arrivals.withLock { state in
            defer { state.arrived = [] }
            return state.arrived
        }
        for entry in batch {
            serialByAddress[unsafeBitCast(entry.continuation, to: UInt.self)] = entry.serial
        }
        stock.append(contentsOf: batch)
    }

    private func arrive(_ serial: Int, _ continuation: Continuation) {
        let done = arrivals.withLock { state -> CheckedContinuation<Void, Never>? in
            state.arrived.append((serial, continuation))
            state.remaining -= 1
            guard state.remaining == 0 else { return nil }
            defer { state.done = nil }
            return state.done
        }
        done?.resume()
    }

    /// Where forged continuations point: 16-byte aligned, far above the first page (a value below
    /// 4096 is an extra inhabitant of a pointer — it would read as an enum's `nil` or another case),
    /// below the top bits Swift may use as spare bits, and never mapped or dereferenced.
    static var forgedBase: UInt { 0x0000_1000_0000_0000 }

    /// A continuation to give to the machine, and its serial.
    @inline(__always)
    func make() -> (serial: Int, continuation: Continuation) {
        if ledger.real {
            let entry = stock.removeLast()
            ledger.setState(entry.serial, .inMachine)
            return entry
        }
        let serial = ledger.allocate(1, as: .inMachine)
        return (serial, unsafeBitCast(Self.forgedBase | UInt(serial) << 4, to: Continuation.self))
    }

    /// The serial of a continuation the machine handed back (`nil`: not one of ours).
    @inline(__always)
    func serial(of continuation: Continuation) -> Int? {
        let address = unsafeBitCast(continuation, to: UInt.self)
        if ledger.real { return serialByAddress[address] }
        guard address & 0xF == 0, address >= Self.forgedBase else { return nil }
        let serial = Int((address - Self.forgedBase) >> 4)
        return serial < ledger.states.count ? serial : nil
    }

    /// `resume`, recording in `wakes` (what the step resumed) the resumption.
    func resume(_ continuation: Continuation, _ result: Result<T, any Error>, as resumption: Resumption,
                into wakes: inout Wakes, _ failures: inout Failures) {
        if let serial = resume(continuation, result, as: resumption, &failures) { wakes.add(serial, resumption, &failures) }
    }

    /// Resumes a continuation the machine handed back; returns its serial, or `nil` (and a failure)
    /// if it is unknown or was handed back before.
    @discardableResult
    func resume(_ continuation: Continuation, _ result: Result<T, any Error>, as resumption: Resumption,
                _ failures: inout Failures) -> Int? {
        guard let serial = serial(of: continuation) else {
            failures.fail("the machine handed back a continuation it was never given")
            return nil
        }
        guard ledger.states[serial] == .inMachine else {
            failures.fail("continuation #\(serial) handed back again (state \(ledger.states[serial])) — it would be resumed twice")
            return nil
        }
        ledger.setState(serial, .resumed(resumption))
        if ledger.real {
            serialByAddress.removeValue(forKey: unsafeBitCast(continuation, to: UInt.self))
            continuation.resume(with: result)
        }
        return serial
    }

    /// Ends every task this program made that is still suspended (spares, and any the machine kept
    /// because of a bug), so that nothing leaks.
    func cleanUp() {
        guard ledger.real else { return }
        for (address, serial) in serialByAddress {
            let state = ledger.states[serial]
            guard state == .spare || state == .inMachine else { continue }
            ledger.setState(serial, .resumed(.cleanup))
            unsafeBitCast(address, to: Continuation.self).resume(throwing: HarnessCleanup())
        }
        serialByAddress.removeAll()
        stock.removeAll()
    }
}

// MARK: - Expected and actual resumptions of one step

/// What one step resumed, by serial.
struct Wakes: Equatable, CustomStringConvertible {
    var bySerial: [Int: Resumption] = [:]

    mutating func add(_ serial: Int, _ resumption: Resumption, _ failures: inout Failures) {
        if let previous = bySerial[serial] {
            failures.fail("continuation #\(serial) resumed twice in one step (\(previous), then \(resumption))")
        }
        bySerial[serial] = resumption
    }

    var isEmpty: Bool { bySerial.isEmpty }

    var description: String {
        bySerial.isEmpty ? "nothing"
            : bySerial.sorted { $0.key < $1.key }.map { "#\($0.key): \($0.value)" }.joined(separator: ", ")
    }
}

/// A waiter queue in the model: kept sorted by waiter id, which is the waiter's place in line (the
/// primitives take the id before locking; a waiter whose smaller id reaches the lock second is
/// inserted in id order, as `WaiterQueue` documents).
struct ModelQueue<Entry> {
    private(set) var entries: [(id: UInt64, entry: Entry)] = []

    var isEmpty: Bool { entries.isEmpty }
    var count: Int { entries.count }
    var first: (id: UInt64, entry: Entry)? { entries.first }

    mutating func append(_ id: UInt64, _ entry: Entry) {
        var index = entries.count
        while index > 0, entries[index - 1].id > id { index -= 1 }
        entries.insert((id, entry), at: index)
    }

    mutating func popFirst() -> (id: UInt64, entry: Entry)? {
        entries.isEmpty ? nil : entries.removeFirst()
    }

    mutating func remove(_ id: UInt64) -> Entry? {
        guard let index = entries.firstIndex(where: { $0.id == id }) else { return nil }
        return entries.remove(at: index).entry
    }

    func contains(_ id: UInt64) -> Bool { entries.contains { $0.id == id } }

    mutating func removeAll() -> [(id: UInt64, entry: Entry)] {
        defer { entries.removeAll() }
        return entries
    }

    var ids: [UInt64] { entries.map(\.id) }
}

/// Waiter ids as the wrappers take them: increasing, except that an id taken early (before another
/// waiter took its own) may reach the queue after a larger one.
struct WaiterIDs {
    private var next: UInt64 = 0
    private var early: UInt64?
    /// Recently queued waiters (any kind), for cancellations that may come after the waiter was served.
    private(set) var recent: [UInt64] = []

    mutating func takeEarly() {
        guard early == nil else { return }
        next += 1
        early = next
    }

    mutating func take(stale: Bool) -> UInt64 {
        if stale, let id = early {
            early = nil
            remember(id)
            return id
        }
        next += 1
        remember(next)
        return next
    }

    private mutating func remember(_ id: UInt64) {
        recent.append(id)
        if recent.count > 24 { recent.removeFirst(recent.count - 24) }
    }
}

extension WaiterQueue {
    /// Ids in queue order.
    var idsInOrder: [UInt64] {
        var ids: [UInt64] = []
        forEachInOrder { _, id, _ in ids.append(id) }
        return ids
    }
}

/// The options of a waiting operation (acquire, send, reserve, receive, checkout).
struct WaitOptions: Sendable, CustomStringConvertible {
    /// Skip the fast path: the enqueue itself finds what it needs (it freed up in between).
    var direct = false
    /// The task is already cancelled when it reaches the enqueue (read under the lock).
    var cancelled = false
    /// Use an id taken earlier (a waiter with a larger id may have queued first).
    var stale = false

    var description: String {
        let flags = [direct ? "direct" : nil, cancelled ? "cancelled" : nil, stale ? "staleID" : nil].compactMap { $0 }
        return flags.isEmpty ? "" : "[\(flags.joined(separator: ","))]"
    }

    static func random(_ rng: inout SplitMix) -> WaitOptions {
        WaitOptions(direct: rng.chance(15), cancelled: rng.chance(8), stale: rng.chance(10))
    }
}

/// Picks `pick`'s element among `count` (nil when there are none).
@inline(__always)
func choose(_ pick: UInt16, among count: Int) -> Int? {
    count > 0 ? Int(pick) % count : nil
}
