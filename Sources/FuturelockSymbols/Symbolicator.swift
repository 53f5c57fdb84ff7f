// Address → function/file/line, with a cache, for this process or for an ELF file on disk.
//
// The ledger captures acquisition sites as raw return addresses (cheap: no strings, no locks, no debug
// info) and symbolicates only when a dump or a finding needs them. The same sites recur constantly — one
// `acquire()` call site per permit — so results are cached per address and a repeated site costs a
// dictionary lookup under a mutex. The first lookup in a module pays for loading its ELF and DWARF, and,
// for Swift code without .debug_aranges, for indexing its compile units once (see `DwarfIndex`).
//
// libdwfl is not thread-safe, so one `Mutex` guards the session and the cache together; symbolication
// is a diagnostic path and never runs on the primitives' hot path.

import CLibdw
import Glibc
import Futurelock
import Synchronization

/// Symbolicates code addresses with libdw (elfutils): function (demangled), file, line, column, and the
/// inlined frames at each address.
///
/// Use ``shared`` (or ``init()``) for addresses in the current process — typically from
/// ``captureBacktrace(maxFrames:)`` — and ``init(binary:)`` for file-relative addresses in an ELF file
/// on disk, as `nm` or a crash log prints them.
public final class Symbolicator: Sendable {
    /// A symbolicator for the current process, created on first use.
    public static let shared = Symbolicator()

    private enum Target: Sendable {
        case currentProcess
        case binary(path: String)
    }

    private struct CacheKey: Hashable {
        var address: UInt
        var isReturnAddress: Bool
    }

    private struct State {
        /// Nil until the first lookup for the current process (so creating `shared` costs nothing).
        var session: DwflSession?
        /// Why the current-process session could not be opened, so we do not retry on every lookup.
        var sessionError: SymbolicationError?
        var cache: [CacheKey: [SymbolicatedFrame]] = [:]
        var hits = 0
        var misses = 0
        var moduleReports = 0
    }

    /// Entries kept before the cache is emptied and refilled; bounds memory if addresses are unbounded
    /// (JIT code, garbage input) while never evicting in a service with a fixed set of call sites.
    public static let cacheCapacity = 65_536

    private let target: Target
    private let state: Lock<State>

    /// A symbolicator for addresses in the current process. Module list and debug information are
    /// loaded on the first lookup.
    public init() {
        target = .currentProcess
        state = Lock(State())
    }

    /// A symbolicator for an ELF file on disk (executable, shared library, or separate debug file);
    /// addresses passed to it are file-relative, as printed by `nm` or `readelf -s`.
    ///
    /// - Throws: ``SymbolicationError/cannotOpenBinary(path:reason:)`` if the file cannot be read as ELF.
    public init(binary path: String) throws(SymbolicationError) {
        target = .binary(path: path)
        let session = try DwflSession(binary: path)
        state = Lock(State(session: session))
    }

    /// The frames at `address`, innermost (most deeply inlined) first; the last one is the out-of-line
    /// function. Never empty: an address nothing is known about yields one frame with only the address.
    ///
    /// Use this for an exact instruction address (a function's entry, a faulting PC). For return
    /// addresses from a backtrace, use ``symbolicate(returnAddress:)``, which looks up the call
    /// instruction instead of whatever follows it.
    public func symbolicate(_ address: UInt) -> [SymbolicatedFrame] {
        lookUp(CacheKey(address: address, isReturnAddress: false))
    }

    /// The frames for a return address (as ``captureBacktrace(maxFrames:)`` returns): the lookup uses
    /// `returnAddress - 1`, inside the call instruction, so the line is the call's and a call that ends
    /// a function is not attributed to the next one. The frames still report `returnAddress`.
    public func symbolicate(returnAddress: UInt) -> [SymbolicatedFrame] {
        lookUp(CacheKey(address: returnAddress, isReturnAddress: true))
    }

    /// Symbolicates a captured backtrace of return addresses, flattening inlined frames into the list in
    /// call order (innermost first), as a debugger prints a stack.
    public func symbolicate(backtrace: [UInt]) -> [SymbolicatedFrame] {
        backtrace.flatMap { symbolicate(returnAddress: $0) }
    }

    /// Cache hits and misses since creation, for tests and diagnostics.
    public var cacheStatistics: SymbolicationCacheStatistics {
        state.withLock {
            SymbolicationCacheStatistics(hits: $0.hits, misses: $0.misses, entries: $0.cache.count,
                                         moduleReports: $0.moduleReports)
        }
    }

    /// Empties the address cache (loaded debug information is kept).
    public func removeCachedFrames() {
        state.withLock { $0.cache.removeAll() }
    }

    // MARK: - Lookup

    private func lookUp(_ key: CacheKey) -> [SymbolicatedFrame] {
        let target = self.target
        return state.withLock { state in
            if let frames = state.cache[key] {
                state.hits += 1
                return frames
            }
            state.misses += 1
            let frames = Self.resolve(key, target: target, state: &state)
            if state.cache.count >= Self.cacheCapacity { state.cache.removeAll(keepingCapacity: true) }
            state.cache[key] = frames
            return frames
        }
    }

    private static func resolve(_ key: CacheKey, target: Target, state: inout State) -> [SymbolicatedFrame] {
        let unknown = [SymbolicatedFrame(address: key.address)]
        let adjustment: UInt64 = key.isReturnAddress && key.address > 0 ? 1 : 0

        switch target {
        case .binary:
            guard let session = state.session else { return unknown }
            let lookup = UInt64(key.address) &+ session.fileBias &- adjustment
            return session.frames(lookupAddress: lookup, reportedAddress: key.address,
                                  returnAddressAdjustment: adjustment) ?? unknown

        case .currentProcess:
            guard let session = currentProcessSession(&state) else { return unknown }
            let lookup = UInt64(key.address) &- adjustment
            if !session.hasLoadedCode(at: lookup) {
                // Perhaps a library loaded since the last report (dlopen), possibly where some other
                // file was mapped back then. Re-reading /proc/self/maps costs a few hundred
                // microseconds, and only happens on a cache miss.
                state.moduleReports += 1
                guard (try? session.reportProcessModules()) != nil else { return unknown }
                // Earlier "unknown" answers may be stale now; known ones stay valid while mapped.
                state.cache = state.cache.filter { $0.value.first?.modulePath != nil }
            }
            return session.frames(lookupAddress: lookup, reportedAddress: key.address,
                                  returnAddressAdjustment: adjustment) ?? unknown
        }
    }

    private static func currentProcessSession(_ state: inout State) -> DwflSession? {
        if let session = state.session { return session }
        if state.sessionError != nil { return nil }
        do {
            let session = try DwflSession(process: getpid())
            state.moduleReports += 1
            state.session = session
            return session
        } catch {
            state.sessionError = error
            return nil
        }
    }
}

/// Counters of a ``Symbolicator``'s address cache.
public struct SymbolicationCacheStatistics: Sendable, Hashable {
    /// Lookups answered from the cache.
    public var hits: Int
    /// Lookups that went to libdw.
    public var misses: Int
    /// Addresses currently cached.
    public var entries: Int
    /// Times the process's module list was read (once at first use, again for addresses in no known
    /// module, e.g. after `dlopen`).
    public var moduleReports: Int
}
