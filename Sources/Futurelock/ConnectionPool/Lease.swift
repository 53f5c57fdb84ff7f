import Synchronization

extension ConnectionPool {
    /// One checked-out connection, owned by the task that checked it out until it is returned.
    ///
    /// Return it exactly once: ``release(fileID:line:function:)`` when the connection is healthy,
    /// ``returnBroken(fileID:line:function:)`` when it is not (or let `withConnection` do it). A second
    /// return is ignored and reported; a lease dropped without being returned is released for you and
    /// reported as a leak with the site that checked it out. A lease may be passed to another task —
    /// returned from a child task, sent through a channel — and the ledger records the new owner as
    /// soon as that task reads ``connection``, calls ``claim(fileID:line:function:)`` or returns it.
    public final class Lease: Sendable {
        /// The pool the connection belongs to.
        public let pool: ConnectionPool
        let heldConnection: Connection
        let slot: Int32
        /// The pool's number for this lease (how the pool tells a return from one it no longer expects).
        let id: UInt64
        /// The task the ledger last recorded as the owner (raw id), so reading ``connection`` from
        /// the owner costs a task-id read and an atomic load, and from another task records the move.
        private let owner: Atomic<UInt64>
        private let returned = Atomic<Bool>(false)

        init(pool: ConnectionPool, connection: Connection, slot: Int32, id: UInt64, owner: TaskID?) {
            self.pool = pool
            self.heldConnection = connection
            self.slot = slot
            self.id = id
            self.owner = Atomic(owner?.rawValue ?? 0)
        }

        /// The connection. Reading it from a task other than the current owner records that the
        /// lease has moved to that task.
        public var connection: Connection {
            if slot != StateMachine.untrackedSlot {
                let current = TaskID.current.rawValue
                if owner.load(ordering: .relaxed) != current, !isReleased {
                    owner.store(current, ordering: .relaxed)
                    pool.claim(slot: slot, fileID: #fileID, line: #line, function: "Lease.connection")
                }
            }
            return heldConnection
        }

        /// Whether the lease has been returned (released or returned broken).
        public var isReleased: Bool { returned.load(ordering: .acquiring) }

        /// Gives the healthy connection back: to the first waiter if anyone waits, otherwise to the
        /// idle set (or to be closed, if it is past its lifetime or the pool has been shut down). After
        /// a shutdown's grace period has run out, the connection was already closed and taken back:
        /// the return is then ignored.
        ///
        /// Returning twice does not return two connections: the second call is ignored and reported
        /// to the ledger as a double release. Use ``releaseChecked(fileID:line:function:)`` to get an
        /// error instead.
        public func release(fileID: StaticString = #fileID, line: UInt = #line,
                            function: StaticString = #function) {
            if returned.exchange(true, ordering: .acquiringAndReleasing) {
                pool.reportDoubleRelease(slot: slot, fileID: fileID, line: line, function: function)
                return
            }
            pool.release(slot: slot, lease: id, fileID: fileID, line: line, function: function)
        }

        /// Like ``release(fileID:line:function:)``, but a second return throws
        /// ``FuturelockError/alreadyReleased(resource:)`` (it is still reported to the ledger).
        public func releaseChecked(fileID: StaticString = #fileID, line: UInt = #line,
                                   function: StaticString = #function) throws(FuturelockError) {
            if returned.exchange(true, ordering: .acquiringAndReleasing) {
                pool.reportDoubleRelease(slot: slot, fileID: fileID, line: line, function: function)
                throw .alreadyReleased(resource: pool.name)
            }
            pool.release(slot: slot, lease: id, fileID: fileID, line: line, function: function)
        }

        /// Gives the connection back as broken: it is closed with the pool's close callback and, once
        /// closed, its capacity is freed. The close is done by a task that can wait for it: the next
        /// checkout that needs the capacity (it closes, then creates a replacement), the pool's
        /// ``ConnectionPool/run()`` loop, or ``ConnectionPool/shutdown(gracePeriod:fileID:line:function:)``.
        ///
        /// After a release, this is a double release: ignored and reported.
        public func returnBroken(fileID: StaticString = #fileID, line: UInt = #line,
                                 function: StaticString = #function) {
            if returned.exchange(true, ordering: .acquiringAndReleasing) {
                pool.reportDoubleRelease(slot: slot, fileID: fileID, line: line, function: function)
                return
            }
            pool.returnBroken(slot: slot, lease: id, fileID: fileID, line: line, function: function)
        }

        /// Like ``returnBroken(fileID:line:function:)``, but returning an already returned lease
        /// throws ``FuturelockError/alreadyReleased(resource:)`` (it is still reported to the ledger).
        public func returnBrokenChecked(fileID: StaticString = #fileID, line: UInt = #line,
                                        function: StaticString = #function) throws(FuturelockError) {
            if returned.exchange(true, ordering: .acquiringAndReleasing) {
                pool.reportDoubleRelease(slot: slot, fileID: fileID, line: line, function: function)
                throw .alreadyReleased(resource: pool.name)
            }
            pool.returnBroken(slot: slot, lease: id, fileID: fileID, line: line, function: function)
        }

        /// Records that the calling task now owns this lease (after it was passed from another task).
        public func claim(fileID: StaticString = #fileID, line: UInt = #line,
                          function: StaticString = #function) {
            guard !isReleased, slot != StateMachine.untrackedSlot else { return }
            owner.store(TaskID.current.rawValue, ordering: .relaxed)
            pool.claim(slot: slot, fileID: fileID, line: line, function: function)
        }

        /// Records that the lease is being handed to another task whose identity is not known yet
        /// (put in a reply slot or a channel). Until a task claims it, reads its connection or returns
        /// it, the ledger shows it as *in transit*, and the watchdog never blames the task it left.
        public func handOff(fileID: StaticString = #fileID, line: UInt = #line,
                            function: StaticString = #function) {
            guard !isReleased, slot != StateMachine.untrackedSlot else { return }
            owner.store(TaskID.none.rawValue, ordering: .relaxed)
            pool.claim(slot: slot, as: .none, node: nil, fileID: fileID, line: line, function: function)
        }

        deinit {
            if !returned.load(ordering: .acquiring) {
                pool.releaseDropped(slot: slot, lease: id)
            }
        }
    }
}

/// A channel carrying these records each one as it is sent and received (`handOff` and `claim`).
extension ConnectionPool.Lease: RecordedHolding {}
