"""The dashboard: live calls, recent calls, and a call's page with its SIP ladder.

Plain HTML, CSS and one JavaScript file under ``static/`` (no build step): the pages are shells
that read the JSON API, so the dashboard shows exactly what the API serves. The login form trades
the API token for a session cookie; the pages and the API accept either.
"""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path
from typing import TYPE_CHECKING, Final
from urllib.parse import urlencode

from aiohttp import web

if TYPE_CHECKING:
    from byeline.web.server import HttpContext

STATIC: Final = Path(__file__).resolve().parent / "static"
SESSION_COOKIE: Final = "byeline_session"

#: No inline script, no third party: the pages only load their own files.
_CSP: Final = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)


def _page(name: str) -> web.Response:
    response = web.FileResponse(STATIC / name)
    response.headers["Content-Security-Policy"] = _CSP
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response  # type: ignore[return-value]


def session_value(token: str) -> str:
    """The session cookie for ``token``: an HMAC of it, so the cookie is not the token."""
    return hmac.new(token.encode(), b"byeline-dashboard-session", hashlib.sha256).hexdigest()


def _safe_next(target: str | None) -> str:
    # Only our own pages: an open redirect would let a link send a logged-in user anywhere.
    if target and target.startswith("/ui/") and "//" not in target and "\\" not in target:
        return target
    return "/ui/"


class Dashboard:
    """The dashboard's routes."""

    def __init__(self, context: HttpContext) -> None:
        self.context = context

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/", self.root)
        app.router.add_get("/ui", self.root)
        app.router.add_get("/ui/", self.index)
        app.router.add_get("/ui/calls/{call_id}", self.call)
        app.router.add_get("/ui/login", self.login_form)
        app.router.add_post("/ui/login", self.login)
        app.router.add_get("/ui/logout", self.logout)
        app.router.add_static("/ui/static/", STATIC, append_version=False)

    async def root(self, request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound("/ui/")

    async def index(self, request: web.Request) -> web.StreamResponse:
        return _page("index.html")

    async def call(self, request: web.Request) -> web.StreamResponse:
        return _page("call.html")

    async def login_form(self, request: web.Request) -> web.StreamResponse:
        return _page("login.html")

    async def login(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        token = form.get("token")
        target = _safe_next(request.query.get("next"))
        if not isinstance(token, str) or not hmac.compare_digest(
            token.encode(), self.context.token.encode()
        ):
            raise web.HTTPFound("/ui/login?" + urlencode({"failed": "1", "next": target}))
        response = web.HTTPFound(target)
        response.set_cookie(
            SESSION_COOKIE,
            session_value(token),
            httponly=True,
            samesite="Strict",
            path="/",
            secure=request.secure,
        )
        raise response

    async def logout(self, request: web.Request) -> web.StreamResponse:
        response = web.HTTPFound("/ui/login")
        response.del_cookie(SESSION_COOKIE, path="/")
        raise response
