// Address → compile unit, for modules that have no usable .debug_aranges.
//
// libdw finds the compile unit (CU) for an address through .debug_aranges. The Swift compiler does not
// emit that section unless asked (`-Xllvm -generate-arange-section`), and elfutils before 0.191 does not
// fall back to anything else, so `dwfl_module_addrdie`/`dwfl_module_getsrc` return nothing for Swift code
// in an ordinary build. This index walks every CU once (`dwarf_nextcu` + `dwarf_offdie`), collects the
// address ranges each CU covers (`dwarf_ranges`, which reads low_pc/high_pc as well as DW_AT_ranges), and
// answers lookups by binary search. Building it reads only the CU header DIEs, not their children, so it
// costs milliseconds even for large binaries; it is built at most once per module and cached by the owner.

import CLibdw

/// The compile-unit address ranges of one module's DWARF, sorted for binary search.
struct DwarfIndex {
    private let index: AddressRangeIndex

    /// The number of address ranges indexed; for diagnostics and tests.
    var rangeCount: Int { index.count }

    /// Walks every CU of `dwarf` and records the ranges it covers.
    init(dwarf: OpaquePointer) {
        var collected: [AddressRangeIndex.Range] = []
        var offset: Dwarf_Off = 0
        var nextOffset: Dwarf_Off = 0
        var headerSize = 0
        while dwarf_nextcu(dwarf, offset, &nextOffset, &headerSize, nil, nil, nil) == 0 {
            defer { offset = nextOffset }
            var cuDie = Dwarf_Die()
            let dieOffset = offset + Dwarf_Off(headerSize)
            guard dwarf_offdie(dwarf, dieOffset, &cuDie) != nil else { continue }
            var base: Dwarf_Addr = 0
            var start: Dwarf_Addr = 0
            var end: Dwarf_Addr = 0
            var cursor = dwarf_ranges(&cuDie, 0, &base, &start, &end)
            while cursor > 0 {
                // Ranges of code the linker discarded start at 0 (or at a -1/-2 tombstone with lld).
                if end > start, start != 0, start < UInt64.max - 1 {
                    collected.append(AddressRangeIndex.Range(low: start, high: end, offset: dieOffset))
                }
                cursor = dwarf_ranges(&cuDie, cursor, &base, &start, &end)
            }
        }
        index = AddressRangeIndex(collected)
    }

    /// The DIE offset of the CU whose ranges contain `address` (a DWARF address, i.e. bias removed).
    func compileUnitOffset(containing address: UInt64) -> UInt64? {
        index.offset(containing: address)
    }
}
