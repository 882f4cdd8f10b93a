"""Start and stop a real pair with the CLI, as a user would (`pair up --json`, `pair down`)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from mailpair.api.client import request


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


def http(url: str, token: str | None = None, method: str = "GET", body=None) -> tuple[int, bytes]:
    """(status, body) of one admin API call, whatever the status."""
    return request(url, token, method, body, timeout=10)


def active(info: dict) -> dict:
    return next(n for n in info["nodes"] if n["role"] == "active")
