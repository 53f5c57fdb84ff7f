/// Where in the source an acquire, a wait or a release was written.
///
/// Stored as `StaticString`s so stamping a call site on the hot path costs two pointer copies and no
/// allocation; they become `String`s only when a snapshot is taken.
public struct CallSite: Hashable, Sendable, CustomStringConvertible, Codable {
    /// `#fileID` of the call: `Module/File.swift`.
    public let fileID: String
    /// `#line` of the call.
    public let line: UInt
    /// `#function` of the call.
    public let function: String

    /// Creates a call site from strings (for tests and for dumps read back from disk).
    public init(fileID: String, line: UInt, function: String) {
        self.fileID = fileID
        self.line = line
        self.function = function
    }

    public var description: String { "\(fileID):\(line)" }
}

/// The allocation-free form of ``CallSite`` kept in live records: 24 bytes, trivially copyable.
///
/// Two `StaticString`s and a line took 56 bytes, which made every holding record span two cache
/// lines. A `#fileID` or `#function` string is a pointer to constant UTF-8 and a length, so that is
/// what is kept; a `StaticString` holding a single Unicode scalar instead of a pointer (possible
/// when a caller passes a one-character literal) keeps the scalar and a marker.
@usableFromInline
struct StaticCallSite: Hashable, Sendable, BitwiseCopyable {
    /// UTF-8 of the file id, or the scalar's value when `fileCount == scalarMarker`.
    @usableFromInline let fileStart: UInt
    /// UTF-8 of the function, or the scalar's value when `functionCount == scalarMarker`.
    @usableFromInline let functionStart: UInt
    @usableFromInline let fileCount: UInt32
    @usableFromInline let functionCount: UInt32
    @usableFromInline let line: UInt32

    @usableFromInline static var scalarMarker: UInt32 { .max }

    @inlinable @inline(__always)
    init(fileID: StaticString, line: UInt, function: StaticString) {
        (fileStart, fileCount) = Self.pack(fileID)
        (functionStart, functionCount) = Self.pack(function)
        self.line = UInt32(truncatingIfNeeded: min(line, UInt(UInt32.max)))
    }

    @inlinable @inline(__always)
    static func pack(_ string: StaticString) -> (UInt, UInt32) {
        if string.hasPointerRepresentation {
            return (UInt(bitPattern: string.utf8Start), UInt32(truncatingIfNeeded: string.utf8CodeUnitCount))
        }
        return (UInt(string.unicodeScalar.value), scalarMarker)
    }

    private static func unpack(_ start: UInt, _ count: UInt32) -> String {
        if count == scalarMarker { return Unicode.Scalar(UInt32(truncatingIfNeeded: start)).map(String.init) ?? "?" }
        guard let pointer = UnsafePointer<UInt8>(bitPattern: start) else { return "" }
        return String(decoding: UnsafeBufferPointer(start: pointer, count: Int(count)), as: UTF8.self)
    }

    /// The file id as a `String`.
    var fileID: String { Self.unpack(fileStart, fileCount) }
    /// The function as a `String`.
    var function: String { Self.unpack(functionStart, functionCount) }

    var callSite: CallSite { CallSite(fileID: fileID, line: UInt(line), function: function) }
}
