"""Structured logs: one JSON object a line with the node and the record's context."""

from __future__ import annotations

import json
import logging

from mailpair.logs import JsonFormatter


def test_json_log_line_carries_node_database_epoch_lsn():
    rec = logging.LogRecord("mailpair.replication", logging.WARNING, __file__, 1, "copy %s failed", ("mail",), None)
    rec.database, rec.epoch, rec.lsn = "mail", 3, 1234
    line = JsonFormatter("node2").format(rec)
    assert "\n" not in line
    out = json.loads(line)
    assert out["node"] == "node2" and out["level"] == "warning" and out["message"] == "copy mail failed"
    assert (out["database"], out["epoch"], out["lsn"]) == ("mail", 3, 1234)
