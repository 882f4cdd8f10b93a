"""The passive's disk runs full (a small tmpfs under its data directory): the active keeps
serving, the copy says why it stopped, and once an admin frees space it catches up by itself
and ends identical."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from mailpair.config import ANALYSIS_ROOM


@pytest.fixture
def pair_with_small_passive_disk(tmp_path, make_pair):
    pair = make_pair()
    node2 = pair.data("node2")
    cfg = pair.config("node2")
    # preallocated segments must fit the small disk, and a segment must hold a record of the
    # largest message with its analysis (the config refuses less)
    cfg.max_message_bytes = 512 * 1024
    cfg.segment_size = cfg.max_message_bytes + ANALYSIS_ROOM
    cfg.save(pair.config_path("node2"))
    saved = tmp_path / "node2-saved"
    shutil.copytree(node2, saved, symlinks=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=40m", "tmpfs", str(node2)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {r.stderr.strip()}")
    shutil.copytree(saved, node2, symlinks=True, dirs_exist_ok=True)
    try:
        yield pair
    finally:
        pair.stop()
        subprocess.run(["umount", "-l", str(node2)], check=False)


def test_full_disk_on_the_passive_stops_the_copy_clearly_and_it_resumes_by_itself(pair_with_small_passive_disk):
    pair = pair_with_small_passive_disk
    pair.start_active()
    pair.start_passive()
    last = pair.deliver(100, size=4000)["lsn"]
    pair.wait_caught_up(last)
    filler = pair.data("node2") / "filler"
    free = shutil.disk_usage(pair.data("node2")).free
    with open(filler, "wb") as f:
        f.write(b"\0" * max(0, free - 1024 * 1024))  # about 1 MiB left
    out = pair.deliver(1500, size=4000)  # 6 MB the passive has no room for
    assert out["errors"] == 0  # the active keeps taking mail
    c = pair.wait(
        lambda: pair.copy() if "space" in (pair.copy()["reason"] or "") else None, 30, "the copy to say the disk is full"
    )
    assert c["status"] != "Healthy" and c["stored_lsn"] < out["lsn"]
    filler.unlink()  # the admin frees space
    last = pair.deliver(10, size=4000)["lsn"]
    pair.wait_caught_up(last, 90)
    pair.stop()
    a, p = pair.digests()
    assert a == p


def test_replay_on_a_full_disk_waits_for_space_and_goes_on_by_itself(pair_with_small_passive_disk):
    pair = pair_with_small_passive_disk
    # stored at once, replayed later onto a full disk, with checkpoints of the copy in between
    pair.tune("node2", replay_delay_s=4.0, checkpoint_every=200)
    pair.start_active()
    pair.start_passive()
    last = pair.deliver(1200, size=4000)["lsn"]
    pair.wait(lambda: pair.copy()["stored_lsn"] == last, 30, "the records stored")
    filler = pair.data("node2") / "filler"
    with open(filler, "wb") as f:
        f.write(b"\0" * shutil.disk_usage(pair.data("node2")).free)
    c = pair.wait(lambda: pair.copy() if "full" in (pair.copy()["reason"] or "") else None, 30, "replay to report the full disk")
    assert c["replayed_lsn"] < last
    filler.unlink()
    pair.wait_caught_up(last, 60)  # no admin action needed once there is room again
    pair.stop()
    a, p = pair.digests()
    assert a == p
