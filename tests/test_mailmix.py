"""The shared mail mix: exact sizes, valid MIME a mail parser reads without defects, stable bytes."""

from __future__ import annotations

import email
import email.policy

import pytest

from mailpair import mailmix


@pytest.mark.parametrize("size", [600, 5000, 6 * 1024, 64 * 1024 - 1, 64 * 1024, 64 * 1024 + 1, 90_000, 1024 * 1024, 3_000_001])
def test_messages_have_the_exact_size_and_parse_cleanly(size):
    raw = mailmix.message(size, seed=size % 11)
    assert len(raw) == size
    assert b"\r" not in raw.replace(b"\r\n", b"") and b"\n" not in raw.replace(b"\r\n", b"")
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert not msg.defects and msg["Message-ID"]
    parts = list(msg.walk())
    assert all(not p.defects for p in parts)
    if size >= 6 * 1024:
        assert msg.get_content_type() == "multipart/mixed"
        attachments = [p for p in parts if p.get_content_disposition() == "attachment"]
        assert attachments and all(p["Content-Transfer-Encoding"] == "base64" for p in attachments)
        assert all(len(p.get_content()) > 0 for p in attachments if size > 20_000)


def test_the_same_call_gives_the_same_bytes_and_seeds_differ():
    assert mailmix.message(200_000, seed=4) == mailmix.message(200_000, seed=4)
    assert mailmix.message(200_000, seed=4) != mailmix.message(200_000, seed=5)
    assert mailmix.sizes(50, seed=2) == mailmix.sizes(50, seed=2)


def test_sizes_look_like_a_real_mailbox():
    sizes = mailmix.sizes(2000, seed=1)
    over_64k = sum(s > 64 * 1024 for s in sizes) / len(sizes)
    over_1m = sum(s > 1024 * 1024 for s in sizes) / len(sizes)
    assert 0.35 < over_64k < 0.55 and 0.03 < over_1m < 0.08
    assert min(sizes) >= 2 * 1024 and max(sizes) <= mailmix.DEFAULT_LIMIT
    assert max(mailmix.sizes(500, seed=1, max_bytes=3 * 1024 * 1024)) <= 3 * 1024 * 1024


def test_boundaries_include_the_limit_and_one_byte_more():
    edges = mailmix.boundary_sizes(limit=1000_000, segment=512 * 1024)
    assert {65535, 65536, 65537, 1024 * 1024, 512 * 1024, 1000_000, 1000_001} == set(edges)
