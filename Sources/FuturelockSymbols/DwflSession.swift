// A libdwfl session — the modules of one process, or one ELF file — and how an address becomes frames.
//
// Both the in-process `Symbolicator` and `NativeThreadDump` need the same translation: find the module,
// its ELF symbol, its compile unit, the line-table row, and the chain of inlined calls at the address.
// This type does that once, for whichever address space it was opened on. It is not thread-safe (libdwfl
// is not); owners serialise access — `Symbolicator` under its mutex, `NativeThreadDump` by using a
// session from one call only.
//
// Swift binaries differ from C ones twice. With no .debug_aranges, `dwfl_module_addrdie` finds no
// compile unit, so we fall back to a `DwarfIndex` built once per module. And Swift nests functions in a
// DW_TAG_module, which `dwarf_getscopes` cannot see through, so functions and inlined calls are found
// with a `SubprogramIndex` built once per compile unit (it works for C code too).

import CLibdw
import Glibc

final class DwflSession {
    /// What the session's addresses refer to.
    enum Source {
        /// A live process; addresses are run-time addresses in it.
        case process(pid_t)
        /// An ELF file on disk; the session's addresses are libdwfl's, see `fileBias`.
        case binary(path: String)
    }

    let source: Source
    let dwfl: OpaquePointer
    /// Heap-allocated because libdwfl keeps the pointer for the session's lifetime.
    private let callbacks: UnsafeMutablePointer<Dwfl_Callbacks>
    /// CU indexes of modules that lacked .debug_aranges coverage, built on first need.
    private var indexes: [OpaquePointer: DwarfIndex] = [:]
    /// Loaded segments of the modules looked up so far; see `module(containing:)`.
    private var loadSegments: [OpaquePointer: [Range<UInt64>]] = [:]
    /// Function indexes of the compile units looked up so far.
    private var subprogramIndexes: [SubprogramIndexKey: SubprogramIndex] = [:]

    private struct SubprogramIndexKey: Hashable {
        var module: OpaquePointer
        var cuOffset: UInt64
    }
    /// How many `DwarfIndex`es were built; for tests and diagnostics.
    private(set) var indexBuilds = 0
    /// For `.binary`: what to add to a file-relative address to get libdwfl's address for it.
    private(set) var fileBias: UInt64 = 0

    /// Opens a session on the modules currently mapped by process `pid` (from /proc/PID/maps).
    init(process pid: pid_t) throws(SymbolicationError) {
        source = .process(pid)
        (dwfl, callbacks) = try Self.begin(Dwfl_Callbacks(
            find_elf: dwfl_linux_proc_find_elf,
            find_debuginfo: dwfl_standard_find_debuginfo,
            section_address: nil,
            debuginfo_path: nil))
        try reportProcessModules()
    }

    /// Opens a session on one ELF file on disk.
    init(binary path: String) throws(SymbolicationError) {
        source = .binary(path: path)
        (dwfl, callbacks) = try Self.begin(Dwfl_Callbacks(
            find_elf: dwfl_build_id_find_elf,
            find_debuginfo: dwfl_standard_find_debuginfo,
            section_address: dwfl_offline_section_address,
            debuginfo_path: nil))
        if access(path, R_OK) != 0 {
            throw .cannotOpenBinary(path: path, reason: String(cString: strerror(errno)))
        }
        dwfl_report_begin(dwfl)
        let module = dwfl_report_offline(dwfl, Self.lastComponent(path), path, -1)
        dwfl_report_end(dwfl, nil, nil)
        guard let module else {
            throw .cannotOpenBinary(path: path, reason: Self.lastErrorMessage())
        }
        var bias: GElf_Addr = 0
        guard dwfl_module_getelf(module, &bias) != nil else {
            throw .cannotOpenBinary(path: path, reason: Self.lastErrorMessage())
        }
        fileBias = bias
    }

    /// Starts libdwfl with `callbacks`, copied to the heap: libdwfl keeps the pointer for the session's
    /// lifetime, and `deinit` frees it.
    private static func begin(_ callbacks: Dwfl_Callbacks)
        throws(SymbolicationError) -> (OpaquePointer, UnsafeMutablePointer<Dwfl_Callbacks>) {
        let stored = UnsafeMutablePointer<Dwfl_Callbacks>.allocate(capacity: 1)
        stored.initialize(to: callbacks)
        guard let dwfl = dwfl_begin(stored) else {
            stored.deinitialize(count: 1)
            stored.deallocate()
            throw .libdw(operation: "dwfl_begin", message: lastErrorMessage())
        }
        return (dwfl, stored)
    }

    deinit {
        dwfl_end(dwfl)
        callbacks.deinitialize(count: 1)
        callbacks.deallocate()
    }

    /// Re-reads the module list of a `.process` session (after a `dlopen`, say). Modules that are still
    /// mapped keep their loaded ELF/DWARF; indexes are dropped because module handles may be reused.
    func reportProcessModules() throws(SymbolicationError) {
        guard case .process(let pid) = source else { return }
        indexes.removeAll()
        subprogramIndexes.removeAll()
        loadSegments.removeAll()
        dwfl_report_begin(dwfl)
        let result = dwfl_linux_proc_report(dwfl, pid)
        dwfl_report_end(dwfl, nil, nil)
        if result == ENOENT || result == ESRCH {
            throw .noSuchProcess(pid: pid)
        } else if result > 0 {
            throw .libdw(operation: "dwfl_linux_proc_report", message: String(cString: strerror(result)))
        } else if result < 0 {
            throw .libdw(operation: "dwfl_linux_proc_report", message: Self.lastErrorMessage())
        }
    }

    /// Whether `address` (in libdwfl's address space) is inside the loaded code of a reported module
    /// whose ELF file we could read, i.e. whether the module list can be trusted for it.
    ///
    /// Stricter than `frames(…)`: a module without readable ELF — any other file that happened to be
    /// mapped when the list was read (a data file, the loader's /etc/ld.so.cache during another
    /// thread's `dlopen`) — says nothing about what is at `address` now. Such a mapping may be gone
    /// and a library loaded since may sit where it was, so the caller must re-read the module list.
    func hasLoadedCode(at address: UInt64) -> Bool {
        module(containing: address, trustingUncheckedSpan: false) != nil
    }

    /// The module whose loaded segments contain `address`.
    ///
    /// libdwfl gives a module the whole span from its first to its last mapping. A library loaded later
    /// can land in a hole inside that span (the loader reserves a library's full extent, then unmaps
    /// the alignment gaps), so the span alone would attribute its code to the wrong module; we also
    /// require the address to fall in one of the module's PT_LOAD segments.
    ///
    /// A module whose ELF cannot be read (not ELF at all, or deleted) cannot be checked; with
    /// `trustingUncheckedSpan` its span is taken as is, which is only right for a fresh module list.
    private func module(containing address: UInt64, trustingUncheckedSpan: Bool = true) -> OpaquePointer? {
        guard let module = dwfl_addrmodule(dwfl, address) else { return nil }
        let segments: [Range<UInt64>]
        if let cached = loadSegments[module] {
            segments = cached
        } else {
            segments = Self.loadSegments(of: module)
            loadSegments[module] = segments
        }
        if segments.isEmpty { return trustingUncheckedSpan ? module : nil }
        return segments.contains { $0.contains(address) } ? module : nil
    }

    /// The module's PT_LOAD segments, in libdwfl's address space.
    private static func loadSegments(of module: OpaquePointer) -> [Range<UInt64>] {
        var bias: GElf_Addr = 0
        guard let elf = dwfl_module_getelf(module, &bias) else { return [] }
        var count = 0
        guard elf_getphdrnum(elf, &count) == 0 else { return [] }
        var segments: [Range<UInt64>] = []
        for index in 0..<Int32(clamping: count) {
            var header = GElf_Phdr()
            guard gelf_getphdr(elf, index, &header) != nil, header.p_type == UInt32(PT_LOAD), header.p_memsz > 0
            else { continue }
            let start = header.p_vaddr &+ bias
            segments.append(start..<(start &+ header.p_memsz))
        }
        return segments
    }

    /// The frames at `lookupAddress`, innermost (most inlined) first, or nil if no module covers it.
    ///
    /// - Parameters:
    ///   - lookupAddress: the address in libdwfl's space to resolve (already moved into the call
    ///     instruction for return addresses).
    ///   - reportedAddress: the address to put in the frames' `address`.
    ///   - returnAddressAdjustment: 1 when `lookupAddress` is a return address minus one, else 0; added
    ///     back to the file address and symbol offset so they describe `reportedAddress`.
    func frames(
        lookupAddress: UInt64,
        reportedAddress: UInt,
        returnAddressAdjustment: UInt64
    ) -> [SymbolicatedFrame]? {
        guard let module = module(containing: lookupAddress) else { return nil }
        let modulePath = dwfl_module_info(module, nil, nil, nil, nil, nil, nil, nil)
            .map { String(cString: $0) }

        var elfBias: GElf_Addr = 0
        let hasElf = dwfl_module_getelf(module, &elfBias) != nil
        let fileAddress = hasElf ? UInt(lookupAddress &- elfBias &+ returnAddressAdjustment) : nil

        var symbolOffset: GElf_Off = 0
        var elfSymbol = GElf_Sym()
        let symbolName = dwfl_module_addrinfo(module, lookupAddress, &symbolOffset, &elfSymbol, nil, nil, nil)
            .map { String(cString: $0) }
        let offset = symbolName != nil ? UInt(symbolOffset &+ returnAddressAdjustment) : nil

        let template = SymbolicatedFrame(
            address: reportedAddress,
            fileAddress: fileAddress,
            modulePath: modulePath,
            function: symbolName.map(Demangler.demangle),
            symbol: symbolName,
            symbolOffset: offset
        )
        return sourceFrames(module: module, lookupAddress: lookupAddress, template: template) ?? [template]
    }

    // MARK: - Debug information

    /// Frames from DWARF (line table + inlined-subroutine chain), or nil when the module has no DWARF
    /// covering the address.
    private func sourceFrames(
        module: OpaquePointer,
        lookupAddress: UInt64,
        template: SymbolicatedFrame
    ) -> [SymbolicatedFrame]? {
        var dwarfBias: Dwarf_Addr = 0
        guard let dwarf = dwfl_module_getdwarf(module, &dwarfBias) else { return nil }
        let dwarfAddress = lookupAddress &- dwarfBias
        guard var cuDie = compileUnit(module: module, dwarf: dwarf, lookupAddress: lookupAddress,
                                      dwarfAddress: dwarfAddress)
        else { return nil }

        var location = lineTableLocation(cuDie: &cuDie, dwarfAddress: dwarfAddress)
        var frames: [SymbolicatedFrame] = []
        var subprogram = Dwarf_Die()
        if let subprogramOffset = subprograms(module: module, cuDie: cuDie).subprogramOffset(containing: dwarfAddress),
           dwarf_offdie(dwarf, subprogramOffset, &subprogram) != nil
        {
            for var scope in SubprogramIndex.functionScopes(in: subprogram, at: dwarfAddress) {
                let isInlined = dwarf_tag(&scope) == Int32(DW_TAG_inlined_subroutine)
                var frame = template
                // Swift (and C++) functions carry a linkage name, which demangles to the full name; C
                // functions have only DW_AT_name, which is cleaner than their ELF symbol (no @@GLIBC_x).
                let linkageName = Self.linkageName(of: &scope)
                let plainName = dwarf_diename(&scope).map { String(cString: $0) }
                frame.symbol = linkageName ?? (isInlined ? plainName : template.symbol ?? plainName)
                frame.function = linkageName.map(Demangler.demangle) ?? plainName ?? template.function
                frame.isInlined = isInlined
                frame.apply(location)
                frames.append(frame)
                if isInlined { location = callSite(of: &scope, cuDie: &cuDie) }
            }
        }
        if frames.isEmpty {
            var frame = template
            frame.apply(location)
            frames.append(frame)
        }
        return frames
    }

    /// The CU DIE containing `dwarfAddress`: through .debug_aranges when present, else the CU index.
    private func compileUnit(
        module: OpaquePointer,
        dwarf: OpaquePointer,
        lookupAddress: UInt64,
        dwarfAddress: UInt64
    ) -> Dwarf_Die? {
        if indexes[module] == nil {
            var bias: Dwarf_Addr = 0
            if let die = dwfl_module_addrdie(module, lookupAddress, &bias) { return die.pointee }
            indexes[module] = DwarfIndex(dwarf: dwarf)
            indexBuilds += 1
        }
        guard let cuOffset = indexes[module]?.compileUnitOffset(containing: dwarfAddress) else { return nil }
        var die = Dwarf_Die()
        guard dwarf_offdie(dwarf, cuOffset, &die) != nil else { return nil }
        return die
    }

    /// The function index of a CU, built on first use.
    private func subprograms(module: OpaquePointer, cuDie: Dwarf_Die) -> SubprogramIndex {
        var die = cuDie
        let key = SubprogramIndexKey(module: module, cuOffset: dwarf_dieoffset(&die))
        if let index = subprogramIndexes[key] { return index }
        let index = SubprogramIndex(cuDie: cuDie)
        subprogramIndexes[key] = index
        return index
    }

    private func lineTableLocation(cuDie: inout Dwarf_Die, dwarfAddress: UInt64) -> SourceLocation {
        guard let line = dwarf_getsrc_die(&cuDie, dwarfAddress) else { return SourceLocation() }
        var lineNumber: Int32 = 0
        var column: Int32 = 0
        _ = dwarf_lineno(line, &lineNumber)
        _ = dwarf_linecol(line, &column)
        let file = dwarf_linesrc(line, nil, nil).map { String(cString: $0) }
        return SourceLocation(file: file, line: Int(lineNumber), column: Int(column))
    }

    /// Where an inlined subroutine was called from: its DW_AT_call_file/line/column.
    private func callSite(of scope: inout Dwarf_Die, cuDie: inout Dwarf_Die) -> SourceLocation {
        var location = SourceLocation()
        if let fileIndex = Self.unsignedAttribute(of: &scope, UInt32(DW_AT_call_file)) {
            var files: OpaquePointer?
            var fileCount = 0
            if dwarf_getsrcfiles(&cuDie, &files, &fileCount) == 0, let files, fileIndex < UInt64(fileCount) {
                location.file = dwarf_filesrc(files, Int(fileIndex), nil, nil).map { String(cString: $0) }
            }
        }
        location.line = Self.unsignedAttribute(of: &scope, UInt32(DW_AT_call_line)).map { Int($0) } ?? 0
        location.column = Self.unsignedAttribute(of: &scope, UInt32(DW_AT_call_column)).map { Int($0) } ?? 0
        return location
    }

    private static func linkageName(of die: inout Dwarf_Die) -> String? {
        var attribute = Dwarf_Attribute()
        for name in [DW_AT_linkage_name, DW_AT_MIPS_linkage_name] {
            if dwarf_attr_integrate(&die, UInt32(name), &attribute) != nil,
               let text = dwarf_formstring(&attribute)
            {
                return String(cString: text)
            }
        }
        return nil
    }

    private static func unsignedAttribute(of die: inout Dwarf_Die, _ name: UInt32) -> UInt64? {
        var attribute = Dwarf_Attribute()
        var value: Dwarf_Word = 0
        guard dwarf_attr(&die, name, &attribute) != nil, dwarf_formudata(&attribute, &value) == 0 else {
            return nil
        }
        return value
    }

    static func lastErrorMessage() -> String {
        dwfl_errmsg(-1).map { String(cString: $0) } ?? "unknown libdwfl error"
    }

    private static func lastComponent(_ path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return path }
        return String(path[path.index(after: slash)...])
    }
}

/// A file/line/column triple where 0 means "unknown", as in DWARF.
struct SourceLocation {
    var file: String?
    var line = 0
    var column = 0
}

extension SymbolicatedFrame {
    /// Copies a DWARF location in, mapping DWARF's "0 = unknown" to nil.
    mutating func apply(_ location: SourceLocation) {
        file = location.line > 0 ? location.file : nil
        line = location.line > 0 ? location.line : nil
        column = location.line > 0 && location.column > 0 ? location.column : nil
    }
}
