"""The selected mailbox as one session sees it: its message sequence, flags and modseqs, and the
untagged updates (EXPUNGE/VANISHED, EXISTS, RECENT, FETCH FLAGS) that bring it up to date with
the store. Pure bookkeeping: the session reads changes from the store and feeds them here."""

from __future__ import annotations

import bisect

from mailpair.protocols.imap import wire


class RecentTracker:
    """\\Recent is per server process (RFC 3501 2.3.1.1: only one session sees a message as
    recent): the highest UID some session has already claimed, per mailbox."""

    def __init__(self) -> None:
        self.claimed: dict[int, int] = {}

    def claim(self, box_id: int, uids: list[int]) -> set[int]:
        upto = self.claimed.get(box_id, 0)
        mine = set(uids[bisect.bisect_right(uids, upto) :])  # uids are sorted
        if uids:
            self.claimed[box_id] = max(upto, uids[-1])
        return mine

    def peek(self, box_id: int, uids: list[int]) -> set[int]:
        """The UIDs a claim would take, without taking them (EXAMINE)."""
        return set(uids[bisect.bisect_right(uids, self.claimed.get(box_id, 0)) :])


SYSTEM_FLAGS = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")


class Selected:
    def __init__(self, row, msgs: list[tuple[int, str, int]], readonly: bool, recent: set[int]):
        self.box_id, self.name, self.uidvalidity, self.uidnext, self.highestmodseq, self.special_use = row
        self.synced_lsn = -1  # the database's applied LSN when this view last read its changes
        self.readonly = readonly
        self.uids: list[int] = [m[0] for m in msgs]
        self.flags: dict[int, str] = {m[0]: m[1] for m in msgs}
        self.modseqs: dict[int, int] = {m[0]: m[2] for m in msgs}
        self.recent = recent
        self.pending_expunge: set[int] = set()
        self.deleted = False  # the mailbox was deleted under us
        self.keywords: set[str] = set()  # announced in the last FLAGS response

    def flags_lines(self) -> list[bytes]:
        """FLAGS and PERMANENTFLAGS for the keywords announced so far."""
        flags = " ".join([*SYSTEM_FLAGS, *sorted(self.keywords)]).encode()
        out = [b"* FLAGS (" + flags + b")\r\n"]
        if self.readonly:
            out.append(b"* OK [PERMANENTFLAGS ()] read-only mailbox\r\n")
        else:
            out.append(b"* OK [PERMANENTFLAGS (" + flags + b" \\*)] flags permitted\r\n")
        return out

    def new_keywords(self, flag_strings) -> list[bytes]:
        """RFC 3501 7.2.6 / RFC 9051 7.3.5: once a message carries a keyword the session has not
        been told of, FLAGS (and PERMANENTFLAGS) are sent again, before the FETCH that shows it."""
        seen = self.keywords
        new = {f for fs in set(flag_strings) for f in fs.split() if not f.startswith("\\") and f not in seen}
        if not new:
            return []
        seen |= new
        return self.flags_lines()

    def __len__(self) -> int:
        return len(self.uids)

    def msn_of(self, uid: int) -> int | None:
        i = bisect.bisect_left(self.uids, uid)
        return i + 1 if i < len(self.uids) and self.uids[i] == uid else None

    def uid_at(self, msn: int) -> int:
        return self.uids[msn - 1]

    def record_flags(self, uid: int, flags: str, modseq: int) -> None:
        """A change this session made or reported itself, so it is not echoed again."""
        if uid in self.flags:
            self.flags[uid] = flags
            self.modseqs[uid] = modseq

    def expunge_now(self, uids: list[int], qresync: bool) -> list[bytes]:
        """Remove UIDs from the view at once, with the responses that say so."""
        out: list[bytes] = []
        gone = []
        for uid in sorted(uids):
            msn = self.msn_of(uid)
            if msn is None:
                continue
            if not qresync:
                out.append(b"* %d EXPUNGE\r\n" % msn)
            del self.uids[msn - 1]
            self.flags.pop(uid, None)
            self.modseqs.pop(uid, None)
            self.recent.discard(uid)
            self.pending_expunge.discard(uid)
            gone.append(uid)
        if qresync and gone:
            out.append(b"* VANISHED " + wire.seq_set(gone) + b"\r\n")
        return out

    def apply(
        self,
        row,
        msgs: list[tuple[int, str, int]],
        expunged: list[int],
        recent_tracker: RecentTracker,
        allow_expunge: bool,
        condstore: bool,
        qresync: bool,
    ) -> list[bytes]:
        """Fold a change set (from reads.changes_since) in; returns the untagged responses."""
        out: list[bytes] = []
        if row is None:
            self.deleted = True
            return out
        self.name = row[1]  # follows a RENAME by another session
        self.highestmodseq = max(self.highestmodseq, row[4])
        self.uidnext = row[3]
        gone = [u for u in expunged if u in self.flags]
        self.pending_expunge.update(gone)
        if allow_expunge and self.pending_expunge:
            out += self.expunge_now(sorted(self.pending_expunge), qresync)
        out += self.new_keywords(m[1] for m in msgs)
        new = []
        for uid, flags, modseq in msgs:
            if uid in self.flags:
                if self.modseqs.get(uid) == modseq and self.flags[uid] == flags:
                    continue
                self.flags[uid] = flags
                self.modseqs[uid] = modseq
                msn = self.msn_of(uid)
                extra = b" MODSEQ (%d)" % modseq if condstore else b""
                out.append(b"* %d FETCH (UID %d FLAGS (%s)%s)\r\n" % (msn, uid, flags.encode(), extra))
            elif not self.uids or uid > self.uids[-1]:
                new.append((uid, flags, modseq))
        if new:
            for uid, flags, modseq in new:
                self.uids.append(uid)
                self.flags[uid] = flags
                self.modseqs[uid] = modseq
            self.recent |= recent_tracker.claim(self.box_id, [n[0] for n in new])
            out.append(b"* %d EXISTS\r\n" % len(self.uids))
            out.append(b"* %d RECENT\r\n" % len(self.recent))
        return out
