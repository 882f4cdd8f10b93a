"""What an admin command acts on: a running pair through its nodes' admin API, or a stopped
node's data directory opened directly.

Rules this module keeps: a data directory is opened only under its lock (mailpair.datadir), so the
CLI and a node never write the same database at once; a change through the API goes to the active
node (copy actions to the passive); an API error reaches the user as one line, not a traceback.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import click

from mailpair.admin import pair as pairmod
from mailpair.api import client
from mailpair.api.client import ApiError
from mailpair.datadir import DataDirLocked, lock_data_dir
from mailpair.store import NodeStore, StoreError


class Api:
    """The admin APIs of a pair's nodes, with the admin token."""

    def __init__(self, urls: list[str], token: str):
        self.urls = urls
        self.token = token

    def call(self, url: str, path: str, method: str = "GET", body: Any = None, timeout: float = 10.0) -> Any:
        try:
            return client.call(url.rstrip("/") + path, self.token, method, body, timeout)
        except ApiError as e:
            raise click.ClickException(str(e)) from None

    def statuses(self) -> list[dict[str, Any]]:
        """Each node's own /api/status, or that it did not answer."""
        out = []
        for url in self.urls:
            try:
                out.append({"url": url, "reachable": True, **self.call(url, "/api/status", timeout=3)})
            except (OSError, ValueError, click.ClickException) as e:
                out.append({"url": url, "reachable": False, "error": str(e)})
        return out

    def url_of(self, role: str) -> str:
        """The URL of the reachable node in role ("active" or "passive")."""
        return self.status_of(role)["url"]

    def status_of(self, role: str) -> dict[str, Any]:
        for s in self.statuses():
            if s["reachable"] and s.get("role") == role:
                return s
        raise click.ClickException(f"no {role} node is reachable")

    def active_url(self) -> str:
        return self.url_of("active")


@dataclass(frozen=True)
class Target:
    """What the command line named: a pair's directory (--dir), or nodes' admin URLs and the
    token (--admin, --token), and for commands that can work offline, a data directory (--data)."""

    root: Path | None
    admin: tuple[str, ...]
    token: str | None
    data: Path | None = None


def connect(target: Target) -> Api:
    """The pair of `--dir`, or the nodes of `--admin URL ... --token T`."""
    if target.root is not None:
        try:
            p = pairmod.load_pair(target.root.resolve())
        except pairmod.PairError as e:
            raise click.ClickException(str(e)) from None
        return Api(pairmod.admin_urls(p), p["admin_token"])
    if not target.admin or not target.token:
        raise click.UsageError("give --dir DIR, or --admin URL (one per node) and --token T")
    return Api(list(target.admin), target.token)


def fail(message: str, code: int = 1) -> NoReturn:
    """End the command with one line on stderr and exit code."""
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


@contextlib.contextmanager
def direct_store(data: Path) -> Iterator[NodeStore]:
    """A stopped node's store, opened under its data directory's lock."""
    try:
        fd = lock_data_dir(data)
    except DataDirLocked as e:
        raise click.ClickException(f"{e}; use --dir or --admin to go through its admin API") from None
    try:
        store = NodeStore(data).open()
        try:
            yield store
        finally:
            store.close()
    finally:
        os.close(fd)


def on_node(
    target: Target,
    direct: Callable[[NodeStore], Any],
    path: str,
    method: str = "GET",
    body: Any = None,
) -> Any:
    """Run a command on a stopped node's data directory (direct(store)) when --data is given,
    else through the active node's API (method path with body); the result of either. A store
    that refuses is an error to the user, as the API's 400 is."""
    if target.data is not None:
        with direct_store(target.data) as store:
            try:
                return direct(store)
            except (StoreError, ValueError) as e:
                fail(str(e))
    api = connect(target)
    return api.call(api.active_url(), path, method, body)
