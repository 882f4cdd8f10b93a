"""`pair up` / `pair down`: a local pair of node processes plus a witness directory on loopback.

DIR/pair.json remembers what was set up (ports, secret, token, accounts), so `pair up` on the same
DIR starts the same pair again with its data, and `pair down` stops exactly the processes that
were started there (it checks each pid's command line before signalling it).
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Any

from mailpair.api import client as api_client
from mailpair.api.client import ApiError
from mailpair.cluster.membership import PairConfigError, check_members
from mailpair.config import Listen, NodeConfig
from mailpair.datadir import START_FAILURE, read_state
from mailpair.durable import write_json
from mailpair.ports import free_port
from mailpair.replication.tls import issue_node_certificate
from mailpair.store import NodeStore, hash_password, prepare_message

DOMAIN = "example.test"
NODE_NAMES = ("node1", "node2")
# A node's log of each earlier run is kept as node.log.1 (the last) .. node.log.N (the oldest), so
# the run before a crash can be read after a restart or two; older ones are removed.
KEPT_LOGS = 5


class PairError(Exception):
    pass


def sample_messages(user: str, domain: str) -> list[bytes]:
    """A few messages a new user can look at: plain text, and one with an attachment."""
    out = []
    now = time.time()
    texts = [
        ("Welcome to mailpair", "This mailbox lives on an active/passive pair.\nEvery change is logged, shipped and replayed."),
        ("How replication works", "The passive node pulls the active's log, inspects each record and replays it."),
    ]
    for i, (subject, body) in enumerate(texts):
        m = EmailMessage()
        m["From"] = f"Postmaster <postmaster@{domain}>"
        m["To"] = f"{user}@{domain}"
        m["Subject"] = subject
        m["Date"] = format_datetime(_dt(now - 3600 * (len(texts) - i)))
        m["Message-ID"] = make_msgid(domain=domain)
        m.set_content(body)
        out.append(bytes(m))
    m = EmailMessage()
    m["From"] = f"Reports <reports@{domain}>"
    m["To"] = f"{user}@{domain}"
    m["Subject"] = "Monthly report (with attachment)"
    m["Date"] = format_datetime(_dt(now))
    m["Message-ID"] = make_msgid(domain=domain)
    m.set_content("The report is attached.")
    m.add_attachment(b"month,messages\n2026-10,1200\n2026-11,1350\n", maintype="text", subtype="csv", filename="report.csv")
    out.append(bytes(m))
    return [raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n") for raw in out]


def _dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=UTC)


def _pid_alive(pid: int, config_path: Path) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return str(config_path).encode() in cmdline


def node_configs(pair: dict[str, Any]) -> list[tuple[Path, NodeConfig]]:
    """(config path, config) of each node of the pair, in pair.json's order."""
    root = Path(pair["dir"])
    return [(root / n / "node.json", NodeConfig.load(root / n / "node.json")) for n in pair["node_names"]]


def admin_urls(pair: dict[str, Any]) -> list[str]:
    """The admin API URL of each node of the pair."""
    return [f"http://{cfg.admin.host}:{cfg.admin.port}" for _, cfg in node_configs(pair)]


def create_pair(root: Path, users: int, password: str, mode: str) -> dict[str, Any]:
    root.mkdir(parents=True, exist_ok=True)
    witness = root / "witness"
    witness.mkdir(exist_ok=True)
    secret = secrets.token_hex(16)
    token = secrets.token_hex(16)
    node_names = list(NODE_NAMES)
    ports = {n: {k: free_port() for k in ("imap", "imaps", "lmtp", "smtp", "admin", "replication")} for n in NODE_NAMES}
    for i, name in enumerate(node_names):
        peer = NODE_NAMES[1 - i]
        data = root / name
        data.mkdir(exist_ok=True)
        cfg = NodeConfig(
            name=name,
            data=str(data.resolve()),
            role="active" if i == 0 else "passive",
            domain=DOMAIN,
            imap=Listen(port=ports[name]["imap"]),
            imaps=Listen(port=ports[name]["imaps"]),
            lmtp=Listen(port=ports[name]["lmtp"]),
            smtp=Listen(port=ports[name]["smtp"]),
            admin=Listen(port=ports[name]["admin"]),
            replication=Listen(port=ports[name]["replication"]),
            peer_name=peer,
            peer_replication=Listen(port=ports[peer]["replication"]),
            peer_admin=Listen(port=ports[peer]["admin"]),
            witness=str(witness.resolve()),
            secret=secret,
            admin_token=token,
            mode=mode,
        )
        cfg.save(data / "node.json")
    make_certificates(root, node_names)
    accounts = [{"name": f"user{k}", "password": password} for k in range(1, users + 1)]
    store = NodeStore(root / NODE_NAMES[0]).open()
    try:
        db = store.default_database()
        # A hash (and salt) of its own for each account, though they share the password: with one
        # for all, anyone who reads the hashes sees they are equal, and one cracked is all cracked.
        # scrypt runs outside the GIL, so a few threads make many accounts quicker.
        with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
            hashes = list(pool.map(lambda _acct: hash_password(password), accounts))
        for acct, hashed in zip(accounts, hashes, strict=True):
            db.commit("account_add", name=acct["name"], hash=hashed, quota=0)
            for raw in sample_messages(acct["name"], DOMAIN):
                db.commit("deliver", recipients=[(acct["name"], None)], date=time.time_ns() // 1000, **prepare_message(raw))
    finally:
        store.close()
    write_json(witness / "epoch.json", {"epoch": 1, "active": NODE_NAMES[0]})
    pair = {
        "dir": str(root.resolve()),
        "witness": str(witness.resolve()),
        "domain": DOMAIN,
        "node_names": node_names,
        "users": accounts,
        "admin_token": token,
        "mode": mode,
    }
    write_json(root / "pair.json", pair, indent=2)  # 0600: it holds the admin token
    return pair


def make_certificates(root: Path, node_names: list[str]) -> None:
    """The pair's replication authority in DIR/ca and each node's certificate in DATA/tls, for
    the nodes that use the default files; kept when they exist (a pair made before them gets them
    at its next `pair up`)."""
    for name in node_names:
        cfg = NodeConfig.load(root / name / "node.json")
        if cfg.replication_transport == "tls" and not (cfg.replication_cert or cfg.replication_key or cfg.replication_ca):
            issue_node_certificate(root / "ca", Path(cfg.data) / "tls", name)


def load_pair(root: Path) -> dict[str, Any]:
    try:
        pair = json.loads((root / "pair.json").read_text())
    except FileNotFoundError:
        raise PairError(f"{root} holds no pair (no pair.json); run `mailpair pair up --dir {root}` first") from None
    except ValueError as e:
        raise PairError(f"{root / 'pair.json'} is not valid JSON: {e}") from None
    try:
        check_members(pair.get("node_names", []), pair.get("witness"))
    except PairConfigError as e:
        raise PairError(f"{root / 'pair.json'}: {e}") from None
    return pair


def rotate_logs(log: Path, keep: int) -> None:
    """log -> log.1 -> log.2 ... -> log.<keep>; what would become log.<keep+1> is removed."""
    if not log.exists():
        return
    log.with_name(f"{log.name}.{keep}").unlink(missing_ok=True)
    for k in range(keep - 1, 0, -1):
        older = log.with_name(f"{log.name}.{k}")
        if older.exists():
            os.replace(older, log.with_name(f"{log.name}.{k + 1}"))
    os.replace(log, log.with_name(f"{log.name}.1"))


def start_node(config_path: Path, cfg: NodeConfig) -> int:
    state = read_state(Path(cfg.data))
    if state and _pid_alive(state["pid"], config_path):
        return state["pid"]
    log = Path(cfg.data) / "node.log"
    rotate_logs(log, KEPT_LOGS)  # this run's errors are read alone, earlier runs' kept beside
    logf = open(log, "ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mailpair", "node", "run", "--config", str(config_path)],
        stdout=logf,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        close_fds=True,
    )
    return proc.pid


def wait_ready(pair: dict[str, Any], timeout: float = 90.0, want_healthy: bool = True) -> None:
    """Wait until every node answers /health and, for a pair, every copy is Healthy."""
    deadline = time.monotonic() + timeout
    last_problem = "nodes not started"
    while time.monotonic() < deadline:
        try:
            statuses = [api_client.call(url + "/api/status", pair["admin_token"], timeout=2.0) for url in admin_urls(pair)]
            passive = [s for s in statuses if s["role"] == "passive"]
            if not want_healthy or not passive:
                return
            copies = [c for s in passive for d in s["databases"] for c in d["copies"]]
            active_dbs = {d["name"] for s in statuses if s["role"] == "active" for d in s["databases"]}
            have = {d["name"] for s in passive for d in s["databases"]}
            if copies and active_dbs <= have and all(c["status"] == "Healthy" for c in copies):
                return
            last_problem = "copies: " + ", ".join(f"{c['node']}={c['status']}" for c in copies)
        except (ApiError, OSError, ValueError, KeyError) as e:
            last_problem = str(e)
        for _path, cfg in node_configs(pair):
            log = Path(cfg.data) / "node.log"
            state = read_state(Path(cfg.data))
            tail = log.read_bytes()[-4000:] if state is None and log.exists() else b""
            marker = START_FAILURE.encode()
            if marker in tail:
                why = tail.rsplit(marker, 1)[1].split(b"\n", 1)[0].decode(errors="replace").rstrip('"}')
                raise PairError(f"{cfg.name} {START_FAILURE}{why}")
            if b"Traceback" in tail:
                raise PairError(f"{cfg.name} failed to start; see {log}")
        time.sleep(0.2)
    raise PairError(f"pair not ready after {timeout:.0f}s: {last_problem}")


def pair_up(root: Path, users: int = 3, password: str = "mailpair", mode: str = "async") -> dict[str, Any]:
    root = root.resolve()
    pair = load_pair(root) if (root / "pair.json").exists() else create_pair(root, users, password, mode)
    make_certificates(Path(pair["dir"]), pair["node_names"])
    for path, cfg in node_configs(pair):
        start_node(path, cfg)
    wait_ready(pair)
    return describe(pair)


def describe(pair: dict[str, Any]) -> dict[str, Any]:
    nodes = []
    for path, cfg in node_configs(pair):
        state = read_state(Path(cfg.data)) or {}
        role = state.get("role", cfg.role)
        nodes.append(
            {
                "name": cfg.name,
                "pid": state.get("pid"),
                "role": role,
                "data": cfg.data,
                "config": str(path),
                "imap": cfg.imap.port,
                "imaps": cfg.imaps.port if cfg.imaps else None,
                "lmtp": cfg.lmtp.port,
                "smtp": cfg.smtp.port,
                "admin": cfg.admin.port,
                "host": cfg.imap.host,
            }
        )
    return {
        "dir": pair["dir"],
        "witness": pair["witness"],
        "domain": pair["domain"],
        "nodes": nodes,
        "users": pair["users"],
        "admin_token": pair["admin_token"],
    }


def pair_down(root: Path, timeout: float = 20.0) -> list[str]:
    pair = load_pair(root.resolve())
    stopped = []
    waiting = []
    for path, cfg in node_configs(pair):
        state = read_state(Path(cfg.data))
        if state and _pid_alive(state["pid"], path):
            os.kill(state["pid"], signal.SIGTERM)
            waiting.append((cfg.name, state["pid"], path))
    deadline = time.monotonic() + timeout
    for name, pid, path in waiting:
        while _pid_alive(pid, path) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _pid_alive(pid, path):
            os.kill(pid, signal.SIGKILL)
        stopped.append(name)
    return stopped
