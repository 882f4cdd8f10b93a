"""The HTTP admin API each node serves (aiohttp).

Health endpoints are open (load balancers poll them); everything else needs the admin token as
`Authorization: Bearer TOKEN`. Every CLI command that touches a running node goes through here.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from typing import Any
from urllib.parse import quote

import aiohttp
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from mailpair.api import metrics
from mailpair.api.dashboard import add_dashboard_routes
from mailpair.api.openapi import OPENAPI
from mailpair.api.pairview import merge_statuses
from mailpair.store import StoreError, hash_password, names
from mailpair.store.accounts import list_accounts

logger = logging.getLogger("mailpair.admin")

OPEN_PATHS = {"/health", "/health/active", "/health/passive", "/metrics", "/openapi.json", "/", "/dashboard"}


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda d: json.dumps(d, default=str))


def _error(status: int, message: str) -> web.Response:
    return _json({"error": message}, status)


def _field(body: dict[str, Any], key: str, kind: type, required: bool = False, default: Any = None) -> Any:
    """A typed field of a JSON body; a wrong type is the client's error (400), never ours."""
    if key not in body or body[key] is None:
        if required:
            raise ValueError(f"{key} is required")
        return default
    value = body[key]
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ValueError(f"{key} must be an integer")
    if kind is not int and not isinstance(value, kind):
        raise ValueError(f"{key} must be a {kind.__name__}")
    if kind is int and not 0 <= value < 2**63:
        raise ValueError(f"{key} must be between 0 and 2**63-1")
    if kind is str and required and not value:
        raise ValueError(f"{key} must not be empty")
    return value


class AdminServer:
    def __init__(self, runner: web.AppRunner, site: web.TCPSite, port: int):
        self.runner = runner
        self.site = site
        self.port = port

    async def close(self) -> None:
        await self.runner.cleanup()


def build_app(node) -> web.Application:
    token = node.config.admin_token

    @web.middleware
    async def auth(request: web.Request, handler):
        if request.path not in OPEN_PATHS and not request.path.startswith("/static/"):
            given = request.headers.get("Authorization", "")
            try:
                given_bytes = given.encode()
            except UnicodeEncodeError:  # aiohttp keeps undecodable bytes as surrogates
                return _error(400, "the Authorization header is not valid UTF-8")
            if not token or not hmac.compare_digest(given_bytes, f"Bearer {token}".encode()):
                return _error(401, "missing or wrong admin token")
        try:
            return await handler(request)
        except web.HTTPException:
            raise
        except (StoreError, ValueError) as e:
            return _error(400, str(e))
        except Exception as e:  # the API answers, it does not drop the connection
            logger.exception("admin API error")
            return _error(500, f"internal error: {e}")

    app = web.Application(middlewares=[auth], client_max_size=1024 * 1024)
    routes = web.RouteTableDef()

    @routes.get("/health")
    async def health(request: web.Request) -> web.Response:
        return _json({"ok": True, "node": node.config.name, "role": node.role})

    @routes.get("/health/active")
    async def health_active(request: web.Request) -> web.Response:
        ok = node.role == "active"
        return _json({"ok": ok, "role": node.role}, 200 if ok else 503)

    @routes.get("/health/passive")
    async def health_passive(request: web.Request) -> web.Response:
        ok = node.role == "passive"
        return _json({"ok": ok, "role": node.role}, 200 if ok else 503)

    @routes.get("/metrics")
    async def metrics_view(request: web.Request) -> web.Response:
        metrics.refresh(node)
        return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    @routes.get("/openapi.json")
    async def openapi(request: web.Request) -> web.Response:
        return _json(OPENAPI)

    @routes.get("/api/status")
    async def status(request: web.Request) -> web.Response:
        return _json(node.status())

    @routes.get("/api/pair")
    async def pair_view(request: web.Request) -> web.Response:
        """Both nodes' views merged: this node's own, and its peer's when it answers."""
        me = {"url": f"http://{node.config.admin.host}:{node.config.admin.port}", "reachable": True, **node.status()}
        statuses = [me]
        peer = node.config.peer_admin
        if peer is not None and node.config.peer_name:
            url = f"http://{peer.host}:{peer.port}"
            try:
                timeout = aiohttp.ClientTimeout(total=2)
                async with aiohttp.ClientSession(timeout=timeout) as session:
                    async with session.get(url + "/api/status", headers={"Authorization": f"Bearer {token}"}) as r:
                        r.raise_for_status()
                        statuses.append({"url": url, "reachable": True, **(await r.json())})
            except (TimeoutError, aiohttp.ClientError, ValueError) as e:
                statuses.append({"url": url, "reachable": False, "name": node.config.peer_name, "error": str(e)})
        return _json(merge_statuses(statuses))

    @routes.get("/api/events")
    async def events(request: web.Request) -> web.Response:
        return _json({"events": node.events[-100:]})

    def _writable_db(user: str | None = None):
        if node.role != "active":
            raise web.HTTPConflict(
                text=json.dumps({"error": "this node is passive; use the active node"}), content_type="application/json"
            )
        if user is not None:
            return node.store.database_of(user)
        return node.store.default_database()

    async def _body(request: web.Request) -> dict[str, Any]:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise web.HTTPBadRequest(
                text=json.dumps({"error": "body must be a JSON object"}), content_type="application/json"
            ) from None
        except RecursionError:  # deeper than the parser's stack: no body of ours nests like that
            raise web.HTTPBadRequest(
                text=json.dumps({"error": "body is nested too deeply"}), content_type="application/json"
            ) from None
        if not isinstance(body, dict):
            raise web.HTTPBadRequest(text=json.dumps({"error": "body must be a JSON object"}), content_type="application/json")
        return body

    @routes.get("/api/users")
    async def list_users(request: web.Request) -> web.Response:
        users = []
        for db in node.store.databases.values():
            rows = await db.read(list_accounts)
            users += [{"name": n, "quota": q, "used": u, "database": db.name} for n, q, u in rows]
        return _json({"users": users})

    @routes.post("/api/users")
    async def add_user(request: web.Request) -> web.Response:
        body = await _body(request)
        name = names.check_user(_field(body, "name", str, required=True))
        password = _field(body, "password", str, required=True)
        quota = _field(body, "quota", int, default=0)
        db_name = _field(body, "database", str)
        db = node.store.databases.get(db_name) if db_name else _writable_db()
        if db is None:
            return _error(404, f"no such database: {db_name}")
        _writable_db()
        hashed = await asyncio.to_thread(hash_password, password)
        await db.acommit("account_add", name=name, hash=hashed, quota=quota)
        return _json({"name": name, "database": db.name}, 201)

    @routes.delete("/api/users/{name}")
    async def del_user(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        db = _writable_db(name)
        await db.acommit("account_del", name=name)
        return _json({"deleted": name})

    @routes.post("/api/users/{name}/password")
    async def passwd(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        body = await _body(request)
        password = _field(body, "password", str, required=True)
        db = _writable_db(name)
        hashed = await asyncio.to_thread(hash_password, password)
        await db.acommit("account_passwd", name=name, hash=hashed)
        return _json({"name": name})

    @routes.post("/api/users/{name}/quota")
    async def quota(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        body = await _body(request)
        db = _writable_db(name)
        await db.acommit("quota_set", name=name, quota=_field(body, "quota", int, required=True))
        return _json({"name": name})

    @routes.get("/api/databases")
    async def list_databases(request: web.Request) -> web.Response:
        return _json({"databases": node.status()["databases"]})

    @routes.post("/api/databases")
    async def create_database(request: web.Request) -> web.Response:
        body = await _body(request)
        _writable_db()
        db = await asyncio.to_thread(node.store.create_database, _field(body, "name", str, required=True))
        return _json({"name": db.name}, 201)

    async def _copy_action(name: str, action: str) -> web.Response:
        if action not in ("suspend", "resume", "reseed"):
            return _error(404, f"unknown copy action {action}")
        if node.receiver is None:
            return _error(409, "copy actions run on the passive node")
        result = getattr(node.receiver, action)(name)
        if asyncio.iscoroutine(result):
            result = await result
        node.event(action, f"copy of {name} on {node.config.name}: {action}", database=name)
        return _json({"database": name, "action": action, "ok": True})

    @routes.post("/api/databases/{name}/copy/{action}")
    async def copy_action(request: web.Request) -> web.Response:
        return await _copy_action(request.match_info["name"], request.match_info["action"])

    @routes.post("/api/nodes/{node}/databases/{name}/copy/{action}")
    async def node_copy_action(request: web.Request) -> web.Response:
        """A copy action on this node or on its peer: the dashboard calls only the node that
        served it (a browser may not call the peer's origin), and this node relays to the peer."""
        target, name, action = request.match_info["node"], request.match_info["name"], request.match_info["action"]
        if target == node.config.name:
            return await _copy_action(name, action)
        peer = node.config.peer_admin
        if target != node.config.peer_name or peer is None:
            return _error(404, f"no such node in this pair: {target}")
        url = f"http://{peer.host}:{peer.port}/api/databases/{quote(name, safe='')}/copy/{quote(action, safe='')}"
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
                async with session.post(url, headers={"Authorization": f"Bearer {token}"}) as r:
                    answer = await r.json(content_type=None)
                    return _json(answer, r.status)
        except (TimeoutError, aiohttp.ClientError, ValueError) as e:
            return _error(502, f"{target} did not answer: {e}")

    add_dashboard_routes(routes, node)
    app.add_routes(routes)
    return app


async def start_admin(node, host: str, port: int) -> AdminServer:
    app = build_app(node)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = runner.addresses[0][1]  # (host, port) of the socket the site bound
    return AdminServer(runner, site, bound)
