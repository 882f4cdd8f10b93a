"""The etcd witness: the witness state as one etcd key, changed only by a revision-compared txn.

Spoken over etcd's v3 JSON gateway (POST /v3/kv/range, /v3/kv/txn) with aiohttp, the HTTP
client the project already pins, so no gRPC stack is needed.

Rules this module keeps:
- The key has NO etcd lease. A leased key vanishes when the lease expires, and with it the epoch
  and the reservations a new active must respect; and a Put does not refresh a lease anyway. The
  lease is timed by observation, as for the directory (witness.py, decide.py).
- A write is a txn `mod_revision(key) == seen` then put, else nothing: of two writers from one
  revision exactly one wins. A missing key has mod_revision 0, so the first write compares with 0.
- The token is the key's mod_revision. A write's token is the txn's header revision.
- Reads are linearizable (etcd's default), so a read after a write sees it.
- A timeout or a lost reply is resolved by Witness.compare_and_swap: read back, match the nonce.
- Several endpoints may be given; each call tries them in turn within the one timeout.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from typing import Any

import aiohttp

from .witness import Token, Witness, WitnessError, WitnessState

DEFAULT_KEY = "/mailpair/witness"


def _b64(data: bytes | str) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


class EtcdWitness(Witness):
    def __init__(self, endpoints: Sequence[str] | str, key: str = DEFAULT_KEY, timeout: float = 2.0) -> None:
        super().__init__(timeout)
        if isinstance(endpoints, str):
            endpoints = [e for e in endpoints.split(",") if e]
        if not endpoints:
            raise ValueError("the etcd witness needs at least one endpoint (http://host:2379)")
        self.endpoints = [e.rstrip("/") for e in endpoints]
        self.key = key
        self._session: aiohttp.ClientSession | None = None

    def describe(self) -> str:
        return f"etcd {','.join(self.endpoints)} key {self.key}"

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        errors = []
        for endpoint in self.endpoints:
            try:
                async with self._session.post(endpoint + path, data=json.dumps(body)) as resp:
                    text = await resp.text()
                    if resp.status != 200:
                        errors.append(f"{endpoint}: HTTP {resp.status} {text[:200]}")
                        continue
                    return json.loads(text)
            except (aiohttp.ClientError, ValueError, OSError) as exc:
                errors.append(f"{endpoint}: {exc or type(exc).__name__}")
        raise WitnessError("etcd witness unreachable: " + "; ".join(errors))

    async def _read(self) -> tuple[WitnessState | None, Token]:
        reply = await self._post("/v3/kv/range", {"key": _b64(self.key)})
        kvs = reply.get("kvs") or []
        if not kvs:
            return None, Token(0)
        kv = kvs[0]
        try:
            value = base64.b64decode(kv.get("value", ""))
            revision = int(kv["mod_revision"])
        except (KeyError, ValueError) as exc:
            raise WitnessError(f"etcd answered a range without a usable value: {exc}") from exc
        return WitnessState.from_json(value), Token(revision)

    async def _cas(self, expected: Token, new: WitnessState) -> Token | None:
        key = _b64(self.key)
        body = {
            "compare": [{"key": key, "target": "MOD", "result": "EQUAL", "mod_revision": str(expected.value)}],
            # No "lease" field: the key must outlive any holder (module docstring).
            "success": [{"request_put": {"key": key, "value": _b64(new.to_json())}}],
        }
        reply = await self._post("/v3/kv/txn", body)
        # The gateway leaves out false and zero fields: no "succeeded" means the compare failed.
        if not reply.get("succeeded", False):
            return None
        try:
            return Token(int(reply["header"]["revision"]))
        except (KeyError, ValueError) as exc:
            raise WitnessError(f"etcd txn succeeded without a revision: {exc}") from exc
