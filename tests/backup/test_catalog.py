"""The catalog's decisions, pure functions of manifests: chains, retention, the full to restore
from."""

from __future__ import annotations

from mailpair.backup.catalog import chain_problems, choose_full, needed, restore_chain, to_keep
from mailpair.backup.manifest import Manifest, iso

DAY = 86400.0


def m(
    i: int, kind: str, first: int, last: int, base: str | None, full: str, finished: float, snap_time: float | None = None
) -> Manifest:
    raw = {
        "id": f"2026120{i}T000000.000000Z-{kind}",
        "kind": kind,
        "db_id": "00000000-0000-0000-0000-000000000001",
        "base": base,
        "full": full,
        "first_lsn": first,
        "last_lsn": last,
        "finished": iso(finished),
        "files": [],
    }
    if kind == "full":
        raw["snapshot_lsn"] = first
        raw["snapshot_time"] = iso(snap_time if snap_time is not None else finished)
    return Manifest(raw)


def week(now: float) -> list[Manifest]:
    f1 = m(1, "full", 10, 20, None, "", now - 8 * DAY)
    f1.raw["full"] = f1.id
    i1 = m(2, "incremental", 21, 30, f1.id, f1.id, now - 7 * DAY)
    f2 = m(3, "full", 35, 40, None, "", now - 6 * DAY)
    f2.raw["full"] = f2.id
    i2 = m(4, "incremental", 41, 50, f2.id, f2.id, now - 5 * DAY)
    i3 = m(5, "incremental", 51, 60, i2.id, f2.id, now - 1 * DAY)
    d1 = m(6, "differential", 41, 70, f2.id, f2.id, now - 0.5 * DAY)
    return [f1, i1, f2, i2, i3, d1]


def test_sound_chains_have_no_problems():
    assert chain_problems(week(1e9)) == []


def test_a_gap_or_a_missing_base_is_named():
    b = week(1e9)
    b[4].raw["first_lsn"] = 52
    assert any("starts at LSN 52" in p and b[4].id in p for p in chain_problems(b))
    assert any("base backup" in p and "missing" in p for p in chain_problems([b[0], b[2], b[4]]))


def test_retention_keeps_what_kept_backups_need():
    now = 1e9
    b = week(now)
    ids = [x.id for x in b]
    assert to_keep(b, None, None, now) == set(ids)
    assert to_keep(b, 1, None, now) == set(ids[2:])
    # the last two days: i3 and d1, and what they need: i2 and f2 (not f1's chain)
    assert to_keep(b, None, 2, now) == {ids[2], ids[3], ids[4], ids[5]}
    assert needed(b, [ids[4]]) == {ids[4], ids[3], ids[2]}
    assert to_keep(b, 0, None, now) == set()


def test_the_full_to_restore_from():
    now = 1e9
    b = week(now)
    assert choose_full(b, None, None) is b[2]
    assert choose_full(b, 30, None) is b[0]
    assert choose_full(b, 5, None) is None
    assert choose_full(b, None, now - 7 * DAY) is b[0]
    assert [x.id for x in restore_chain(b, b[2])] == [x.id for x in b[2:]]
