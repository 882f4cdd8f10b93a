"""The `mailpair status` table: the merged status of a pair (mailpair.api.pairview) as rich rows.

Rules this module keeps: rows are built from data alone (status_rows is pure but for the clock
behind "ago"); an 80-column terminal gets a compact table with the columns an admin needs first,
whole, rather than every cell cut to an ellipsis; long names and reasons fold onto more lines.
"""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console, Group
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

# Status columns: (key, heading in the full table, heading in the compact one or None to leave
# it out).
STATUS_COLUMNS = (
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
_COLORS = {"Healthy": "green", "Mounted": "green", "Failed": "red", "Disconnected": "red"}


def ago(ts: float | None) -> str:
    if not ts:
        return "-"
    age = max(0.0, time.time() - ts)
    return f"{age:.1f}s ago" if age < 120 else time.strftime("%H:%M:%S", time.localtime(ts))


def age(ts: float | None) -> str:
    """How long ago, in the two largest units (a backup's age)."""
    if not ts:
        return "-"
    s = int(max(0.0, time.time() - ts))
    d, h, m = s // 86400, s // 3600 % 24, s // 60 % 60
    return f"{d}d {h}h" if d else f"{h}h {m}m" if h else f"{m}m {s % 60}s" if m else f"{s}s"


def status_rows(st: dict[str, Any]) -> list[dict[str, str]]:
    """One row per copy of each database, then one per unreachable node."""
    roles = {n["name"]: n["role"] for n in st["nodes"]}
    rows = []
    for d in st["databases"]:
        for c in d["copies"]:
            color = _COLORS.get(c["status"], "yellow")
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
                    "last_stored": ago(c.get("last_stored_time")),
                    "last_replayed": ago(c.get("last_replayed_time")),
                    "lag": "-" if lag is None else f"{lag * 1000:.0f} ms",
                    "backup": age(d["last_backup"].get("finished_ts")) if d.get("last_backup") else "no backup",
                    "reason": c.get("reason") or "",
                }
            )
    for n in st["nodes"]:
        if not n["reachable"]:
            rows.append({"database": "-", "node": n["name"], "role": "-", "status": "[red]unreachable[/]", "reason": n["url"]})
    return rows


def status_table(console: Console, st: dict[str, Any], width: int | None = None) -> Group:
    """The full table, or the compact one when the full one is wider than `width`; the witness
    line goes under it as text that wraps (a caption would be cut to the table's width)."""
    w = st.get("witness") or {}
    witness = f"witness {w.get('path', 'none')}" + (f" (active {w['active']})" if w.get("active") else "")
    if w.get("error"):
        witness += f" [red]{w['error']}[/]"
    rows = status_rows(st)

    def build(compact: bool) -> Table:
        cols = [(key, short if compact else full) for key, full, short in STATUS_COLUMNS if not compact or short]
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
