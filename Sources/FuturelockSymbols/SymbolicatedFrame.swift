// One source-level frame at a machine address.
//
// A single return address can stand for several source frames when the compiler inlined calls: the
// inlined callee is where the instruction really came from, and each caller up to the real (out-of-line)
// function is where that code was written. Reports need all of them — "Semaphore.acquire() inlined into
// Pool.checkout() at Pool.swift:88" is the line a person wants — so a lookup returns a list of these,
// innermost first, and every field that debug information may lack is optional.

/// A function/file/line description of a code address, as found by ``Symbolicator``.
public struct SymbolicatedFrame: Sendable, Hashable, CustomStringConvertible {
    /// The address that was looked up: a run-time address for in-process and thread-dump lookups, the
    /// file-relative address for offline lookups. Frames inlined at one address share it.
    public var address: UInt
    /// The address relative to the module's ELF file (what `nm` and `addr2line -e` use), when the
    /// address falls in a known module.
    public var fileAddress: UInt?
    /// The module's path or name as the loader reported it (e.g. `/usr/lib/x86_64-linux-gnu/libc.so.6`).
    public var modulePath: String?
    /// The demangled function name (Swift names demangled, others unchanged).
    public var function: String?
    /// The raw (mangled) symbol or linkage name the function was found under.
    public var symbol: String?
    /// The distance of `address` from the start of the out-of-line function's ELF symbol.
    public var symbolOffset: UInt?
    /// The source file path, as recorded in the debug information.
    public var file: String?
    /// The 1-based source line, when known.
    public var line: Int?
    /// The 1-based source column, when known.
    public var column: Int?
    /// Whether this frame was inlined into the next frame of the list.
    public var isInlined: Bool

    /// Creates a frame; normally produced by ``Symbolicator`` rather than by hand.
    public init(
        address: UInt,
        fileAddress: UInt? = nil,
        modulePath: String? = nil,
        function: String? = nil,
        symbol: String? = nil,
        symbolOffset: UInt? = nil,
        file: String? = nil,
        line: Int? = nil,
        column: Int? = nil,
        isInlined: Bool = false
    ) {
        self.address = address
        self.fileAddress = fileAddress
        self.modulePath = modulePath
        self.function = function
        self.symbol = symbol
        self.symbolOffset = symbolOffset
        self.file = file
        self.line = line
        self.column = column
        self.isInlined = isInlined
    }

    /// The last path component of ``modulePath`` (e.g. `libc.so.6`).
    public var moduleName: String? {
        modulePath.map(Self.lastComponent)
    }

    /// The last path component of ``file`` (e.g. `Semaphore.swift`).
    public var fileName: String? {
        file.map(Self.lastComponent)
    }

    /// Whether the debug information located this frame in source.
    public var hasSourceLocation: Bool { file != nil && line != nil }

    /// A one-line description, e.g. `0x5581c2d0 in Futurelock.Semaphore.acquire() at Semaphore.swift:42`,
    /// `0x7f1c2a3b in clock_nanosleep+0x53 (libc.so.6)`, or `0x7f1c2a3b +0x1c in libc.so.6`.
    public var description: String {
        var text = "0x" + String(address, radix: 16)
        if let function {
            text += " in " + function
            if let fileName, let line {
                text += " at \(fileName):\(line)"
                if let column { text += ":\(column)" }
            } else {
                if let symbolOffset, symbolOffset != 0 { text += "+0x" + String(symbolOffset, radix: 16) }
                if let moduleName { text += " (\(moduleName))" }
            }
            if isInlined { text += " [inlined]" }
        } else if let moduleName {
            if let fileAddress { text += " +0x" + String(fileAddress, radix: 16) }
            text += " in " + moduleName
        } else {
            text += " in ???"
        }
        return text
    }

    private static func lastComponent(_ path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return path }
        return String(path[path.index(after: slash)...])
    }
}
