"""The web dashboard's static files (`dashboard/`: HTML, JS, CSS; no build step, no library: the charts are
plain SVG drawn by `charts.js`, the operations' controls are `ops.js`), served by every node's management
API at `/dashboard` (and `/` redirects there). The page works offline: it loads nothing from anywhere but
this node.

The files hold no cluster data, so they need no key: the page reads everything from `/api/v1/...` with the
key the operator types into it (kept in the tab's sessionStorage, sent as `Authorization: Bearer`). Only
the files named in FILES are served; nothing else of the package is reachable.
"""

from __future__ import annotations

from importlib import resources

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from ..core._error_kinds import ErrorKind
from ..routing._http import error_response

FILES = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "charts.js": "text/javascript; charset=utf-8",
    "ops.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
}
# The page only talks to its own origin; nothing inline, nothing from elsewhere.
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}


def _read(name: str) -> bytes:
    return resources.files(__package__).joinpath("dashboard", name).read_bytes()


def dashboard_routes() -> list[Route]:
    contents = {name: _read(name) for name in FILES}  # once, at start-up: a missing file fails the node

    async def page(request: Request) -> Response:
        return Response(contents["index.html"], media_type=FILES["index.html"], headers=HEADERS)

    async def asset(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in FILES or name == "index.html":
            return error_response(ErrorKind.NOT_FOUND, f"no dashboard file {name!r}")
        return Response(contents[name], media_type=FILES[name], headers=HEADERS)

    async def root(request: Request) -> Response:
        return RedirectResponse("/dashboard", status_code=302)

    return [
        Route("/", root),
        Route("/dashboard", page),
        Route("/dashboard/", page),
        Route("/dashboard/{name}", asset),
    ]
