"""End to end through a real pair (`mailpair pair up`): mail delivered over LMTP to the active
node is read, flagged and moved over IMAP, with IDLE seeing the delivery."""

from __future__ import annotations

import smtplib
import time

import imapclient

from tests.helpers.pair import active, pair_down, pair_up


def test_lmtp_to_imap_on_a_running_pair(tmp_path):
    info = pair_up(tmp_path / "pair", users=1)
    try:
        node = active(info)
        user = info["users"][0]
        c = imapclient.IMAPClient("127.0.0.1", port=node["imap"], ssl=False, timeout=10)
        c.login(user["name"], user["password"])
        c.select_folder("INBOX")
        before = len(c.search())
        c.idle()
        t0 = time.perf_counter()
        with smtplib.LMTP("127.0.0.1", node["lmtp"]) as lmtp:
            lmtp.sendmail(
                "sender@example.org",
                [f"{user['name']}@{info['domain']}"],
                b"From: sender@example.org\r\nSubject: end to end\r\n\r\nthrough the node\r\n",
            )
        resp = c.idle_check(timeout=5)
        waited = time.perf_counter() - t0
        c.idle_done()
        assert any(r[1] == b"EXISTS" for r in resp), resp
        assert waited < 2
        uids = c.search(["SUBJECT", "end to end"])
        assert len(uids) == 1 and len(c.search()) == before + 1
        assert c.fetch(uids, ["BODY[TEXT]"])[uids[0]][b"BODY[TEXT]"] == b"through the node\r\n"
        c.add_flags(uids, [b"\\Flagged"])
        c.move(uids, "Archive")
        assert c.folder_status("Archive", ["MESSAGES"])[b"MESSAGES"] == 1
        c.logout()
    finally:
        pair_down(tmp_path / "pair")
