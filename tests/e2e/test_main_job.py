"""The README's main job, as a new user runs it: start the pair on a clean directory, read a
sample message over IMAP, deliver one over LMTP, and see it counted on both nodes."""

from __future__ import annotations

import imaplib
import json
import re
import shlex
import smtplib
import subprocess
import sys
import time
from pathlib import Path

from tests.helpers.pair import pair_down, status

ROOT = Path(__file__).resolve().parents[2]


def readme_main_command() -> str:
    """The first command of the README's first code block: the main job."""
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```sh\n(.*?)```", text, re.S).group(1)
    line = block.splitlines()[0]
    return line.split("#")[0].strip()


def test_readme_main_job_end_to_end(tmp_path):
    cmd = readme_main_command()
    assert "pair up --dir pair" in cmd, cmd
    # The new user's directory is a clean one; --json added so the test can read the ports.
    cmd = cmd.replace("--dir pair", f"--dir {shlex.quote(str(tmp_path / 'pair'))} --json")
    r = subprocess.run(["bash", "-c", cmd], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    info = json.loads(r.stdout.strip().splitlines()[-1])
    try:
        assert len(info["nodes"]) == 2
        active = next(n for n in info["nodes"] if n["role"] == "active")
        user = info["users"][0]
        # Read a sample message over IMAP.
        imap = imaplib.IMAP4("127.0.0.1", active["imap"])
        imap.login(user["name"], user["password"])
        typ, data = imap.select("INBOX")
        assert typ == "OK" and int(data[0]) >= 1
        typ, data = imap.uid("FETCH", "1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        assert typ == "OK" and b"Welcome to mailpair" in data[0][1]
        before = int(imap.select("INBOX")[1][0])
        # Deliver one over LMTP.
        lmtp = smtplib.LMTP("127.0.0.1", active["lmtp"])
        msg = f"From: a@example.org\r\nTo: {user['name']}@{info['domain']}\r\nSubject: e2e hello\r\n\r\nhi\r\n"
        refused = lmtp.sendmail("a@example.org", [f"{user['name']}@{info['domain']}"], msg)
        assert refused == {}
        lmtp.quit()
        typ, data = imap.select("INBOX")
        assert int(data[0]) == before + 1
        typ, data = imap.search(None, "SUBJECT", '"e2e hello"')
        assert data[0].split(), "the delivered message is not in INBOX"
        imap.logout()
        # Counted on both nodes: the passive has stored and replayed up to the active's LSN.
        deadline = time.monotonic() + 30
        while True:
            st = status(tmp_path / "pair")
            copies = {c["node"]: c for c in st["databases"][0]["copies"]}
            lsns = {(c["stored_lsn"], c["replayed_lsn"]) for c in copies.values()}
            if len(copies) == 2 and len(lsns) == 1 and all(c["status"] in ("Mounted", "Healthy") for c in copies.values()):
                break
            assert time.monotonic() < deadline, f"copies never converged: {st}"
            time.sleep(0.2)
        assert all(n["reachable"] for n in st["nodes"])
    finally:
        pair_down(tmp_path / "pair")
    # Stopped, both copies hold the same content at the same LSN.
    digests = []
    for node in info["nodes"]:
        r = subprocess.run([sys.executable, "-m", "mailpair", "db", "digest", node["data"]], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        digests.append(json.loads(r.stdout)["databases"])
    assert digests[0] == digests[1]
