"""Changing a password ends the account's open IMAP sessions (issue 17: deleting the account did,
changing its password did not, so whoever had logged in with the old password stayed in). The
change ends them on the node where it is applied: committed there (the admin API and the CLI
write the same passwd record) or applied by replay of the other node's log."""

from __future__ import annotations

import asyncio

from mailpair.store import NodeStore, hash_password
from tests.imap.conftest import PASSWORD, close_memory_host, make_memory_host


async def _ended(c, timeout: float = 5) -> bytes:
    """What the server said before closing the client's connection."""
    await asyncio.wait_for(c.task, timeout)
    return c.t.received()


def test_password_change_ends_the_accounts_sessions(tmp_path):
    m = make_memory_host(tmp_path)
    m.add_user("alice")
    m.add_user("bob")

    async def go() -> None:
        selected, idle, other = m.client(), m.client(), m.client()
        await selected.login("alice")
        assert (await selected.cmd(b"S SELECT INBOX"))[-1].startswith(b"S OK")
        await idle.login("alice")
        await other.login("bob")
        # As the admin API's POST /api/users/NAME/password does it.
        await m.db.acommit("account_passwd", name="alice", hash=hash_password("new-pw", log_n=8))
        for c in (selected, idle):
            out = await _ended(c)  # before: both stayed open
            assert b"* BYE" in out and b"password changed" in out, out
        assert (await other.cmd(b"O NOOP"))[-1].startswith(b"O OK")  # bob's session is untouched
        await other.close()
        assert m.host.user_connections.get("alice", 0) == 0
        again = m.client()
        await again.greeting()
        assert (await again.cmd(b"L LOGIN alice " + PASSWORD.encode()))[-1].startswith(b"L NO")
        assert (await again.cmd(b"M LOGIN alice new-pw"))[-1].startswith(b"M OK")
        await again.close()

    try:
        m.run(go(), timeout=60)
    finally:
        close_memory_host(m)


def test_password_change_arriving_by_replay_ends_sessions(tmp_path):
    """The other node changed the password; its record reaches this node's database by replay
    (the path the passive's copy and crash recovery take) and the sessions here end."""
    source = NodeStore(tmp_path / "source").open()
    m = make_memory_host(tmp_path)
    try:
        src = source.default_database()
        src.commit("account_add", name="alice", hash=hash_password(PASSWORD, log_n=8), quota=0)
        db = m.db
        assert db.name == src.name
        # This node's database replays the other's log from the start.
        db.call_on_writer(lambda: db.replay_records(src.log.read_from(1, src.log.last_lsn)))

        async def go() -> None:
            c = m.client()
            await c.login("alice")
            first = src.log.last_lsn + 1
            src.commit("account_passwd", name="alice", hash=hash_password("new-pw", log_n=8))
            await asyncio.to_thread(db.call_on_writer, lambda: db.replay_records(src.log.read_from(first, src.log.last_lsn)))
            out = await _ended(c)
            assert b"* BYE" in out and b"password changed" in out, out

        m.run(go(), timeout=60)
    finally:
        close_memory_host(m)
        source.close()


def test_deleting_the_account_ends_every_session_too(tmp_path):
    """Before, only a session with a mailbox selected noticed (its mailbox was gone)."""
    m = make_memory_host(tmp_path)
    m.add_user("alice")

    async def go() -> None:
        c = m.client()
        await c.login("alice")  # logged in, nothing selected
        await m.db.acommit("account_del", name="alice")
        out = await _ended(c)
        assert b"* BYE" in out and b"deleted" in out, out

    try:
        m.run(go(), timeout=60)
    finally:
        close_memory_host(m)


def test_a_login_checked_while_the_password_changes_does_not_stand(tmp_path, monkeypatch):
    """The password changes while a LOGIN with the old one is being checked: that login must not
    become a session the change did not end."""
    from mailpair.protocols.imap import cmd_auth

    m = make_memory_host(tmp_path)
    m.add_user("alice")
    real = cmd_auth.verify_password

    def verify_while_changing(password: str, stored: str) -> bool:
        ok = real(password, stored)
        m.db.commit("account_passwd", name="alice", hash=hash_password("new-pw", log_n=8))
        return ok

    async def go() -> None:
        c = m.client()
        await c.greeting()
        monkeypatch.setattr(cmd_auth, "verify_password", verify_while_changing)
        reply = await c.cmd(b"L LOGIN alice " + PASSWORD.encode())
        monkeypatch.setattr(cmd_auth, "verify_password", real)
        assert reply[-1].startswith(b"L NO [UNAVAILABLE]"), reply
        assert m.host.user_connections.get("alice", 0) == 0
        assert (await c.cmd(b"M LOGIN alice new-pw"))[-1].startswith(b"M OK")
        await c.close()

    try:
        m.run(go(), timeout=60)
    finally:
        close_memory_host(m)


def test_a_running_pair_ends_the_session_when_the_admin_api_changes_the_password(tmp_path):
    """As an operator would meet it: a mail client logged in to the active node, the password
    changed through the admin API, the client gets BYE; /metrics counts it."""
    import imaplib

    from tests.helpers.pair import active, http, pair_down, pair_up

    root = tmp_path / "pair"
    info = pair_up(root, users=1)
    try:
        node = active(info)
        c = imaplib.IMAP4("127.0.0.1", node["imap"])
        assert c.login("user1", info["users"][0]["password"])[0] == "OK"
        assert c.select("INBOX")[0] == "OK"
        base = f"http://127.0.0.1:{node['admin']}"
        code, body = http(base + "/api/users/user1/password", info["admin_token"], "POST", {"password": "changed-pw"})
        assert code == 200, body
        c.sock.settimeout(10)
        seen = b""
        try:
            while b"* BYE" not in seen:
                data = c.sock.recv(4096)
                if not data:
                    break
                seen += data
        except TimeoutError:
            pass
        assert b"* BYE" in seen and b"password changed" in seen, seen  # before: nothing, still logged in
        text = http(base + "/metrics")[1].decode()
        assert 'mailpair_imap_sessions_closed_total{reason="credentials changed"} 1.0' in text
        c2 = imaplib.IMAP4("127.0.0.1", node["imap"])
        assert c2.login("user1", "changed-pw")[0] == "OK"
        c2.logout()
    finally:
        pair_down(root)
