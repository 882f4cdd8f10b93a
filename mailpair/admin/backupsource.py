"""Which node's data directory a backup reads: the passive's by default, the active's only when
asked (`--from-active`), or a stopped node's (`--data`).

Rules this module keeps: a backup never silently runs on the active node (its users would feel
it); a copy that is not whole (seeding, failed) is not backed up; the node's role comes from its
own admin API, its data directory from the pair's configuration, since a backup reads the
database files beside the running node (read-only: a snapshot and the log's segments).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import click

from mailpair.admin import pair as pairmod
from mailpair.admin.target import Target, connect
from mailpair.config import NodeConfig
from mailpair.datadir import read_state

UNSOUND_COPY = {"Seeding", "Initializing", "Failed", "Resynchronizing"}


@dataclass(frozen=True)
class Source:
    node: str
    role: str | None
    data: Path
    databases: list[Path]  # DATA/databases/NAME of each database to back up
    data_dirs: list[Path]  # every node's data directory this host reaches (for the backup pin)


def _databases(data: Path, only: str | None) -> list[Path]:
    root = data / "databases"
    dbs = sorted(p for p in root.iterdir() if (p / "id").exists()) if root.is_dir() else []
    if only is not None:
        dbs = [p for p in dbs if p.name == only]
        if not dbs:
            raise click.ClickException(f"no database {only} in {data}")
    if not dbs:
        raise click.ClickException(f"{data} holds no database")
    return dbs


def find_source(target: Target, from_active: bool, database: str | None) -> Source:
    if target.data is not None:
        data = target.data
        try:
            name = NodeConfig.load(data / "node.json").name
        except (OSError, ValueError):
            name = data.name
        state = read_state(data) or {}
        role = state.get("role")
        if role == "active" and not from_active:
            raise click.ClickException(f"node {name} is the active node; back up its passive, or give --from-active")
        return Source(name, role, data, _databases(data, database), [data])
    if target.root is None:
        raise click.ClickException(
            "a backup reads the node's data directory: give --dir DIR (a pair on this host) or --data DATA"
        )
    api = connect(target)
    try:
        pair = pairmod.load_pair(target.root.resolve())
    except pairmod.PairError as e:
        raise click.ClickException(str(e)) from None
    data_of = {cfg.name: Path(cfg.data) for _, cfg in pairmod.node_configs(pair)}
    statuses = [s for s in api.statuses() if s["reachable"]]
    role = "active" if from_active else "passive"
    st = next((s for s in statuses if s.get("role") == role), None)
    if st is None:
        if from_active:
            raise click.ClickException("no active node is reachable")
        raise click.ClickException(
            "no passive node is reachable; --from-active backs up the active node (its users will feel it)"
        )
    name = st["name"]
    dbs = _databases(data_of[name], database)
    if role == "passive":
        copies = {d["name"]: d.get("copies", []) for d in st.get("databases", [])}
        for db in dbs:
            states = [c.get("status") for c in copies.get(db.name, [])]
            if any(s in UNSOUND_COPY for s in states):
                raise click.ClickException(f"the copy of {db.name} on {name} is {states[0]}, not whole; wait until it is Healthy")
    return Source(name, role, data_of[name], dbs, list(data_of.values()))
