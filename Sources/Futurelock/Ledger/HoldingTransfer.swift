/// A primitive whose holdings can change owner: a `Permit`, `SendPermit` or `Lease` that is passed to
/// another task and claimed there (or handed off, owner unknown, until it is).
///
/// The three primitives differ only in how they move the record under their own lock; the rule —
/// nothing to do when the ledger is off or the holding was never recorded, and a `transfer` event
/// only when the owner really changed — is written once, here.
protocol HoldingTransferring: AnyObject {
    var ledger: Ledger { get }
    /// Moves the record of `slot` to `task` (running in `node`) under the primitive's lock; returns
    /// whether the owner changed.
    func transferHolding(slot: Int32, to task: TaskID, node: ScopeNode?) -> Bool
    /// Adds an event to the primitive's history, if it keeps one.
    func record(_ kind: LedgerEvent.Kind, _ stamp: OwnerStamp?)
}

extension HoldingTransferring {
    /// Records that the calling task now owns the holding in `slot`.
    func claim(slot: Int32, fileID: StaticString, line: UInt, function: StaticString) {
        claim(slot: slot, as: .current, node: TaskTree.currentNode, fileID: fileID, line: line, function: function)
    }

    /// Records that `task` (`.none`: in transit, owner not known yet) now owns the holding in `slot`.
    func claim(slot: Int32, as task: TaskID, node: ScopeNode?, fileID: StaticString, line: UInt,
               function: StaticString) {
        // A slot of -1 is the primitives' "granted, not recorded" (ledger off).
        guard ledger.isEnabled, slot >= 0 else { return }
        if transferHolding(slot: slot, to: task, node: node) {
            record(.transfer, ledger.stamp(fileID: fileID, line: line, function: function))
        }
    }
}
