"""The admin API and its dashboard against a hostile client or page (issue 17): a non-UTF-8
Authorization header and deeply nested JSON gave 500 with a logged traceback; the dashboard sent
no Content-Security-Policy or X-Frame-Options, kept the token in localStorage for ever, and its
buttons for the passive called the passive's origin, which a browser refuses (no CORS), so they
did nothing. The dashboard is driven in real headless Chromium over the DevTools protocol."""

from __future__ import annotations

import asyncio
import http.client as httpclient
import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import aiohttp
import pytest

from tests.helpers.pair import active, http, pair_down, pair_up


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    root = tmp_path_factory.mktemp("pair")
    info = pair_up(root, users=1)
    yield info
    pair_down(root)


def _raw(port: int, method: str, path: str, headers: dict[str, bytes], body: bytes = b"") -> tuple[int, bytes]:
    conn = httpclient.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.putrequest(method, path)
        for k, v in headers.items():
            conn.putheader(k, v)
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def _log(info, node) -> str:
    return (Path(node["data"]) / "node.log").read_text(errors="replace")


def test_non_utf8_authorization_header_is_400_not_500(pair):
    node = active(pair)
    before = _log(pair, node).count("Traceback")
    status, body = _raw(node["admin"], "GET", "/api/status", {"Authorization": b"Bearer \xff\xfe\xfa"})
    assert status == 400, body
    assert "UTF-8" in json.loads(body)["error"]
    assert _log(pair, node).count("Traceback") == before


def test_deeply_nested_json_is_400_not_500(pair):
    node = active(pair)
    before = _log(pair, node).count("Traceback")
    auth = f"Bearer {pair['admin_token']}".encode()
    for body in (b"[" * 100_000 + b"]" * 100_000, b'{"a":' * 50_000 + b"1" + b"}" * 50_000):
        status, answer = _raw(
            node["admin"], "POST", "/api/users", {"Authorization": auth, "Content-Type": b"application/json"}, body
        )
        assert status == 400, answer
    assert _log(pair, node).count("Traceback") == before


def test_dashboard_forbids_framing_and_foreign_scripts(pair):
    status, _ = http(f"http://127.0.0.1:{active(pair)['admin']}/dashboard")
    assert status == 200
    conn = httpclient.HTTPConnection("127.0.0.1", active(pair)["admin"], timeout=10)
    conn.request("GET", "/dashboard")
    r = conn.getresponse()
    page = r.read().decode()
    conn.close()
    csp = r.getheader("Content-Security-Policy") or ""
    assert r.getheader("X-Frame-Options") == "DENY"
    assert "frame-ancestors 'none'" in csp
    assert re.search(r"script-src 'self'(;|$)", csp) and "unsafe-inline" not in csp
    assert "connect-src 'self'" in csp
    assert "<script>" not in page and "<style>" not in page  # nothing inline for the CSP to allow


# ---------------------------------------------------------------------------- Chromium


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


class Browser:
    """Headless Chromium driven over the DevTools protocol (aiohttp's WebSocket client)."""

    def __init__(self, profile: Path):
        self.proc = subprocess.Popen(
            [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", "--remote-debugging-port=0", "--window-size=1200,800", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        self.port = None
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            m = re.search(r"DevTools listening on ws://127\.0\.0\.1:(\d+)/", line)
            if m:
                self.port = int(m.group(1))
                break
            if not line and self.proc.poll() is not None:
                break
        assert self.port, "chromium did not start its DevTools endpoint"
        self._id = 0

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()

    async def page(self, session: aiohttp.ClientSession):
        async with session.get(f"http://127.0.0.1:{self.port}/json/list") as r:
            targets = await r.json()
        page = next(t for t in targets if t["type"] == "page")
        return await session.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0)

    async def call(self, ws, method: str, **params):
        self._id += 1
        await ws.send_json({"id": self._id, "method": method, "params": params})
        while True:
            msg = await ws.receive_json(timeout=30)
            if msg.get("id") == self._id:
                assert "error" not in msg, msg
                return msg["result"]

    async def js(self, ws, expression: str):
        result = await self.call(ws, "Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        assert "exceptionDetails" not in result, result
        return result["result"].get("value")

    async def until(self, ws, expression: str, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while not await self.js(ws, expression):
            assert time.monotonic() < deadline, f"never true in the page: {expression}"
            await asyncio.sleep(0.2)


@pytest.mark.skipif(_chromium() is None, reason="Debian's chromium is not installed")
def test_dashboard_in_chromium_keeps_the_token_per_tab_and_its_passive_buttons_work(pair, tmp_path):
    node = active(pair)
    passive = next(n for n in pair["nodes"] if n["role"] == "passive")
    url = f"http://127.0.0.1:{node['admin']}/dashboard#token={pair['admin_token']}"
    browser = Browser(tmp_path / "profile")

    def passive_status() -> str:
        s = json.loads(http(f"http://127.0.0.1:{passive['admin']}/api/status", pair["admin_token"])[1])
        return s["databases"][0]["copies"][0]["status"]

    async def scenario() -> None:
        async with aiohttp.ClientSession() as session:
            ws = await browser.page(session)
            await browser.call(ws, "Page.enable")
            await browser.call(ws, "Page.navigate", url=url)
            await browser.until(ws, "document.querySelectorAll('#copies button').length >= 3")
            # The token is this tab's only, and gone from the address bar.
            assert await browser.js(ws, "localStorage.getItem('mailpair-token')") is None
            assert await browser.js(ws, "sessionStorage.getItem('mailpair-token')") == pair["admin_token"]
            assert "token" not in await browser.js(ws, "location.href")
            # The passive's suspend button, clicked as a person would.
            await browser.js(
                ws, "[...document.querySelectorAll('#copies button')].find(b => b.textContent === 'suspend').click()"
            )
            deadline = time.monotonic() + 20
            while passive_status() != "Suspended":
                assert time.monotonic() < deadline, "the dashboard's suspend button did not suspend the passive's copy"
                await asyncio.sleep(0.3)
            assert await browser.js(ws, "document.getElementById('msg').textContent") == ""
            await browser.js(ws, "[...document.querySelectorAll('#copies button')].find(b => b.textContent === 'resume').click()")
            deadline = time.monotonic() + 30
            while passive_status() == "Suspended":
                assert time.monotonic() < deadline, "the dashboard's resume button did not resume the copy"
                await asyncio.sleep(0.3)
            await ws.close()

    try:
        asyncio.run(scenario())
    finally:
        browser.close()
