/// Address ranges mapped to DIE offsets, sorted for binary search: the lookup both the compile-unit
/// index and the subprogram index need.
///
/// Ranges may nest (inlined or nested functions) or overlap (identical-code folding, sloppy
/// producers). They are sorted by `low`, and among equal `low` widest first, so scanning backwards
/// from the last range starting at or below an address meets the innermost one first; a running
/// maximum of `high` ends the scan as soon as no earlier range can still reach the address.
struct AddressRangeIndex {
    struct Range {
        var low: UInt64
        var high: UInt64  // exclusive
        var offset: UInt64
    }

    private let ranges: [Range]
    private let maxHigh: [UInt64]

    /// The number of ranges indexed; for diagnostics and tests.
    var count: Int { ranges.count }

    init(_ unsorted: [Range]) {
        let sorted = unsorted.sorted { ($0.low, $1.high) < ($1.low, $0.high) }
        var running: UInt64 = 0
        maxHigh = sorted.map { range in
            running = max(running, range.high)
            return running
        }
        ranges = sorted
    }

    /// The offset of the innermost range containing `address`.
    func offset(containing address: UInt64) -> UInt64? {
        var lowerBound = 0
        var upperBound = ranges.count
        while lowerBound < upperBound {
            let middle = (lowerBound + upperBound) / 2
            if ranges[middle].low <= address {
                lowerBound = middle + 1
            } else {
                upperBound = middle
            }
        }
        var index = lowerBound - 1
        while index >= 0, maxHigh[index] > address {
            if ranges[index].high > address { return ranges[index].offset }
            index -= 1
        }
        return nil
    }
}
