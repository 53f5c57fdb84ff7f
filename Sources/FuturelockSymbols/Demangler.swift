// Demangling through the Swift runtime's own demangler.
//
// The runtime that runs the code knows its own mangling best, including manglings newer than any copy of
// the demangler we could vendor, so we call `swift_demangle` (exported by libswiftCore) rather than
// shipping a demangler. Names that are not Swift (C, C++, assembler labels) are returned unchanged: the
// runtime demangler only claims Swift manglings and a C++ name is more useful raw than half-decoded.

import Glibc

@_silgen_name("swift_demangle")
private func _swift_demangle(
    _ mangledName: UnsafePointer<CChar>?,
    _ mangledNameLength: UInt,
    _ outputBuffer: UnsafeMutablePointer<CChar>?,
    _ outputBufferSize: UnsafeMutablePointer<UInt>?,
    _ flags: UInt32
) -> UnsafeMutablePointer<CChar>?

/// Turns mangled Swift symbol names into readable ones.
public enum Demangler {
    /// Prefixes that mark a Swift mangled name: Swift 5+ (`$s`), Swift 4.x (`$S`), embedded Swift (`$e`),
    /// Swift 4.0 (`_T0`), and the same with the leading underscore some platforms add.
    private static let swiftPrefixes = ["$s", "$S", "$e", "_$s", "_$S", "_$e", "_T0", "@__swiftmacro_"]

    /// Whether `symbol` looks like a Swift mangled name.
    public static func isSwiftSymbol(_ symbol: String) -> Bool {
        swiftPrefixes.contains { symbol.hasPrefix($0) }
    }

    /// Demangles a Swift symbol, e.g. `$sSi1poiyS2i_SitFZ` → `static Swift.Int.+ infix(Swift.Int, Swift.Int) -> Swift.Int`.
    ///
    /// Names that are not Swift manglings, or that the runtime cannot demangle, are returned unchanged.
    public static func demangle(_ symbol: String) -> String {
        guard isSwiftSymbol(symbol) else { return symbol }
        var copy = symbol
        return copy.withUTF8 { utf8 -> String in
            utf8.withMemoryRebound(to: CChar.self) { chars -> String in
                guard let result = _swift_demangle(chars.baseAddress, UInt(chars.count), nil, nil, 0) else {
                    return symbol
                }
                defer { free(result) }
                return String(cString: result)
            }
        }
    }
}
