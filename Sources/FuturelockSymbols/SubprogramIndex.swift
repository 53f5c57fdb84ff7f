// Address → function DIE within one compile unit, and the chain of inlined calls inside it.
//
// libdw's `dwarf_getscopes` descends only through DIEs that carry address ranges, and prunes any DIE
// that has none. Swift nests every function definition inside a DW_TAG_module (and methods inside their
// types), which have no ranges, so `dwarf_getscopes` finds no scope at all for Swift code. This index
// walks the CU's DIE tree once, through modules, namespaces and types, records every function that has
// code, and then finds the innermost function containing an address by binary search. The inlined-call
// chain is found by descending from that function through the children whose ranges contain the address
// (inlined subroutines and lexical blocks) — a walk over a handful of DIEs.

import CLibdw

/// The code-bearing DW_TAG_subprogram DIEs of one compile unit, sorted by address.
struct SubprogramIndex {
    private let index: AddressRangeIndex

    /// The number of function address ranges indexed; for diagnostics and tests.
    var rangeCount: Int { index.count }

    /// Walks the whole DIE tree of the CU whose DIE is `cuDie`.
    init(cuDie: Dwarf_Die) {
        var collected: [AddressRangeIndex.Range] = []
        var pending: [Dwarf_Die] = []
        var child = Dwarf_Die()
        var root = cuDie
        if dwarf_child(&root, &child) == 0 { pending.append(child) }
        // Each pending DIE stands for itself and its following siblings.
        while var die = pending.popLast() {
            while true {
                let tag = dwarf_tag(&die)
                var descend = dwarf_haschildren(&die) > 0
                if tag == Int32(DW_TAG_subprogram) {
                    let ranges = Self.ranges(of: &die)
                    // A subprogram without code is a declaration or an abstract (inline) definition;
                    // its children describe no code either.
                    descend = descend && !ranges.isEmpty
                    let offset = dwarf_dieoffset(&die)
                    for range in ranges {
                        collected.append(AddressRangeIndex.Range(low: range.low, high: range.high, offset: offset))
                    }
                }
                if descend, dwarf_child(&die, &child) == 0 {
                    var sibling = die
                    if dwarf_siblingof(&die, &sibling) == 0 { pending.append(sibling) }
                    die = child
                    continue
                }
                var sibling = Dwarf_Die()
                guard dwarf_siblingof(&die, &sibling) == 0 else { break }
                die = sibling
            }
        }
        index = AddressRangeIndex(collected)
    }

    /// The DIE offset of the innermost function whose code contains `address` (a DWARF address).
    func subprogramOffset(containing address: UInt64) -> UInt64? {
        index.offset(containing: address)
    }

    /// The scopes at `address` inside `subprogram` that name a function: the inlined subroutines,
    /// innermost first, followed by `subprogram` itself.
    static func functionScopes(in subprogram: Dwarf_Die, at address: UInt64) -> [Dwarf_Die] {
        var chain = [subprogram]
        var current = subprogram
        var child = Dwarf_Die()
        descending: while dwarf_child(&current, &child) == 0 {
            var candidate = child
            while true {
                let tag = dwarf_tag(&candidate)
                let isScope = tag == Int32(DW_TAG_inlined_subroutine) || tag == Int32(DW_TAG_lexical_block)
                if isScope, dwarf_haspc(&candidate, address) > 0 {
                    if tag == Int32(DW_TAG_inlined_subroutine) { chain.append(candidate) }
                    current = candidate
                    continue descending
                }
                var sibling = Dwarf_Die()
                guard dwarf_siblingof(&candidate, &sibling) == 0 else { break descending }
                candidate = sibling
            }
        }
        return chain.reversed()
    }

    private static func ranges(of die: inout Dwarf_Die) -> [(low: UInt64, high: UInt64)] {
        var result: [(low: UInt64, high: UInt64)] = []
        var base: Dwarf_Addr = 0
        var start: Dwarf_Addr = 0
        var end: Dwarf_Addr = 0
        var cursor = dwarf_ranges(&die, 0, &base, &start, &end)
        while cursor > 0 {
            // Code the linker discarded is left at 0 (or at a -1/-2 tombstone with lld).
            if end > start, start != 0, start < UInt64.max - 1 { result.append((start, end)) }
            cursor = dwarf_ranges(&die, cursor, &base, &start, &end)
        }
        return result
    }
}
