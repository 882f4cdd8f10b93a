"""The dashboard page: one HTML file, its style and a little JavaScript that polls /api/pair.

Rules this module keeps: the page runs no inline script or style and may talk only to the node
that served it (its Content-Security-Policy says so, so an injected string cannot run and the
token cannot be sent elsewhere), and no other site may frame it (X-Frame-Options and the CSP's
frame-ancestors: no clickjacking of its buttons).
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

HERE = Path(__file__).parent
PAGE = HERE / "dashboard.html"
ASSETS = {"dashboard.js": "application/javascript", "dashboard.css": "text/css"}

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def add_dashboard_routes(routes: web.RouteTableDef, node) -> None:
    @routes.get("/")
    async def index(request: web.Request) -> web.Response:
        raise web.HTTPFound("/dashboard")

    @routes.get("/dashboard")
    async def dashboard(request: web.Request) -> web.Response:
        return web.Response(text=PAGE.read_text(), content_type="text/html", headers=SECURITY_HEADERS)

    @routes.get("/static/{name}")
    async def asset(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in ASSETS:  # a fixed list: no path from the request reaches the file system
            raise web.HTTPNotFound()
        return web.Response(text=(HERE / name).read_text(), content_type=ASSETS[name], headers=SECURITY_HEADERS)
