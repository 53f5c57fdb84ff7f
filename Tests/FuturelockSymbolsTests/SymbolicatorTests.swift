// In-process and offline symbolication of code in this test binary.
//
// The probes below are real functions of this file, so the expected function name, file and line come
// from the source itself (`#line`, `#filePath`) rather than from literals that could drift; every
// expectation can fail if symbolication resolves the wrong function, file or line.

import FuturelockSymbols
import Glibc
import Testing

/// A function whose entry address we look up; declaration and body share one line, so its entry
/// instruction maps to the line `#line` reports inside it.
@inline(never) func symbolicationEntryProbe() -> Int { return #line }

/// Captures a backtrace from a known line and returns the line with it.
@inline(never) func symbolicationCallSiteProbe() -> (addresses: [UInt], line: Int) {
    return (captureBacktrace(maxFrames: 8), #line)
}

/// The entry address of a global function without captures.
///
/// A `@convention(c)` value would give the address of a compiler-generated C-ABI thunk (the `…To`
/// symbol), which has no source line. A Swift function value is a (function pointer, context) pair, and
/// for a global function the pointer is the function itself. It is read from a struct field of the
/// concrete function type, because handing the function to a generic (`unsafeBitCast`) directly would
/// wrap it in a reabstraction thunk first.
private func entryAddress(of function: @escaping () -> Int) -> UInt {
    struct Holder { var function: () -> Int }
    return unsafeBitCast(Holder(function: function), to: (UInt, UInt).self).0
}

/// The file this test lives in, as the compiler records it in debug information.
private let thisFile = #filePath

private func lastComponent(_ path: String) -> String {
    path.split(separator: "/").last.map(String.init) ?? path
}

/// The out-of-line (non-inlined) frame of a lookup, i.e. the function that owns the address.
private func outermost(_ frames: [SymbolicatedFrame]) -> SymbolicatedFrame? {
    frames.last
}

@Suite("Symbolicator")
struct SymbolicatorTests {
    @Test("a function's entry address resolves to its name, file and line", .timeLimit(.minutes(1)))
    func entryAddress_resolvesToFunctionFileAndLine() throws {
        let expectedLine = symbolicationEntryProbe()
        let address = entryAddress(of: symbolicationEntryProbe)
        let symbolicator = Symbolicator()

        let frames = symbolicator.symbolicate(address)
        let frame = try #require(outermost(frames), "no frames for \(String(address, radix: 16))")
        #expect(frame.function?.contains("symbolicationEntryProbe") == true, "\(frames)")
        #expect(frame.file.map { $0.hasSuffix(lastComponent(thisFile)) } == true, "\(frames)")
        #expect(frame.line == expectedLine, "\(frames)")
        #expect(frame.isInlined == false)
        #expect(frame.modulePath != nil)
    }

    @Test("a captured return address resolves to the calling line", .timeLimit(.minutes(1)))
    func returnAddress_resolvesToCallLine() throws {
        let (addresses, expectedLine) = symbolicationCallSiteProbe()
        let first = try #require(addresses.first)
        let frames = Symbolicator().symbolicate(returnAddress: first)

        let frame = try #require(outermost(frames))
        #expect(frame.address == first)
        #expect(frame.function?.contains("symbolicationCallSiteProbe") == true, "\(frames)")
        #expect(frame.fileName == lastComponent(thisFile), "\(frames)")
        #expect(frame.line == expectedLine, "\(frames)")
        #expect(frame.symbol.map(Demangler.isSwiftSymbol) == true, "\(frames)")
        #expect(frame.description.contains("symbolicationCallSiteProbe"))
        #expect(frame.description.contains("\(lastComponent(thisFile)):\(expectedLine)"))
    }

    @Test("a second lookup of the same address is a cache hit with equal frames", .timeLimit(.minutes(1)))
    func repeatedLookup_isCacheHit() {
        let (addresses, _) = symbolicationCallSiteProbe()
        let symbolicator = Symbolicator()
        let before = symbolicator.cacheStatistics
        #expect(before.hits == 0 && before.misses == 0)

        let first = symbolicator.symbolicate(returnAddress: addresses[0])
        let afterFirst = symbolicator.cacheStatistics
        #expect(afterFirst.misses == 1)
        #expect(afterFirst.hits == 0)

        let second = symbolicator.symbolicate(returnAddress: addresses[0])
        let afterSecond = symbolicator.cacheStatistics
        #expect(afterSecond.misses == 1)
        #expect(afterSecond.hits == 1)
        #expect(second == first)
        #expect(first.last?.line != nil)
    }

    @Test("offline symbolication of the test binary by file-relative address", .timeLimit(.minutes(1)))
    func offlineLookup_matchesInProcessLookup() throws {
        let (addresses, expectedLine) = symbolicationCallSiteProbe()
        let runtimeAddress = try #require(addresses.first)
        // The probe lives in the test executable itself, whose load bias the kernel tells us.
        let bias = try #require(MainExecutable.loadBias(), "no PT_PHDR in the auxiliary vector")
        let fileAddress = runtimeAddress - bias

        let inProcess = try #require(Symbolicator().symbolicate(returnAddress: runtimeAddress).last)
        #expect(inProcess.fileAddress == fileAddress)

        let offline = try Symbolicator(binary: "/proc/self/exe")
        let frames = offline.symbolicate(returnAddress: fileAddress)
        let frame = try #require(outermost(frames))
        #expect(frame.address == fileAddress)
        #expect(frame.function?.contains("symbolicationCallSiteProbe") == true, "\(frames)")
        #expect(frame.fileName == lastComponent(thisFile), "\(frames)")
        #expect(frame.line == expectedLine, "\(frames)")
        #expect(frame.function == inProcess.function)
    }

    @Test("concurrent lookups agree with a serial lookup", .timeLimit(.minutes(1)))
    func concurrentLookups_agree() async {
        let (addresses, _) = symbolicationCallSiteProbe()
        let symbolicator = Symbolicator()
        let expected = symbolicator.symbolicate(backtrace: addresses)
        symbolicator.removeCachedFrames()
        let results = await withTaskGroup(of: [SymbolicatedFrame].self) { group in
            for _ in 0..<8 {
                group.addTask { symbolicator.symbolicate(backtrace: addresses) }
            }
            return await group.reduce(into: []) { $0.append($1) }
        }
        #expect(results.count == 8)
        #expect(results.allSatisfy { $0 == expected })
        #expect(expected.contains { $0.line != nil })
    }

    @Test("a library loaded after the first lookup is found by re-reading the module list",
          .timeLimit(.minutes(1)))
    func libraryLoadedLater_isFound() throws {
        let symbolicator = Symbolicator()
        let (addresses, _) = symbolicationCallSiteProbe()
        _ = symbolicator.symbolicate(returnAddress: addresses[0])
        #expect(symbolicator.cacheStatistics.moduleReports == 1)

        // A library this process has not mapped yet (nothing here unloads libraries, so one that is not
        // mapped now was not mapped at the first lookup either); checked, not assumed, because any test
        // in the same process, or a library dlopen'ed by one, may have loaded a candidate already.
        let mapped = try mappedFileNames()
        let unmapped = laterLoadableLibraries.filter { candidate in
            !mapped.contains { $0.hasPrefix(candidate.soname) }
        }
        let loaded = unmapped.lazy.compactMap { candidate in
            dlopen(candidate.soname, RTLD_NOW).map { (library: candidate, handle: $0) }
        }.first
        let (library, handle) = try #require(
            loaded,
            "none of \(laterLoadableLibraries.map(\.soname)) is installed and still unmapped (apt-get install libexpat1)"
        )
        let function = try #require(dlsym(handle, library.function))

        let frames = symbolicator.symbolicate(UInt(bitPattern: function))
        #expect(symbolicator.cacheStatistics.moduleReports == 2)
        let frame = try #require(frames.last)
        #expect(frame.moduleName?.hasPrefix(library.soname) == true, "\(frames)")
        #expect(frame.function == library.function, "\(frames)")
        #expect(frame.symbolOffset == 0)
    }

    @Test("a file mapped when the module list was read and unmapped since does not claim its addresses")
    func unmappedDataFile_doesNotClaimItsAddresses() throws {
        // Any file mapping becomes a libdwfl "module". One without ELF (a data file, the loader's
        // ld.so.cache while another thread is in dlopen) cannot be checked for loaded code, and once it
        // is unmapped a library may be loaded in its place; so it must not vouch for an address.
        let path = "/tmp/futurelock-symbolicator-\(getpid())-\(UInt64.random(in: 0...UInt64.max))"
        let fd = open(path, O_RDWR | O_CREAT | O_EXCL, 0o600)
        try #require(fd >= 0)
        defer { unlink(path) }
        let length = 1 << 16
        #expect(ftruncate(fd, off_t(length)) == 0)
        let mapping = mmap(nil, length, PROT_READ, MAP_PRIVATE, fd, 0)
        close(fd)
        try #require(mapping != MAP_FAILED)
        let address = UInt(bitPattern: mapping) + 0x100

        let symbolicator = Symbolicator()
        let (addresses, _) = symbolicationCallSiteProbe()
        _ = symbolicator.symbolicate(returnAddress: addresses[0])
        #expect(symbolicator.cacheStatistics.moduleReports == 1)
        try #require(try mappedFileNames().contains(lastComponent(path)), "the data file is in the module list")
        munmap(mapping, length)

        let frames = symbolicator.symbolicate(address)
        #expect(symbolicator.cacheStatistics.moduleReports == 2, "the address was checked against a fresh list")
        // Something else may have been mapped there meanwhile, but never the data file.
        #expect(frames.allSatisfy { $0.moduleName != lastComponent(path) }, "\(frames)")
    }

    @Test("an ELF file that does not exist is a typed error")
    func missingBinary_throwsCannotOpen() {
        #expect(throws: SymbolicationError.self) {
            _ = try Symbolicator(binary: "/nonexistent/futurelock-no-such-binary")
        }
        do {
            _ = try Symbolicator(binary: "/nonexistent/futurelock-no-such-binary")
        } catch {
            guard case .cannotOpenBinary(let path, _) = error else {
                Issue.record("unexpected error \(error)")
                return
            }
            #expect(path == "/nonexistent/futurelock-no-such-binary")
            #expect(error.description.contains("cannot open binary"))
        }
    }

    @Test("an address in no module yields a single frame with only the address")
    func unmappedAddress_yieldsBareFrame() {
        let frames = Symbolicator().symbolicate(UInt(0x10))
        #expect(frames.count == 1)
        #expect(frames.first?.modulePath == nil)
        #expect(frames.first?.function == nil)
        #expect(frames.first?.description == "0x10 in ???")
    }

    @Test("a whole backtrace symbolicates, innermost frame first", .timeLimit(.minutes(1)))
    func backtrace_symbolicatesInOrder() {
        let (addresses, _) = symbolicationCallSiteProbe()
        let frames = Symbolicator.shared.symbolicate(backtrace: addresses)
        #expect(frames.count >= addresses.count)
        #expect(frames.first?.function?.contains("symbolicationCallSiteProbe") == true, "\(frames)")
        // The test method that called the probe is further out on the same stack.
        #expect(frames.dropFirst().contains { $0.function?.contains("backtrace_symbolicatesInOrder") == true },
                "\(frames)")
    }
}

/// Shared libraries that the test binary does not link, with an exported function each, for
/// `libraryLoadedLater_isFound`; it uses the first that is installed and not mapped yet.
private let laterLoadableLibraries: [(soname: String, function: String)] = [
    ("libexpat.so.1", "XML_ParserCreate"),
    ("libxml2.so.2", "xmlCheckVersion"),
    ("libuuid.so.1", "uuid_generate"),
    ("libsqlite3.so.0", "sqlite3_libversion"),
]

/// The last path components of the files this process maps now, from /proc/self/maps.
private func mappedFileNames() throws -> Set<String> {
    let file = try #require(fopen("/proc/self/maps", "r"))
    defer { fclose(file) }
    var names: Set<String> = []
    var line = [CChar](repeating: 0, count: 4096)
    while fgets(&line, Int32(line.count), file) != nil {
        // address perms offset dev inode [path]
        let fields = String(cString: line).split(separator: " ", maxSplits: 5, omittingEmptySubsequences: true)
        guard fields.count == 6 else { continue }
        let path = fields[5].drop { $0 == " " }.prefix { $0 != "\n" }
        guard path.hasPrefix("/") else { continue }
        names.insert(lastComponent(String(path)))
    }
    return names
}

/// The main executable's load bias, found from the kernel's auxiliary vector (AT_PHDR minus the
/// PT_PHDR header's p_vaddr), independently of libdw, to check file-relative addresses.
enum MainExecutable {
    static func loadBias() -> UInt? {
        let descriptor = open("/proc/self/auxv", O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { return nil }
        defer { close(descriptor) }
        var words = [UInt](repeating: 0, count: 512)
        let count = words.withUnsafeMutableBytes { read(descriptor, $0.baseAddress, $0.count) }
        guard count > 0 else { return nil }
        var headers: UInt = 0
        var headerCount = 0
        for pair in stride(from: 0, to: count / MemoryLayout<UInt>.size - 1, by: 2) {
            switch words[pair] {
            case 3: headers = words[pair + 1]  // AT_PHDR
            case 5: headerCount = Int(words[pair + 1])  // AT_PHNUM
            default: break
            }
        }
        guard headers != 0, let base = UnsafeRawPointer(bitPattern: headers) else { return nil }
        // Elf64_Phdr: p_type (u32) at 0, p_vaddr (u64) at 16; 56 bytes each.
        for index in 0..<headerCount {
            let header = base + index * 56
            if header.loadUnaligned(as: UInt32.self) == 6 {  // PT_PHDR
                return headers - header.loadUnaligned(fromByteOffset: 16, as: UInt.self)
            }
        }
        return nil
    }
}

