"""Prometheus metrics: active calls, calls by outcome and delivery, BYE responses, latencies.

:class:`Metrics` observes calls through the store's record stream
(:meth:`~byeline.store.CallStore.subscribe`): every call start, answer, end and SIP message the
edge records passes through :meth:`Metrics.observe`, in the event loop, so no hook in the edge is
needed. Gauges that describe the present (active calls, the edge's counters, the store's queue
and spool) are read at scrape time.

Latencies:

- answer: INVITE received to 200 OK sent (``answered_at - started_at`` of the call's record);
- handback: our BYE (with the routing headers) sent to Five9's final response to it.
"""

from __future__ import annotations

import logging
import re
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any, Final

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from byeline.store.operations import CallWrite, Record, TraceWrite

log = logging.getLogger("byeline.web")

#: The Content-Type of the text exposition format.
CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"

ANSWER_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
HANDBACK_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 4.0, 32.0)

#: Calls whose start or BYE we remember while waiting for their answer or response.
_MAX_TRACKED: Final = 50_000

_CSEQ = re.compile(rb"\r?\n(?:CSeq|cseq|CSEQ)[ \t]*:[ \t]*\d+[ \t]+([A-Za-z]+)")


class Metrics:
    """The metrics of one byeline process, in their own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.calls = Counter(
            "byeline_calls_ended",
            "Calls ended, by outcome (who or what ended them).",
            ["outcome"],
            registry=self.registry,
        )
        self.deliveries = Counter(
            "byeline_call_deliveries",
            "Calls ended, by the fate of the routing headers on the BYE.",
            ["delivery"],
            registry=self.registry,
        )
        self.bye_responses = Counter(
            "byeline_bye_responses",
            "Final responses to byeline's BYE, by status code ('timeout' if none came).",
            ["code"],
            registry=self.registry,
        )
        self.answer_latency = Histogram(
            "byeline_answer_latency_seconds",
            "From the INVITE received to the 200 OK sent.",
            buckets=ANSWER_BUCKETS,
            registry=self.registry,
        )
        self.handback_latency = Histogram(
            "byeline_handback_latency_seconds",
            "From byeline's BYE sent to Five9's final response to it.",
            buckets=HANDBACK_BUCKETS,
            registry=self.registry,
        )
        self.webhooks = Counter(
            "byeline_webhook_attempts",
            "Webhook POST attempts, by result (delivered, retry, failed).",
            ["result"],
            registry=self.registry,
        )
        self._started: OrderedDict[str, float] = OrderedDict()
        self._bye_sent: OrderedDict[str, float] = OrderedDict()
        self._live = _LiveCollector()
        self.registry.register(self._live)

    # -- sources read at scrape time --------------------------------------------------------

    def watch(
        self,
        *,
        active_calls: Callable[[], int] | None = None,
        edge_stats: Callable[[], dict[str, int]] | None = None,
        store_stats: Callable[[], Any] | None = None,
        queue_wait: Callable[[], float] | None = None,
    ) -> None:
        """Read these at every scrape: the number of calls in progress, the edge's counters
        (``SipEdge.stats``), the store's :class:`~byeline.store.StoreStats` and how long SIP
        messages wait unread (``SipEdge.queue_wait``)."""
        self._live.active_calls = active_calls
        self._live.edge_stats = edge_stats
        self._live.store_stats = store_stats
        self._live.queue_wait = queue_wait

    def started_at(self, call_id: str) -> float | None:
        """When a call in progress started (epoch seconds), if this process saw it start."""
        return self._started.get(call_id)

    # -- observations -----------------------------------------------------------------------

    def observe(self, record: Record) -> None:
        """A store listener: feed it every record the edge writes (``store.subscribe``)."""
        if isinstance(record, TraceWrite):
            self._observe_trace(record)
        elif isinstance(record, CallWrite):
            self._observe_call(record)

    def observe_answer(self, seconds: float) -> None:
        """One call answered ``seconds`` after its INVITE arrived."""
        if seconds >= 0:
            self.answer_latency.observe(seconds)

    def observe_handback(self, seconds: float) -> None:
        """One BYE answered ``seconds`` after it was sent."""
        if seconds >= 0:
            self.handback_latency.observe(seconds)

    def observe_call_end(self, outcome: str, delivery: str | None, code: int | None) -> None:
        """One call ended: who ended it, what became of its routing headers, the BYE's code."""
        self.calls.labels(outcome=outcome).inc()
        if delivery:
            self.deliveries.labels(delivery=delivery).inc()
        if delivery in ("delivered", "rejected") and code is not None:
            self.bye_responses.labels(code=str(code)).inc()
        elif delivery == "timeout":
            self.bye_responses.labels(code="timeout").inc()

    def observe_webhook(self, result: str) -> None:
        """One webhook attempt: ``delivered``, ``retry`` or ``failed``."""
        self.webhooks.labels(result=result).inc()

    def render(self) -> bytes:
        """The text exposition of every metric."""
        return generate_latest(self.registry)

    # -- from the record stream -------------------------------------------------------------

    def _observe_call(self, write: CallWrite) -> None:
        fields = write.fields
        started = fields.get("started_at")
        if isinstance(started, float):
            _remember(self._started, write.call_id, started)
        answered = fields.get("answered_at")
        if isinstance(answered, float):
            begun = self._started.get(write.call_id)
            if begun is not None:
                self.observe_answer(answered - begun)
        if fields.get("status") == "ended":
            self._started.pop(write.call_id, None)
            self._bye_sent.pop(write.call_id, None)
            delivery = fields.get("delivery")
            code = fields.get("delivery_code")
            self.observe_call_end(
                str(fields.get("ended_by") or "unknown"),
                delivery if isinstance(delivery, str) else None,
                code if isinstance(code, int) else None,
            )

    def _observe_trace(self, trace: TraceWrite) -> None:
        data = trace.data
        if trace.direction == "out":
            if data.startswith(b"BYE ") and trace.call_id not in self._bye_sent:
                _remember(self._bye_sent, trace.call_id, trace.at)
            return
        if not data.startswith(b"SIP/2.0 ") or trace.call_id not in self._bye_sent:
            return
        try:
            status = int(data[8:11])
        except ValueError:
            return
        end = data.find(b"\r\n\r\n")
        match = _CSEQ.search(data, 0, end if end >= 0 else len(data))
        if status >= 200 and match is not None and match.group(1).upper() == b"BYE":
            sent = self._bye_sent.pop(trace.call_id)
            self.observe_handback(trace.at - sent)


def _remember(table: OrderedDict[str, float], key: str, value: float) -> None:
    table[key] = value
    table.move_to_end(key)
    while len(table) > _MAX_TRACKED:  # calls whose end we never saw must not grow it forever
        table.popitem(last=False)


class _LiveCollector(Collector):
    """Gauges and counters read from the edge and the store at scrape time."""

    def __init__(self) -> None:
        self.active_calls: Callable[[], int] | None = None
        self.edge_stats: Callable[[], dict[str, int]] | None = None
        self.store_stats: Callable[[], Any] | None = None
        self.queue_wait: Callable[[], float] | None = None

    def describe(self) -> list[Metric]:
        return []  # unchecked: the families depend on what is watched

    def collect(self) -> Iterator[Metric]:
        if self.active_calls is not None:
            yield GaugeMetricFamily(
                "byeline_active_calls", "Calls in progress.", value=self.active_calls()
            )
        if self.edge_stats is not None:
            family = CounterMetricFamily(
                "byeline_sip_events", "SIP edge counters (SipEdge.stats).", labels=["event"]
            )
            for name, value in sorted(self.edge_stats().items()):
                family.add_metric([name], value)
            yield family
        if self.queue_wait is not None:
            yield GaugeMetricFamily(
                "byeline_sip_queue_wait_seconds",
                "How long a SIP message waits unread on the UDP listeners (the overload gate's "
                "measure; past --overload-delay new INVITEs get 503).",
                value=self.queue_wait(),
            )
        if self.store_stats is not None:
            stats = self.store_stats()
            yield GaugeMetricFamily(
                "byeline_store_queue_depth", "Store writes not yet taken.", value=stats.queue_depth
            )
            yield GaugeMetricFamily(
                "byeline_store_spooled_rows",
                "Records waiting in the local spool for the database.",
                value=stats.spooled_rows,
            )
            yield GaugeMetricFamily(
                "byeline_store_database_up",
                "1 if the store's last write reached the database, 0 while spooling.",
                value=1 if stats.database_ok else 0,
            )
            yield CounterMetricFamily(
                "byeline_store_lost_rows",
                "Records dropped after every attempt failed.",
                value=stats.lost_rows,
            )
