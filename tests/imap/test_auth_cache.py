"""Logins: checked against the slow password hash once, then for a while against a keyed hash in
memory (store/authcache.py), forgotten when the password changes; failed logins stay slow."""

from __future__ import annotations

import time

from mailpair.store import hash_password
from mailpair.store.authcache import AuthCache

SLOW_LOG_N = 15  # scrypt at 2**15: tens of ms, far above a cached check


def _login_ms(memory_host, user: str, password: str) -> tuple[bytes, float]:
    async def go():
        c = memory_host.client()
        await c.greeting()
        started = time.perf_counter()
        out = await c.cmd(b"L LOGIN " + user.encode() + b" " + password.encode())
        elapsed = (time.perf_counter() - started) * 1000
        await c.close()
        return out[-1], elapsed

    return memory_host.run(go())


def _slow_hash_ms() -> float:
    started = time.perf_counter()
    hash_password("x", log_n=SLOW_LOG_N)
    return (time.perf_counter() - started) * 1000


def test_returning_user_skips_the_slow_hash_and_a_wrong_password_does_not(memory_host):
    memory_host.db.commit("account_add", name="carol", hash=hash_password("right-pw", log_n=SLOW_LOG_N), quota=0)
    slow = _slow_hash_ms()
    cache = memory_host.host.auth_cache
    reply, first = _login_ms(memory_host, "carol", "right-pw")
    assert reply.startswith(b"L OK")
    assert cache.hits == 0
    fast = []
    for _ in range(5):
        reply, ms = _login_ms(memory_host, "carol", "right-pw")
        assert reply.startswith(b"L OK")
        fast.append(ms)
    assert cache.hits == 5
    assert sorted(fast)[2] < slow / 3, (fast, slow)
    # A wrong password for a cached user is checked the slow way (and fails, with the delay).
    reply, wrong = _login_ms(memory_host, "carol", "wrong-pw")
    assert reply.startswith(b"L NO [AUTHENTICATIONFAILED]")
    assert wrong >= slow * 0.5, (wrong, slow)
    assert cache.hits == 5


def test_password_change_invalidates_the_cached_login(memory_host):
    memory_host.db.commit("account_add", name="dave", hash=hash_password("old-pw", log_n=8), quota=0)
    assert _login_ms(memory_host, "dave", "old-pw")[0].startswith(b"L OK")
    assert _login_ms(memory_host, "dave", "old-pw")[0].startswith(b"L OK")
    hits = memory_host.host.auth_cache.hits
    # The store's passwd record, as the admin API and CLI write it (and replay applies it on
    # the other node): the account's hash changes, so the cached entry no longer counts.
    memory_host.db.commit("account_passwd", name="dave", hash=hash_password("new-pw", log_n=8))
    assert _login_ms(memory_host, "dave", "old-pw")[0].startswith(b"L NO")
    assert _login_ms(memory_host, "dave", "new-pw")[0].startswith(b"L OK")
    assert memory_host.host.auth_cache.hits == hits


def test_cache_rules():
    c = AuthCache(ttl=0.2, max_entries=2)
    assert not c.check("u", "pw", "$h1")
    c.remember("u", "pw", "$h1")
    assert c.check("u", "pw", "$h1")
    assert not c.check("u", "other", "$h1")  # another password
    assert not c.check("u", "pw", "$h2")  # the stored hash changed
    c.remember("v", "pw", "$h")
    c.remember("w", "pw", "$h")
    assert not c.check("u", "pw", "$h1")  # the oldest made way
    time.sleep(0.25)
    assert not c.check("w", "pw", "$h")  # expired
    off = AuthCache(ttl=0)
    off.remember("u", "pw", "$h")
    assert not off.check("u", "pw", "$h")
    # The password is not kept in the clear anywhere in the entry.
    c.remember("x", "hunter2", "$h")
    assert b"hunter2" not in repr(c._entries).encode()
