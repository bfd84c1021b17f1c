"""The lab's web client: the seed's video room as a static page served by the signaling server.

``GET /`` serves ``static/index.html``; ``/static/`` serves ``app.js`` (a plain ES
module, no build step) and ``style.css``.  The page joins a room through the same
server's ``/signal`` WebSocket (so it is same-origin, which Chromium's Local Network
Access checks and the server's origin check both accept) and asks
``/api/turn-credentials`` for ICE servers when it has a token.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

__all__ = ["STATIC_DIR", "add_web_routes"]

STATIC_DIR = Path(__file__).parent / "static"
# The page and its assets change with the package: never let a browser keep a stale copy.
_NO_CACHE = {"Cache-Control": "no-cache"}


async def _index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC_DIR / "index.html", headers=_NO_CACHE)


async def _no_cache(request: web.Request, response: web.StreamResponse) -> None:
    if request.path.startswith("/static/"):
        response.headers.setdefault("Cache-Control", "no-cache")


def add_web_routes(app: web.Application) -> None:
    """Serve the web client on ``app``: the page at ``GET /``, its assets under ``/static/``."""
    app.router.add_get("/", _index)
    app.router.add_static("/static/", STATIC_DIR, name="static", append_version=False)
    app.on_response_prepare.append(_no_cache)
