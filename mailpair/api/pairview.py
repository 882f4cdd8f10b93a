"""The pair's status as one picture, merged from each node's own view.

Pure code: given what each node answered at /api/status (or that it did not answer), build the
contract's shape (../shared/DESIGN.md, `status --json`). The CLI and the dashboard both use it.
"""

from __future__ import annotations

from typing import Any

COPY_KEYS = ("copy_queue", "replay_queue", "stored_lsn", "replayed_lsn")


def merge_statuses(statuses: list[dict[str, Any]]) -> dict[str, Any]:
    """statuses: one dict per node, {"url", "reachable", ...its /api/status fields}."""
    reachable = [s for s in statuses if s["reachable"]]
    epoch = max((s.get("epoch", 0) for s in reachable), default=0)
    nodes = [
        {"name": s.get("name", s["url"]), "role": s.get("role"), "reachable": s["reachable"], "url": s["url"]} for s in statuses
    ]
    dbs: dict[str, dict[str, Any]] = {}
    for s in reachable:
        for d in s["databases"]:
            entry = dbs.setdefault(d["name"], {"name": d["name"], "copies": [], "last_backup": None})
            backup = d.get("last_backup")  # the newest either node was told of (backup/pin.py)
            if backup and backup.get("finished_ts", 0) > ((entry["last_backup"] or {}).get("finished_ts") or 0):
                entry["last_backup"] = backup
            for c in d["copies"]:
                # A node's report of its own copy is the authority; another node's view of it
                # fills in only while that node cannot be reached.
                own = c["node"] == s.get("name")
                existing = next((x for x in entry["copies"] if x["node"] == c["node"]), None)
                if existing is None:
                    entry["copies"].append({**c, "_own": own})
                elif own and not existing["_own"]:
                    entry["copies"][entry["copies"].index(existing)] = {**c, "_own": True}
    for entry in dbs.values():
        for c in entry["copies"]:
            c.pop("_own", None)
            for key in COPY_KEYS:
                c.setdefault(key, None)
        entry["copies"].sort(key=lambda c: c["node"])
    witness = next((s.get("witness") for s in reachable if s.get("witness")), None)
    return {
        "epoch": epoch,
        "witness": witness,
        "nodes": nodes,
        "databases": sorted(dbs.values(), key=lambda d: d["name"]),
    }
