"""The JSON client for a node's admin API: the CLI, `pair up`, the benchmarks and the tests call
the API through here, with the admin token as `Authorization: Bearer TOKEN`.

Rules this module keeps: blocking (urllib), for tools and tests, never the node's event loop; an
answer with an HTTP error status is an ApiError carrying the API's own message (its JSON "error");
a node that cannot be reached raises OSError (urllib's URLError is one), for the caller to decide.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any


class ApiError(Exception):
    """The API answered with an error status."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def request(
    url: str, token: str | None = None, method: str = "GET", body: Any = None, timeout: float = 10.0
) -> tuple[int, bytes]:
    """(HTTP status, body) of one call, whatever the status. body is sent as JSON if given."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        with e:
            return e.code, e.read()


def call(url: str, token: str | None = None, method: str = "GET", body: Any = None, timeout: float = 10.0) -> Any:
    """The decoded JSON answer of one call; ApiError when the status is an error."""
    status, raw = request(url, token, method, body, timeout)
    if status >= 400:
        try:
            message = json.loads(raw).get("error") or f"HTTP {status}"
        except (ValueError, AttributeError):
            message = f"HTTP Error {status}: {raw[:200].decode(errors='replace')}"
        raise ApiError(status, message)
    return json.loads(raw)
