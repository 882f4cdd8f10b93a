"""The `mailpair` command line (click + rich).

Commands that change a running node go through its admin API; commands on a stopped node's data
directory open the store directly, guarded by the data directory's lock, so the CLI and a node
never write the same database at once.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sqlite3
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.live import Live
from rich.table import Table

from mailpair.admin import pair as pairmod
from mailpair.admin.backupsource import find_source
from mailpair.admin.statustable import status_table
from mailpair.admin.target import Api, Target, connect, fail, on_node
from mailpair.api.pairview import merge_statuses
from mailpair.backup import catalog as backup_catalog
from mailpair.backup.export import ExportError, export_account
from mailpair.backup.manifest import Kind as BackupKind
from mailpair.backup.manifest import parse_time as parse_backup_time
from mailpair.backup.pin import pin_backed_up, unpin
from mailpair.backup.restore import RestoreError, restore_all, trial_restore
from mailpair.backup.take import BackupError, take_backup
from mailpair.backup.target import TargetError, open_target
from mailpair.datadir import START_FAILURE, DataDirLocked, lock_data_dir
from mailpair.filemodes import private_umask
from mailpair.store import NodeStore, StoreError, hash_password, names
from mailpair.store.accounts import list_accounts
from mailpair.store.apply import ReplayError
from mailpair.store.digest import digest_node
from mailpair.store.log import LogError
from mailpair.store.rebuild import RebuildError, rebuild_state
from mailpair.store.verify import database_dirs, verify_database

console = Console()


def _read_password(password_stdin: bool) -> str:
    if password_stdin:
        pw = sys.stdin.readline().rstrip("\n")
    else:
        pw = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    if not pw:
        fail("password is empty")
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
    # Imported here, not at the top: the node brings the protocols, replication and aiohttp,
    # which every other command (status, user add, ...) would otherwise load for nothing.
    from mailpair.node import main as node_main

    try:
        node_main(config_path.resolve())
    except (DataDirLocked, StoreError, LogError, ReplayError) as e:
        # One clear line in the node's log (pair up shows it), not a traceback.
        logging.getLogger("mailpair.node").error("%s%s", START_FAILURE, e)
        fail(str(e))


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
        fail(str(e))
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
        fail(str(e))
    click.echo("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))


# ---------------------------------------------------------------------------- target options
_target = [
    click.option("--dir", "root", type=click.Path(file_okay=False, path_type=Path), help="a pair started by `pair up`"),
    click.option("--admin", multiple=True, help="admin API URL of a node (repeat for both)"),
    click.option("--token", envvar="MAILPAIR_TOKEN", help="admin token"),
]
_data_opt = click.option("--data", type=click.Path(file_okay=False, path_type=Path), help="a stopped node's data directory")


def target_options(with_data: bool = False) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The options naming what a command acts on (--dir, or --admin and --token; with_data:
    also --data), handed to the command as one `target` argument."""

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def run(*args: Any, root: Path | None, admin: tuple[str, ...], token: str | None, **kwargs: Any) -> Any:
            target = Target(root, admin, token, kwargs.pop("data", None))
            return fn(*args, target=target, **kwargs)

        for opt in reversed([*_target, _data_opt] if with_data else _target):
            run = opt(run)
        return run

    return decorate


def merged_status(api: Api) -> dict[str, Any]:
    """The contract's status shape, merged from every node's own view."""
    return merge_statuses(api.statuses())


def _print_status(st: dict[str, Any]) -> None:
    console.print(status_table(console, st, console.width))


@main.command()
@target_options()
@click.option("--json", "as_json", is_flag=True)
@click.option("--watch", is_flag=True, help="refresh every second until interrupted")
def status(target: Target, as_json: bool, watch: bool) -> None:
    """Copy status of every database on the pair."""
    api = connect(target)
    if as_json:
        click.echo(json.dumps(merged_status(api)))
        return
    if not watch:
        _print_status(merged_status(api))
        return
    with Live(status_table(console, merged_status(api), console.width), console=console, refresh_per_second=2) as live:
        try:
            while True:
                time.sleep(1)
                live.update(status_table(console, merged_status(api), console.width))
        except KeyboardInterrupt:
            pass


# ---------------------------------------------------------------------------- copies
@main.group()
def copy() -> None:
    """Copy status and actions on the passive copy of a database."""


@copy.command("status")
@target_options()
@click.option("--json", "as_json", is_flag=True)
def copy_status(target: Target, as_json) -> None:
    st = merged_status(connect(target))
    if as_json:
        click.echo(json.dumps(st["databases"]))
    else:
        _print_status(st)


def _copy_action(action: str):
    @copy.command(action)
    @click.argument("database")
    @target_options()
    def cmd(database: str, target: Target) -> None:
        api = connect(target)
        passive = api.status_of("passive")
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


@user.command("add")
@click.argument("name")
@click.option("--quota", default=0, type=click.IntRange(0), help="bytes, 0 for unlimited")
@click.option("--password-stdin", is_flag=True, help="read the password from standard input")
@target_options(with_data=True)
def user_add(name, quota, password_stdin, target: Target) -> None:
    try:
        names.check_user(name)
    except ValueError as e:
        fail(str(e))
    pw = _read_password(password_stdin)
    on_node(
        target,
        lambda store: store.default_database().commit("account_add", name=name, hash=hash_password(pw), quota=quota),
        "/api/users",
        "POST",
        {"name": name, "password": pw, "quota": quota},
    )
    click.echo(f"added {name}")


def _users_of(store: NodeStore) -> dict[str, Any]:
    users = []
    for db in store.databases.values():
        users += [{"name": n, "quota": q, "used": u, "database": db.name} for n, q, u in db.read_sync(list_accounts)]
    return {"users": users}


@user.command("list")
@click.option("--json", "as_json", is_flag=True)
@target_options(with_data=True)
def user_list(as_json, target: Target) -> None:
    users = on_node(target, _users_of, "/api/users")["users"]
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
@target_options(with_data=True)
def user_passwd(name, password_stdin, target: Target) -> None:
    pw = _read_password(password_stdin)
    on_node(
        target,
        lambda store: store.database_of(name).commit("account_passwd", name=name, hash=hash_password(pw)),
        f"/api/users/{name}/password",
        "POST",
        {"password": pw},
    )
    click.echo(f"password of {name} changed")


@user.command("del")
@click.argument("name")
@click.option("--yes", is_flag=True, help="do not ask")
@target_options(with_data=True)
def user_del(name, yes, target: Target) -> None:
    if not yes:
        click.confirm(f"Delete {name} and all its mail?", abort=True)
    on_node(
        target,
        lambda store: store.database_of(name).commit("account_del", name=name),
        f"/api/users/{name}",
        "DELETE",
    )
    click.echo(f"deleted {name}")


# ---------------------------------------------------------------------------- databases
@main.group()
def db() -> None:
    """Databases: create, list, digest."""


@db.command("create")
@click.argument("name")
@target_options(with_data=True)
def db_create(name, target: Target) -> None:
    on_node(target, lambda store: store.create_database(name), "/api/databases", "POST", {"name": name})
    click.echo(f"created database {name}")


@db.command("list")
@click.option("--json", "as_json", is_flag=True)
@target_options(with_data=True)
def db_list(as_json, target: Target) -> None:
    if target.data is not None:
        dbs = [
            {"name": d["name"], "applied_lsn": d["applied_lsn"], "messages": d["messages"]}
            for d in digest_node(target.data)["databases"]
        ]
    else:
        api = connect(target)
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
    try:
        fd = lock_data_dir(data)
    except DataDirLocked as e:
        fail(f"{e}; stop the node first")
    try:
        kept, applied = rebuild_state(data / "databases" / name)
    except RebuildError as e:
        fail(str(e))
    finally:
        os.close(fd)
    click.echo(f"rebuilt {name} up to LSN {applied}; the damaged state file is kept as {kept.name}")


@db.command("digest")
@click.argument("data", type=click.Path(exists=True, file_okay=False, path_type=Path))
def db_digest(data: Path) -> None:
    """Digest of each database's content in a node's data directory (equal on identical copies)."""
    click.echo(json.dumps(digest_node(data)))


# ---------------------------------------------------------------------------- verify
@main.command()
@click.argument("target", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True)
def verify(target: Path, as_json: bool) -> None:
    """Check every log segment, record checksum and the state file; exit 0 only when all is sound."""
    dirs = database_dirs(target)
    if not dirs:
        fail(f"{target} is neither a database directory nor a node data directory", 2)
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


# ---------------------------------------------------------------------------- backup and restore
@main.group()
def backup() -> None:
    """Back up databases (from the passive node), list, verify and prune backups."""


def _prune_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = click.option("--keep-days", type=click.FloatRange(0), help="keep every backup of the last D days (and what it needs)")(
        fn
    )
    return click.option("--keep-full", type=click.IntRange(0), help="keep the newest N full backups and what builds on them")(fn)


def _prune(to: str, database: str | None, keep_full: int | None, keep_days: float | None) -> list[str]:
    if keep_full is None and keep_days is None:
        return []
    tgt = open_target(to)
    return [
        gone
        for db in ([database] if database else tgt.databases())
        for gone in backup_catalog.prune(tgt, db, keep_full, keep_days)
    ]


_BACKUP_HELP = {
    BackupKind.FULL: "A full backup: a consistent snapshot of each database plus the log after it.",
    BackupKind.INCREMENTAL: "An incremental backup: the log since the last backup of any kind.",
    BackupKind.DIFFERENTIAL: "A differential backup: the log since the last full backup.",
}


def _backup_command(kind: BackupKind) -> None:
    @backup.command(kind.value, help=_BACKUP_HELP[kind])
    @target_options(with_data=True)
    @click.option("--to", "to", required=True, help="the backup target (a directory)")
    @click.option("--database", help="back up this database only (default: every database of the node)")
    @click.option("--from-active", is_flag=True, help="back up the active node (its users will feel it)")
    @_prune_options
    @click.option("--json", "as_json", is_flag=True)
    def cmd(target: Target, to: str, database: str | None, from_active: bool, keep_full, keep_days, as_json: bool) -> None:
        src = find_source(target, from_active, database)
        if src.role == "active":
            click.echo(f"note: backing up from the active node {src.node} (--from-active): its users will feel it", err=True)
        tgt = open_target(to)
        for db_dir in src.databases:
            try:
                out = take_backup(db_dir, src.node, kind, tgt)
            except (BackupError, TargetError, StoreError, LogError, OSError, sqlite3.Error) as e:
                fail(f"{kind.value} backup of {db_dir.name} failed: {e}")
            pin_backed_up(src.data_dirs, db_dir.name, out.manifest)
            res = out.as_json()
            if as_json:
                click.echo(json.dumps(res))
            else:
                mb = res["bytes"] / 1e6
                console.print(
                    f"{kind.value} backup [bold]{res['id']}[/] of {db_dir.name} from {src.node}: LSN {res['first_lsn']}..{res['last_lsn']}, "
                    f"{mb:.1f} MB in {res['seconds']:.1f} s ({mb / max(res['seconds'], 1e-6):.1f} MB/s)"
                )
        for gone in _prune(to, database, keep_full, keep_days):
            click.echo(f"pruned {gone}", err=True)


for _kind in BackupKind:
    _backup_command(_kind)


@backup.command("list")
@click.option("--to", "to", required=True, help="the backup target")
@click.option("--json", "as_json", is_flag=True)
def backup_list(to: str, as_json: bool) -> None:
    """The complete backups a target holds, oldest first (interrupted ones are not listed)."""
    tgt = open_target(to)
    rows = [m.summary() for db in tgt.databases() for m in backup_catalog.manifests(tgt, db)]
    if as_json:
        click.echo(json.dumps({"backups": rows}))
        return
    table = Table("id", "database", "kind", "LSNs", "finished", "MB", "node")
    for r in rows:
        table.add_row(
            r["id"],
            r["database"],
            r["kind"],
            f"{r['first_lsn']}..{r['last_lsn']}",
            r["finished"],
            f"{r['bytes'] / 1e6:.1f}",
            r["node"],
        )
    console.print(table)


@backup.command("verify")
@click.option("--to", "to", required=True, help="the backup target")
@click.option("--id", "backup_id", help="check this backup only")
@click.option(
    "--trial/--no-trial",
    default=True,
    show_default=True,
    help="also restore the newest chain into a scratch directory and verify it",
)
@click.option("--json", "as_json", is_flag=True)
def backup_verify(to: str, backup_id: str | None, trial: bool, as_json: bool) -> None:
    """Check every backup's files (size, SHA-256), log records (CRCs, LSN order), snapshot and
    chain, then restore the newest chain of each database into a scratch directory and verify
    that; exit 0 only when every backup is sound."""
    tgt = open_target(to)
    checked, problems = backup_catalog.verify(tgt, backup_id=backup_id)
    if trial and not problems and backup_id is None:
        problems = [p for db in tgt.databases() for p in trial_restore(tgt, db)]
    if as_json:
        click.echo(json.dumps({"checked": checked, "ok": not problems, "problems": problems}))
    else:
        for p in problems:
            click.echo(f"problem: {p}")
        click.echo(f"{checked} backups checked: " + ("sound" if not problems else f"{len(problems)} problems"))
    if checked == 0 and backup_id is not None:
        fail(f"no backup {backup_id} in {to}")
    sys.exit(0 if not problems else 1)


@backup.command("prune")
@click.option("--to", "to", required=True, help="the backup target")
@click.option("--database", help="this database only")
@_prune_options
def backup_prune(to: str, database: str | None, keep_full, keep_days) -> None:
    """Delete backups retention does not keep (never one a kept backup needs)."""
    if keep_full is None and keep_days is None:
        raise click.UsageError("give --keep-full N and/or --keep-days D")
    for gone in _prune(to, database, keep_full, keep_days):
        click.echo(f"deleted {gone}")


@backup.command("unpin")
@target_options(with_data=True)
@click.option("--database", help="this database only")
def backup_unpin(target: Target, database: str | None) -> None:
    """Stop backups holding the log (when backups stop for good): remove the backup pin on every
    node this host reaches. An incremental taken later may find its records truncated and be
    refused: then take a full."""
    if target.data is not None:
        dirs = [target.data]
    elif target.root is not None:
        try:
            dirs = [Path(cfg.data) for _, cfg in pairmod.node_configs(pairmod.load_pair(target.root.resolve()))]
        except pairmod.PairError as e:
            fail(str(e))
    else:
        raise click.UsageError("give --dir DIR (a pair on this host) or --data DATA")
    for path in unpin(dirs, database):
        click.echo(f"removed {path}")


@main.command()
@click.option("--from", "source", required=True, help="the backup target to restore from")
@click.option(
    "--to", "dest", required=True, type=click.Path(file_okay=False, path_type=Path), help="a new recovery data directory"
)
@click.option("--until", help="restore up to this time (ISO 8601, UTC unless it says otherwise)")
@click.option("--lsn", type=click.IntRange(0), help="restore up to this LSN")
@click.option("--database", help="restore this database only")
@click.option("--json", "as_json", is_flag=True)
def restore(source: str, dest: Path, until: str | None, lsn: int | None, database: str | None, as_json: bool) -> None:
    """Rebuild a recovery data directory from a full backup and the later ones, up to a time or LSN."""
    if until is not None and lsn is not None:
        raise click.UsageError("give --until or --lsn, not both")
    try:
        until_s = None if until is None else parse_backup_time(until)
    except ValueError:
        raise click.UsageError(f"--until {until!r} is not an ISO 8601 time") from None
    try:
        done = restore_all(open_target(source), dest, lsn=lsn, until=until_s, database=database)
    except (RestoreError, StoreError, LogError, OSError, sqlite3.Error) as e:
        fail(f"restore failed: {e}")
    for r in done:
        res = r.as_json()
        if as_json:
            click.echo(json.dumps(res))
        else:
            mb = res["bytes"] / 1e6
            console.print(
                f"restored {r.database} to LSN {r.applied_lsn} (last record {r.last_time}) from {len(r.used)} backups, "
                f"{mb:.1f} MB in {res['seconds']:.1f} s ({mb / max(res['seconds'], 1e-6):.1f} MB/s) into {dest}"
            )


@main.command()
@click.option(
    "--from",
    "source",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="a recovery data directory",
)
@click.option("--user", required=True)
@click.option("--folder", help="this folder only (default: every folder of the account)")
@click.option("--export", "dest", required=True, type=click.Path(path_type=Path), help="a new directory to write to")
@click.option("--format", "fmt", type=click.Choice(["mbox", "maildir"]), default="mbox", show_default=True)
@click.option("--json", "as_json", is_flag=True)
def recover(source: Path, user: str, folder: str | None, dest: Path, fmt: str, as_json: bool) -> None:
    """Export an account (or one folder) from a recovery directory as mbox or Maildir."""
    try:
        out = export_account(source, user, dest, fmt, folder)
    except (ExportError, OSError, sqlite3.Error) as e:
        fail(f"export failed: {e}")
    if as_json:
        click.echo(json.dumps({"folders": out.folders, "bytes": out.bytes, "format": fmt, "path": str(dest)}))
    else:
        for name, n in out.folders.items():
            console.print(f"{name}: {n} messages")
        console.print(f"written to {dest} ({fmt}, {out.bytes / 1e6:.1f} MB)")
