"""The `mailpair` command line (click + rich).

Commands that change a running node go through its admin API; commands on a stopped node's data
directory open the store directly, guarded by the data directory's lock, so the CLI and a node
never write the same database at once.
"""

from __future__ import annotations

import json
import logging
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import click
from rich.console import Console, Group
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from mailpair.admin import pair as pairmod
from mailpair.api.pairview import merge_statuses
from mailpair.filemodes import private_umask
from mailpair.store.accounts import list_accounts

console = Console()


def _fail(message: str, code: int = 1) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def _read_password(password_stdin: bool) -> str:
    if password_stdin:
        pw = sys.stdin.readline().rstrip("\n")
    else:
        pw = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    if not pw:
        _fail("password is empty")
    return pw


@click.group()
@click.version_option(package_name="mailpair")
def main() -> None:
    """mailpair: a mailbox server that runs as an active/passive pair."""
    private_umask()  # before anything is written: data directories hold mail and password hashes


# ---------------------------------------------------------------------------- node
@main.group()
def node() -> None:
    """Run a node process."""


@node.command("run")
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True)
def node_run(config_path: Path) -> None:
    """Run a node from its configuration file until SIGTERM."""
    from mailpair.datadir import START_FAILURE, DataDirLocked
    from mailpair.node import main as node_main
    from mailpair.store import StoreError
    from mailpair.store.apply import ReplayError
    from mailpair.store.log import LogError

    try:
        node_main(config_path.resolve())
    except (DataDirLocked, StoreError, LogError, ReplayError) as e:
        # One clear line in the node's log (pair up shows it), not a traceback.
        logging.getLogger("mailpair.node").error("%s%s", START_FAILURE, e)
        _fail(str(e))


# ---------------------------------------------------------------------------- pair
@main.group()
def pair() -> None:
    """Start or stop a local pair (two nodes and a witness) on loopback."""


@pair.command("up")
@click.option("--dir", "root", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--users", default=3, show_default=True, type=click.IntRange(0, 10000))
@click.option("--password", default="mailpair", show_default=True)
@click.option("--mode", type=click.Choice(["sync", "async"]), default="async", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
def pair_up(root: Path, users: int, password: str, mode: str, as_json: bool) -> None:
    """Start the pair in DIR (creating it with sample accounts and mail if new) and wait until ready."""
    try:
        info = pairmod.pair_up(root, users=users, password=password, mode=mode)
    except pairmod.PairError as e:
        _fail(str(e))
    if as_json:
        click.echo(json.dumps(info))
        return
    _print_pair(info)


def _print_pair(info: dict[str, Any]) -> None:
    table = Table(title=f"mailpair pair in {info['dir']}")
    for col in ("node", "role", "pid", "IMAP", "LMTP", "SMTP", "admin"):
        table.add_column(col)
    for n in info["nodes"]:
        # A passive node serves no mail: its mail ports open only if it becomes active.
        mail = [str(n[k]) if n["role"] == "active" else f"[dim]({n[k]})[/]" for k in ("imap", "lmtp", "smtp")]
        table.add_row(n["name"], n["role"], str(n["pid"]), *mail, str(n["admin"]))
    console.print(table)
    active = next((n for n in info["nodes"] if n["role"] == "active"), info["nodes"][0])
    users = info["users"]
    console.print(f"Mail domain: [bold]{info['domain']}[/]   witness: {info['witness']}")
    if users:
        u = users[0]
        console.print(f"Accounts: {', '.join(x['name'] for x in users)} (password of {u['name']}: {u['password']})")
        console.print("\nRead mail with any IMAP client (plain-text login is allowed on loopback):")
        console.print(f"  host 127.0.0.1, port {active['imap']}, user {u['name']}, password {u['password']}")
        console.print(f"  curl -s --user {u['name']}:{u['password']} 'imap://127.0.0.1:{active['imap']}/INBOX;UID=1'")
        console.print(f"  neomutt -f 'imap://{u['name']}@127.0.0.1:{active['imap']}/INBOX'")
        console.print("Deliver a message:")
        console.print(f"  swaks --server 127.0.0.1:{active['smtp']} --to {u['name']}@{info['domain']} --from someone@example.org")
        console.print(
            f"  swaks --protocol LMTP --server 127.0.0.1:{active['lmtp']} --to {u['name']}@{info['domain']} --from someone@example.org"
        )
    console.print("Watch the pair:")
    console.print(f"  mailpair status --dir {info['dir']} --watch")
    console.print(f"  dashboard: http://127.0.0.1:{active['admin']}/dashboard  (admin token: {info['admin_token']})")
    console.print(f"Stop it: mailpair pair down --dir {info['dir']}")


@pair.command("down")
@click.option("--dir", "root", type=click.Path(file_okay=False, path_type=Path), required=True)
def pair_down(root: Path) -> None:
    """Stop the node processes `pair up` started in DIR."""
    try:
        stopped = pairmod.pair_down(root)
    except pairmod.PairError as e:
        _fail(str(e))
    click.echo("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))


# ---------------------------------------------------------------------------- admin API access
class Api:
    def __init__(self, urls: list[str], token: str):
        self.urls = urls
        self.token = token

    def call(self, url: str, path: str, method: str = "GET", body: Any = None, timeout: float = 10.0) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(url.rstrip("/") + path, data=data, method=method)
        req.add_header("Authorization", f"Bearer {self.token}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as e:
            try:
                msg = json.loads(e.read()).get("error", str(e))
            except ValueError:
                msg = str(e)
            raise click.ClickException(msg) from None

    def statuses(self) -> list[dict[str, Any]]:
        out = []
        for url in self.urls:
            try:
                out.append({"url": url, "reachable": True, **self.call(url, "/api/status", timeout=3)})
            except (urllib.error.URLError, OSError, click.ClickException) as e:
                out.append({"url": url, "reachable": False, "error": str(e)})
        return out

    def active_url(self) -> str:
        for s in self.statuses():
            if s["reachable"] and s.get("role") == "active":
                return s["url"]
        raise click.ClickException("no active node is reachable")


def _api(root: Path | None, admin: tuple[str, ...], token: str | None) -> tuple[Api, dict[str, Any] | None]:
    if root is not None:
        try:
            p = pairmod.load_pair(root.resolve())
        except pairmod.PairError as e:
            raise click.ClickException(str(e)) from None
        urls = [f"http://{cfg.admin.host}:{cfg.admin.port}" for _, cfg in pairmod._configs(p)]
        return Api(urls, p["admin_token"]), p
    if not admin or not token:
        raise click.UsageError("give --dir DIR, or --admin URL (one per node) and --token T")
    return Api(list(admin), token), None


_target = [
    click.option("--dir", "root", type=click.Path(file_okay=False, path_type=Path), help="a pair started by `pair up`"),
    click.option("--admin", multiple=True, help="admin API URL of a node (repeat for both)"),
    click.option("--token", envvar="MAILPAIR_TOKEN", help="admin token"),
]


def target_options(fn):
    for opt in reversed(_target):
        fn = opt(fn)
    return fn


def merged_status(api: Api) -> dict[str, Any]:
    """The contract's status shape, merged from every node's own view."""
    return merge_statuses(api.statuses())


def _ago(ts: float | None) -> str:
    if not ts:
        return "-"
    age = max(0.0, time.time() - ts)
    return f"{age:.1f}s ago" if age < 120 else time.strftime("%H:%M:%S", time.localtime(ts))


# Status columns: (key, heading in the full table, heading in the compact one or None to leave
# it out). An 80-column terminal gets the compact table rather than every cell cut to "…".
_STATUS_COLUMNS = (
    ("database", "database", "db"),
    ("node", "node", "node"),
    ("role", "role", "role"),
    ("status", "copy status", "status"),
    ("copy_queue", "copy queue", "copy q"),
    ("replay_queue", "replay queue", "replay q"),
    ("stored", "stored LSN", None),
    ("replayed", "replayed LSN", None),
    ("last_stored", "last stored", None),
    ("last_replayed", "last replayed", None),
    ("lag", "lag", "lag"),
    ("backup", "backup age", None),
    ("reason", "reason", "reason"),
)


def _status_rows(st: dict[str, Any]) -> list[dict[str, str]]:
    roles = {n["name"]: n["role"] for n in st["nodes"]}
    rows = []
    for d in st["databases"]:
        for c in d["copies"]:
            color = {"Healthy": "green", "Mounted": "green", "Failed": "red", "Disconnected": "red"}.get(c["status"], "yellow")
            lag = c.get("copy_lag_s")
            rows.append(
                {
                    "database": d["name"],
                    "node": c["node"],
                    "role": roles.get(c["node"]) or "?",
                    "status": f"[{color}]{c['status']}[/]",
                    "copy_queue": str(c.get("copy_queue")),
                    "replay_queue": str(c.get("replay_queue")),
                    "stored": str(c.get("stored_lsn")),
                    "replayed": str(c.get("replayed_lsn")),
                    "last_stored": _ago(c.get("last_stored_time")),
                    "last_replayed": _ago(c.get("last_replayed_time")),
                    "lag": "-" if lag is None else f"{lag * 1000:.0f} ms",
                    # Backups are not built yet in this version; the column says so rather than hide.
                    "backup": "no backup",
                    "reason": c.get("reason") or "",
                }
            )
    for n in st["nodes"]:
        if not n["reachable"]:
            rows.append({"database": "-", "node": n["name"], "role": "-", "status": "[red]unreachable[/]", "reason": n["url"]})
    return rows


def _status_table(st: dict[str, Any], width: int | None = None) -> Group:
    """The full table, or the compact one when the full one is wider than `width`; the witness
    line goes under it as text that wraps (a caption would be cut to the table's width)."""
    w = st.get("witness") or {}
    witness = f"witness {w.get('path', 'none')}" + (f" (active {w['active']})" if w.get("active") else "")
    if w.get("error"):
        witness += f" [red]{w['error']}[/]"
    rows = _status_rows(st)

    def build(compact: bool) -> Table:
        cols = [(key, short if compact else full) for key, full, short in _STATUS_COLUMNS if not compact or short]
        table = Table(title=f"mailpair status (epoch {st['epoch']})")
        for key, heading in cols:
            # names and reasons fold onto more lines; the short fixed cells stay whole
            long_text = key in ("database", "node", "reason")
            table.add_column(heading, no_wrap=not long_text, overflow="fold" if long_text else "ellipsis")
        for row in rows:
            table.add_row(*(row.get(key, "") for key, _ in cols))
        return table

    table = build(compact=False)
    if width is not None and Measurement.get(console, console.options.update_width(10_000), table).maximum > width:
        table = build(compact=True)
    return Group(table, Text.from_markup(witness))


@main.command()
@target_options
@click.option("--json", "as_json", is_flag=True)
@click.option("--watch", is_flag=True, help="refresh every second until interrupted")
def status(root: Path | None, admin: tuple[str, ...], token: str | None, as_json: bool, watch: bool) -> None:
    """Copy status of every database on the pair."""
    api, _ = _api(root, admin, token)
    if as_json:
        click.echo(json.dumps(merged_status(api)))
        return
    if not watch:
        console.print(_status_table(merged_status(api), console.width))
        return
    from rich.live import Live

    with Live(_status_table(merged_status(api), console.width), console=console, refresh_per_second=2) as live:
        try:
            while True:
                time.sleep(1)
                live.update(_status_table(merged_status(api), console.width))
        except KeyboardInterrupt:
            pass


# ---------------------------------------------------------------------------- copies
@main.group()
def copy() -> None:
    """Copy status and actions on the passive copy of a database."""


@copy.command("status")
@target_options
@click.option("--json", "as_json", is_flag=True)
def copy_status(root, admin, token, as_json) -> None:
    api, _ = _api(root, admin, token)
    st = merged_status(api)
    if as_json:
        click.echo(json.dumps(st["databases"]))
    else:
        console.print(_status_table(st, console.width))


def _copy_action(action: str):
    @copy.command(action)
    @click.argument("database")
    @target_options
    def cmd(database: str, root, admin, token) -> None:
        api, _ = _api(root, admin, token)
        passive = next((s for s in api.statuses() if s["reachable"] and s.get("role") == "passive"), None)
        if passive is None:
            raise click.ClickException("no passive node is reachable")
        api.call(passive["url"], f"/api/databases/{database}/copy/{action}", method="POST")
        click.echo(f"{action}: {database} on {passive['name']}")

    cmd.__doc__ = f"{action.capitalize()} the passive copy of DATABASE."
    return cmd


for _action in ("suspend", "resume", "reseed"):
    _copy_action(_action)


# ---------------------------------------------------------------------------- users
@main.group()
def user() -> None:
    """Accounts: add, list, passwd, del (through the active node, or on a stopped node's --data)."""


_data_opt = click.option("--data", type=click.Path(file_okay=False, path_type=Path), help="a stopped node's data directory")


def _direct_store(data: Path):
    from mailpair.datadir import DataDirLocked, lock_data_dir
    from mailpair.store import NodeStore

    try:
        fd = lock_data_dir(data)
    except DataDirLocked as e:
        raise click.ClickException(f"{e}; use --dir or --admin to go through its admin API") from None
    return fd, NodeStore(data).open()


def _close_direct(fd: int, store) -> None:
    import os

    store.close()
    os.close(fd)


@user.command("add")
@click.argument("name")
@click.option("--quota", default=0, type=click.IntRange(0), help="bytes, 0 for unlimited")
@click.option("--password-stdin", is_flag=True, help="read the password from standard input")
@_data_opt
@target_options
def user_add(name, quota, password_stdin, data, root, admin, token) -> None:
    from mailpair.store import StoreError, hash_password, names

    try:
        names.check_user(name)
    except ValueError as e:
        _fail(str(e))
    pw = _read_password(password_stdin)
    if data is not None:
        fd, store = _direct_store(data)
        try:
            store.default_database().commit("account_add", name=name, hash=hash_password(pw), quota=quota)
        except StoreError as e:
            _fail(str(e))
        finally:
            _close_direct(fd, store)
    else:
        api, _ = _api(root, admin, token)
        api.call(api.active_url(), "/api/users", "POST", {"name": name, "password": pw, "quota": quota})
    click.echo(f"added {name}")


@user.command("list")
@click.option("--json", "as_json", is_flag=True)
@_data_opt
@target_options
def user_list(as_json, data, root, admin, token) -> None:
    if data is not None:
        fd, store = _direct_store(data)
        try:
            users = []
            for db in store.databases.values():
                rows = db.read_sync(list_accounts)
                users += [{"name": n, "quota": q, "used": u, "database": db.name} for n, q, u in rows]
        finally:
            _close_direct(fd, store)
    else:
        api, _ = _api(root, admin, token)
        users = api.call(api.active_url(), "/api/users")["users"]
    if as_json:
        click.echo(json.dumps(users))
        return
    table = Table()
    for col in ("user", "database", "quota", "used"):
        table.add_column(col)
    for u in users:
        table.add_row(u["name"], u["database"], str(u["quota"] or "unlimited"), str(u["used"]))
    console.print(table)


@user.command("passwd")
@click.argument("name")
@click.option("--password-stdin", is_flag=True)
@_data_opt
@target_options
def user_passwd(name, password_stdin, data, root, admin, token) -> None:
    from mailpair.store import StoreError, hash_password

    pw = _read_password(password_stdin)
    if data is not None:
        fd, store = _direct_store(data)
        try:
            store.database_of(name).commit("account_passwd", name=name, hash=hash_password(pw))
        except StoreError as e:
            _fail(str(e))
        finally:
            _close_direct(fd, store)
    else:
        api, _ = _api(root, admin, token)
        api.call(api.active_url(), f"/api/users/{name}/password", "POST", {"password": pw})
    click.echo(f"password of {name} changed")


@user.command("del")
@click.argument("name")
@click.option("--yes", is_flag=True, help="do not ask")
@_data_opt
@target_options
def user_del(name, yes, data, root, admin, token) -> None:
    from mailpair.store import StoreError

    if not yes:
        click.confirm(f"Delete {name} and all its mail?", abort=True)
    if data is not None:
        fd, store = _direct_store(data)
        try:
            store.database_of(name).commit("account_del", name=name)
        except StoreError as e:
            _fail(str(e))
        finally:
            _close_direct(fd, store)
    else:
        api, _ = _api(root, admin, token)
        api.call(api.active_url(), f"/api/users/{name}", "DELETE")
    click.echo(f"deleted {name}")


# ---------------------------------------------------------------------------- databases
@main.group()
def db() -> None:
    """Databases: create, list, digest."""


@db.command("create")
@click.argument("name")
@_data_opt
@target_options
def db_create(name, data, root, admin, token) -> None:
    from mailpair.store import StoreError

    if data is not None:
        fd, store = _direct_store(data)
        try:
            store.create_database(name)
        except (StoreError, ValueError) as e:
            _fail(str(e))
        finally:
            _close_direct(fd, store)
    else:
        api, _ = _api(root, admin, token)
        api.call(api.active_url(), "/api/databases", "POST", {"name": name})
    click.echo(f"created database {name}")


@db.command("list")
@click.option("--json", "as_json", is_flag=True)
@_data_opt
@target_options
def db_list(as_json, data, root, admin, token) -> None:
    if data is not None:
        from mailpair.store.digest import digest_node

        dbs = [
            {"name": d["name"], "applied_lsn": d["applied_lsn"], "messages": d["messages"]}
            for d in digest_node(data)["databases"]
        ]
    else:
        api, _ = _api(root, admin, token)
        dbs = api.call(api.active_url(), "/api/databases")["databases"]
    if as_json:
        click.echo(json.dumps(dbs))
        return
    for d in dbs:
        click.echo(f"{d['name']}\tapplied LSN {d['applied_lsn']}")


@db.command("rebuild")
@click.argument("name")
@click.option("--data", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True)
def db_rebuild(name: str, data: Path) -> None:
    """Rebuild a damaged state file by replaying the whole log (the old file is kept aside)."""
    from mailpair.datadir import DataDirLocked, lock_data_dir
    from mailpair.store.rebuild import RebuildError, rebuild_state

    try:
        fd = lock_data_dir(data)
    except DataDirLocked as e:
        _fail(f"{e}; stop the node first")
    try:
        kept, applied = rebuild_state(data / "databases" / name)
    except RebuildError as e:
        _fail(str(e))
    finally:
        import os

        os.close(fd)
    click.echo(f"rebuilt {name} up to LSN {applied}; the damaged state file is kept as {kept.name}")


@db.command("digest")
@click.argument("data", type=click.Path(exists=True, file_okay=False, path_type=Path))
def db_digest(data: Path) -> None:
    """Digest of each database's content in a node's data directory (equal on identical copies)."""
    from mailpair.store.digest import digest_node

    click.echo(json.dumps(digest_node(data)))


# ---------------------------------------------------------------------------- verify
@main.command()
@click.argument("target", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True)
def verify(target: Path, as_json: bool) -> None:
    """Check every log segment, record checksum and the state file; exit 0 only when all is sound."""
    from mailpair.store.verify import database_dirs, verify_database

    dirs = database_dirs(target)
    if not dirs:
        _fail(f"{target} is neither a database directory nor a node data directory", 2)
    reports = [verify_database(d) for d in dirs]
    if as_json:
        click.echo(json.dumps([r.as_dict() for r in reports]))
    else:
        for r in reports:
            head = "[green]sound[/]" if r.ok else "[red]DAMAGED[/]"
            console.print(f"database {r.database}: {head}")
            console.print(
                f"  {r.segments} segments, {r.records} records, LSN {r.first_lsn}..{r.last_lsn}, applied LSN {r.applied_lsn}"
            )
            for p in r.problems:
                console.print(f"  [red]problem:[/] {p}")
            if r.first_bad_lsn is not None:
                console.print(f"  first bad LSN: {r.first_bad_lsn}")
            for n in r.notes:
                console.print(f"  note: {n}")
    sys.exit(0 if all(r.ok for r in reports) else 1)
