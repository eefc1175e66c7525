"""The HTTP server: API, metrics, dashboard and webhook sender, on one aiohttp application.

``byeline serve --http HOST:PORT`` starts it with :func:`start_http`::

    http = await start_http(host="127.0.0.1", port=8080, store=store, edge=edge,
                            token=token, webhooks=["https://crm.example/hook"],
                            webhook_secret=secret)
    ...
    await http.stop()

Authentication: every path but ``/healthz``, the login page and the dashboard's static files needs
``Authorization: Bearer <token>``. The dashboard's login form trades the token for a session
cookie (HttpOnly, SameSite=Strict) holding an HMAC of the token, never the token itself.

With an edge, LiveKit's control API is mounted too (``/twirp/livekit.RoomService/...`` and
``/twirp/livekit.SIP/...``, see :mod:`byeline.livekit.control_api`). Those paths take LiveKit
access tokens (JWTs signed with ``LIVEKIT_API_SECRET``) instead of the bearer token.
"""

from __future__ import annotations

import hmac
import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final
from urllib.parse import urlencode

from aiohttp import web
from aiohttp.typedefs import Middleware

from byeline.store import CallStore, WebhookTargets
from byeline.web.api import Api, DatabaseUnavailable, Handler, json_error
from byeline.web.dashboard import SESSION_COOKIE, Dashboard, session_value
from byeline.web.handoff import webhook_payload
from byeline.web.metrics import Metrics
from byeline.web.webhooks import WebhookSender

if TYPE_CHECKING:
    from byeline.edge.server import SipEdge
    from byeline.livekit.tokens import ApiKeys

log = logging.getLogger("byeline.web")

#: Paths served without a token.
PUBLIC_PATHS: Final = frozenset({"/healthz", "/ui/login", "/favicon.ico"})
PUBLIC_PREFIXES: Final = ("/ui/static/",)
#: Paths that check LiveKit access tokens themselves (LiveKit's Twirp API).
LIVEKIT_PREFIX: Final = "/twirp/"


@dataclass
class HttpContext:
    """What the handlers read: the store, the edge (None when serving records only), metrics."""

    store: CallStore
    edge: SipEdge | None
    metrics: Metrics
    token: str
    session: str = field(init=False)

    def __post_init__(self) -> None:
        self.session = session_value(self.token)


def _authorized(request: web.Request, context: HttpContext) -> bool:
    header = request.headers.get("Authorization", "")
    scheme, _, credentials = header.partition(" ")
    if scheme.lower() == "bearer" and credentials:
        return hmac.compare_digest(credentials.strip().encode(), context.token.encode())
    cookie = request.cookies.get(SESSION_COOKIE)
    return cookie is not None and hmac.compare_digest(cookie.encode(), context.session.encode())


def _middleware(context: HttpContext) -> Middleware:
    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        path = request.path
        if path.startswith(LIVEKIT_PREFIX):
            return await handler(request)  # LiveKit JWTs, checked per method
        public = path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)
        if not public and not _authorized(request, context):
            if path == "/" or path.startswith("/ui/"):
                raise web.HTTPFound("/ui/login?" + urlencode({"next": path}))
            response = json_error(401, "missing or wrong bearer token")
            response.headers["WWW-Authenticate"] = 'Bearer realm="byeline"'
            return response
        try:
            return await handler(request)
        except DatabaseUnavailable as exc:
            return json_error(503, f"database unavailable: {exc}")
        except web.HTTPException as exc:
            if exc.status >= 400 and not path.startswith("/ui/"):
                return json_error(exc.status, exc.reason)
            raise

    return guard


def create_app(
    store: CallStore,
    *,
    token: str,
    edge: SipEdge | None = None,
    metrics: Metrics | None = None,
    livekit_keys: ApiKeys | None = None,
) -> web.Application:
    """The aiohttp application: API, ``/metrics``, ``/openapi.json`` and the dashboard.

    With an ``edge``, LiveKit's control API too, checking tokens against ``livekit_keys``
    (default: ``LIVEKIT_API_KEY`` and ``LIVEKIT_API_SECRET`` from the environment; none set:
    every LiveKit API request is refused).
    """
    if not token:
        raise ValueError("http: an API token is required")
    context = HttpContext(store=store, edge=edge, metrics=metrics or Metrics(), token=token)
    app = web.Application(middlewares=[_middleware(context)], client_max_size=64 * 1024)
    Api(context).add_routes(app)
    Dashboard(context).add_routes(app)
    if edge is not None:
        from byeline.livekit.control_api import add_control_api
        from byeline.livekit.tokens import ApiKeys

        add_control_api(app, edge, livekit_keys or ApiKeys.from_env())
    return app


class HttpServer:
    """A running HTTP server (see :func:`start_http`)."""

    def __init__(
        self,
        runner: web.AppRunner,
        *,
        host: str,
        port: int,
        token: str,
        metrics: Metrics,
        store: CallStore,
        sender: WebhookSender | None,
    ) -> None:
        self.runner = runner
        self.host = host
        self.port = port
        """The bound port (the real one when 0 was asked for)."""
        self.token = token
        self.metrics = metrics
        self.sender = sender
        self._store = store

    @property
    def url(self) -> str:
        """``http://host:port``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def stop(self) -> None:
        """Stop serving and sending webhooks (undelivered ones stay in the outbox)."""
        if self.sender is not None:
            await self.sender.stop()
        self._store.unsubscribe(self.metrics.observe)
        await self.runner.cleanup()


async def start_http(
    *,
    host: str,
    port: int,
    store: CallStore,
    edge: SipEdge | None = None,
    token: str | None = None,
    webhooks: Sequence[str] = (),
    webhook_secret: str | None = None,
    metrics: Metrics | None = None,
    webhook_options: dict[str, float] | None = None,
    livekit_keys: ApiKeys | None = None,
) -> HttpServer:
    """Serve the API, metrics and dashboard on ``host:port``; deliver webhooks to ``webhooks``.

    Call it after the store is open and before the edge starts, so metrics see every call.
    Without a ``token`` a random one is made and logged once (the API is never open).
    ``webhooks`` need a ``webhook_secret`` to sign with. ``webhook_options`` go to
    :class:`~byeline.web.webhooks.WebhookSender` (``first_backoff``, ``max_attempts``, ...).
    """
    if not token:
        token = secrets.token_urlsafe(24)
        log.warning("http: no API token configured; this run's token is %s", token)
    urls = tuple(webhooks)
    for url in urls:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"webhooks: {url!r} is not an http(s) URL")
    if urls and not webhook_secret:
        raise ValueError("webhooks: a webhook secret is required to sign the requests")
    metrics = metrics or Metrics()
    metrics.watch(
        active_calls=(lambda: len(edge.calls)) if edge is not None else None,
        edge_stats=(lambda: dict(edge.stats)) if edge is not None else None,
        queue_wait=edge.queue_wait if edge is not None else None,
        store_stats=lambda: store.stats,
    )
    store.subscribe(metrics.observe)
    sender: WebhookSender | None = None
    if urls:
        # Read at delivery time: trunks can change at run time (LiveKit's SIP API).
        store.enable_webhooks(
            WebhookTargets(
                urls,
                lambda record: webhook_payload(record, edge.trunks if edge is not None else None),
            )
        )
        assert webhook_secret is not None
        sender = WebhookSender(
            store.outbox,
            webhook_secret,
            metrics=metrics,
            **(webhook_options or {}),  # type: ignore[arg-type]
        )
    app = create_app(store, token=token, edge=edge, metrics=metrics, livekit_keys=livekit_keys)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, reuse_address=True)
        await site.start()
    except BaseException:
        await runner.cleanup()
        store.unsubscribe(metrics.observe)
        raise
    bound = port
    server = getattr(site, "_server", None)
    if server is not None and server.sockets:
        bound = server.sockets[0].getsockname()[1]
    if sender is not None:
        sender.start()
    log.info("http: API and dashboard on http://%s:%d/ui/", host, bound)
    return HttpServer(
        runner,
        host=host,
        port=bound,
        token=token,
        metrics=metrics,
        store=store,
        sender=sender,
    )
