// Inlined frames: in an optimised build the compiler inlines `inlinedCaptureProbe` into its caller, and
// one return address must then yield two frames — the inlined callee at its own line, then the caller
// at the call's line (from DW_AT_call_line). In a debug build nothing is inlined and the same address
// must yield the callee alone, so the test checks whichever shape the build configuration produces.

import FuturelockSymbols
import Testing

@inline(__always) func inlinedCaptureProbe() -> (addresses: [UInt], line: Int) {
    return (captureBacktrace(maxFrames: 8), #line)
}

@inline(never) func inliningCallerProbe() -> (addresses: [UInt], innerLine: Int, outerLine: Int) {
    let (addresses, innerLine) = inlinedCaptureProbe(); let outerLine = #line
    return (addresses, innerLine, outerLine)
}

@Suite("Inlined frames")
struct InlinedFrameTests {
    @Test("an inlined call yields the callee and its caller, innermost first", .timeLimit(.minutes(1)))
    func inlinedCall_yieldsCalleeThenCaller() throws {
        let (addresses, innerLine, outerLine) = inliningCallerProbe()
        let frames = Symbolicator().symbolicate(returnAddress: try #require(addresses.first))
        let callee = try #require(frames.first)
        #expect(callee.function?.contains("inlinedCaptureProbe") == true, "\(frames)")
        #expect(callee.line == innerLine, "\(frames)")
        #if DEBUG
        #expect(frames.count == 1, "\(frames)")
        #expect(callee.isInlined == false)
        #else
        #expect(frames.count == 2, "\(frames)")
        #expect(callee.isInlined == true, "\(frames)")
        let caller = try #require(frames.dropFirst().first)
        #expect(caller.function?.contains("inliningCallerProbe") == true, "\(frames)")
        #expect(caller.line == outerLine, "\(frames)")
        #expect(caller.isInlined == false)
        #expect(caller.address == callee.address)
        #endif
    }
}
