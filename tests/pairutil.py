"""Start and stop a real pair with the CLI, as a user would (`pair up --json`, `pair down`)."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path


def mailpair(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", "mailpair", *args], capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError(f"mailpair {' '.join(args)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return r


def pair_up(root: Path, users: int = 2, mode: str = "async") -> dict:
    r = mailpair("pair", "up", "--dir", str(root), "--users", str(users), "--mode", mode, "--json")
    return json.loads(r.stdout)


def pair_down(root: Path) -> None:
    mailpair("pair", "down", "--dir", str(root), check=False)


def status(root: Path) -> dict:
    return json.loads(mailpair("status", "--dir", str(root), "--json").stdout)


def http(url: str, token: str | None = None, method: str = "GET", body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def active(info: dict) -> dict:
    return next(n for n in info["nodes"] if n["role"] == "active")
