"""The dashboard page: one HTML file with a little JavaScript that polls /api/status."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

PAGE = Path(__file__).with_name("dashboard.html")


def add_dashboard_routes(routes: web.RouteTableDef, node) -> None:
    @routes.get("/")
    async def index(request: web.Request) -> web.Response:
        raise web.HTTPFound("/dashboard")

    @routes.get("/dashboard")
    async def dashboard(request: web.Request) -> web.Response:
        return web.Response(text=PAGE.read_text(), content_type="text/html")
