// The Swift runtime demangler is reached and non-Swift names are left alone.

import FuturelockSymbols
import Testing

@Suite("Demangler")
struct DemanglerTests {
    @Test("a Swift mangled name demangles")
    func swiftName_demangles() {
        // `Swift.Int.+ infix` — stable mangling from the standard library.
        #expect(Demangler.demangle("$sSi1poiyS2i_SitFZ") == "static Swift.Int.+ infix(Swift.Int, Swift.Int) -> Swift.Int")
        #expect(Demangler.demangle("$s4main3fooyyF") == "main.foo() -> ()")
    }

    @Test("C names and unknown manglings pass through unchanged")
    func nonSwiftName_passesThrough() {
        #expect(Demangler.demangle("clock_nanosleep") == "clock_nanosleep")
        #expect(Demangler.demangle("_ZN3foo3barEv") == "_ZN3foo3barEv")
        #expect(Demangler.demangle("$s-not-a-mangling") == "$s-not-a-mangling")
        #expect(Demangler.demangle("") == "")
    }

    @Test("Swift symbols are recognised by prefix")
    func isSwiftSymbol() {
        #expect(Demangler.isSwiftSymbol("$s4main3fooyyF"))
        #expect(!Demangler.isSwiftSymbol("main"))
    }
}
