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

/// The allocation-free form of ``CallSite`` kept in live records.
@usableFromInline
struct StaticCallSite: Sendable, BitwiseCopyable {
    @usableFromInline let fileID: StaticString
    @usableFromInline let line: UInt
    @usableFromInline let function: StaticString

    @inlinable
    init(fileID: StaticString, line: UInt, function: StaticString) {
        self.fileID = fileID
        self.line = line
        self.function = function
    }

    var callSite: CallSite {
        CallSite(fileID: fileID.description, line: line, function: function.description)
    }
}
