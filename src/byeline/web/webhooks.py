"""Webhooks: POST each call's result to the configured receivers, signed, from a durable outbox.

The store writes one outbox row per call and receiver in the transaction that ends the call (see
:mod:`byeline.store.outbox`); :class:`WebhookSender` delivers them. A 2xx answer ends a delivery;
anything else (a non-2xx, a timeout, a refused connection) is retried with exponential backoff
and jitter until ``max_attempts``, then the row is marked ``failed`` (kept, and visible in
``GET /calls/{id}``). Delivery is at least once: a receiver drops duplicates by the
``X-Byeline-Delivery`` id.

Every request carries::

    X-Byeline-Event: call.ended
    X-Byeline-Delivery: <outbox row id>
    X-Byeline-Timestamp: <unix seconds>
    X-Byeline-Signature: sha256=<hex HMAC-SHA256(secret, timestamp + "." + body)>

The timestamp is signed with the body so a receiver can refuse old replays.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import random
import time
from typing import Final

import aiohttp

from byeline.store.outbox import Outbox, OutboxEntry
from byeline.web.metrics import Metrics

log = logging.getLogger("byeline.webhooks")

SIGNATURE_HEADER: Final = "X-Byeline-Signature"
TIMESTAMP_HEADER: Final = "X-Byeline-Timestamp"
DELIVERY_HEADER: Final = "X-Byeline-Delivery"
EVENT_HEADER: Final = "X-Byeline-Event"


def sign(secret: str | bytes, timestamp: str, body: bytes) -> str:
    """The value of ``X-Byeline-Signature`` for ``body`` sent at ``timestamp``."""
    key = secret.encode() if isinstance(secret, str) else secret
    digest = hmac.new(key, timestamp.encode("ascii") + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def verify(
    secret: str | bytes,
    timestamp: str,
    body: bytes,
    signature: str,
    *,
    tolerance: float = 300.0,
    now: float | None = None,
) -> bool:
    """What a receiver checks: the signature matches and the timestamp is recent."""
    try:
        age = abs((time.time() if now is None else now) - int(timestamp))
    except ValueError:
        return False
    return age <= tolerance and hmac.compare_digest(sign(secret, timestamp, body), signature)


class WebhookSender:
    """Delivers the outbox: polls for due rows, POSTs them, records each outcome.

    ``first_backoff`` seconds after the first failure, doubled per attempt up to
    ``max_backoff``, ±20 % jitter; after ``max_attempts`` attempts a delivery is ``failed``.
    The defaults retry for about two days.
    """

    def __init__(
        self,
        outbox: Outbox,
        secret: str | bytes,
        *,
        timeout: float = 10.0,
        first_backoff: float = 5.0,
        max_backoff: float = 3600.0,
        max_attempts: int = 60,
        poll_interval: float = 0.5,
        concurrency: int = 8,
        metrics: Metrics | None = None,
        user_agent: str = "byeline-webhooks/0.1",
    ) -> None:
        if not secret:
            raise ValueError("webhooks: a signing secret is required")
        if max_attempts < 1 or first_backoff <= 0 or max_backoff < first_backoff:
            raise ValueError("webhooks: bad retry settings")
        self.outbox = outbox
        self._secret = secret
        self._timeout = timeout
        self._first_backoff = first_backoff
        self._max_backoff = max_backoff
        self._max_attempts = max_attempts
        self._poll_interval = poll_interval
        self._concurrency = concurrency
        self._metrics = metrics
        self._user_agent = user_agent
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._wake = asyncio.Event()

    def start(self) -> None:
        """Start delivering in the background (from inside the event loop)."""
        if self._task is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self._timeout),
                headers={"User-Agent": self._user_agent},
            )
            self._task = asyncio.get_running_loop().create_task(self._run(), name="webhooks")

    def wake(self) -> None:
        """Look at the outbox now rather than at the next poll."""
        self._wake.set()

    async def stop(self) -> None:
        """Stop; deliveries not done stay in the outbox for the next start."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def run_once(self) -> int:
        """Attempt every delivery due now; return how many were attempted."""
        due = await asyncio.to_thread(self.outbox.due, time.time(), self._concurrency * 4)
        if not due:
            return 0
        limit = asyncio.Semaphore(self._concurrency)

        async def one(entry: OutboxEntry) -> None:
            async with limit:
                await self._deliver(entry)

        await asyncio.gather(*(one(entry) for entry in due))
        return len(due)

    async def _run(self) -> None:
        while True:
            try:
                attempted = await self.run_once()
            except Exception as exc:  # the database may be away: try again later
                log.warning("webhooks: cannot read the outbox: %s", exc)
                attempted = 0
            if attempted:
                continue  # more may be due
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._poll_interval)

    async def _deliver(self, entry: OutboxEntry) -> None:
        assert self._session is not None
        body = entry.payload.encode("utf-8")
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            EVENT_HEADER: entry.event,
            DELIVERY_HEADER: str(entry.id),
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: sign(self._secret, timestamp, body),
        }
        status: int | None = None
        try:
            async with self._session.post(entry.url, data=body, headers=headers) as response:
                status = response.status
                await response.read()
            error = "" if 200 <= status < 300 else f"HTTP {status}"
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            error = f"{type(exc).__name__}: {exc}".strip()
        now = time.time()
        if not error and status is not None:
            await asyncio.to_thread(self.outbox.delivered, entry.id, status=status, now=now)
            self._count("delivered")
            log.info("webhooks: %s delivered to %s (%d)", entry.call_id, entry.url, status)
            return
        attempt = entry.attempts + 1
        if attempt >= self._max_attempts:
            next_at: float | None = None
            self._count("failed")
            log.error(
                "webhooks: %s to %s FAILED after %d attempts: %s",
                entry.call_id,
                entry.url,
                attempt,
                error,
            )
        else:
            delay = min(self._max_backoff, self._first_backoff * 2 ** (attempt - 1))
            delay *= random.uniform(0.8, 1.2)
            next_at = now + delay
            self._count("retry")
            log.warning(
                "webhooks: %s to %s failed (attempt %d): %s; retrying in %.1fs",
                entry.call_id,
                entry.url,
                attempt,
                error,
                delay,
            )
        await asyncio.to_thread(
            self.outbox.failed_attempt,
            entry.id,
            status=status,
            error=error,
            next_attempt_at=next_at,
        )

    def _count(self, result: str) -> None:
        if self._metrics is not None:
            self._metrics.observe_webhook(result)
