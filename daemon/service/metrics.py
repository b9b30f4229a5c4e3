"""``/metrics``: the daemon's Prometheus exposition, one registry per application.

Each application gets its own ``CollectorRegistry`` (never the global one),
so tests can run several daemons in one process. Counters and the latency
histogram are fed by :meth:`Metrics.observe`, which the daemon registers with
the sync engine (:meth:`~daemon.sync.engine.SyncEngine.on_event`): the engine
already reads and decodes every event of the log in order, so metrics see each
one once more for free rather than through a second subscription that read and
decoded the whole log again. Events after the log's head at start count
(:attr:`Metrics.started_at`; the engine's catch-up from its checkpoint is
skipped): every append counts, an ``outbox.command.issued`` ->
``delivered`` pair gives a delivery latency (log recorded times), and a
``failed``/``abandoned`` outcome counts a remote error by the ``remote_status``
the outbox records with it (the HTTP status, or ``network`` when no answer
came). Gauges that are state (outbox depth and oldest age, projection lag,
intake counts, last reconciliation) are read at scrape time by
:class:`_StateCollector`; the log head for the projection lag is read from the
store at each scrape (:meth:`Metrics.scrape`), so the lag counts appends the
engine has not folded yet.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from eventstore import EventStore
from projections import kinds

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
ISSUED, DELIVERED = kinds.COMMAND_ISSUED, kinds.COMMAND_DELIVERED
FAILED, ABANDONED, PARKED = kinds.COMMAND_FAILED, kinds.COMMAND_ABANDONED, kinds.COMMAND_PARKED
#: Outcomes after which a command is never delivered: its issue time is forgotten.
NEVER_DELIVERED = frozenset({ABANDONED, kinds.COMMAND_SUPERSEDED, kinds.COMMAND_SKIPPED})
#: The desks' client names, as the side labels say them.
SIDES = {"connectwise": "cw", "soc": "soc"}


def _ts(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


class Metrics:
    """The daemon's metrics; ``sources`` gives live state at scrape time."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.events = Counter(
            "socbridge_events_appended",
            "Events appended to the log since start, by type.",
            ["type"],
            registry=self.registry,
        )
        self.task_restarts = Counter(
            "socbridge_task_restarts",
            "Background tasks restarted after an unexpected exception, by task.",
            ["task"],
            registry=self.registry,
        )
        self.refused = Counter(
            "socbridge_requests_refused_by_guard",
            "Inbound requests refused before their handler (route kind, reason).",
            ["route", "reason"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "socbridge_delivery_latency_seconds",
            "From a command's issue to its delivery, by the log's recorded times.",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600),
            registry=self.registry,
        )
        self.remote_requests = Counter(
            "socbridge_remote_requests",
            "HTTP requests sent to each desk (every attempt), by method and purpose: poll, "
            "read, write (the outbox, its look-ups included) or fetch (re-reads sync asked "
            "for). The API budget socbridge spends.",
            ["side", "method", "purpose"],
            registry=self.registry,
        )
        self.remote_errors = Counter(
            "socbridge_remote_errors",
            "Failed or abandoned deliveries, by target side and HTTP status.",
            ["side", "status"],
            registry=self.registry,
        )
        self.responses = Counter(
            "socbridge_inbound_responses",
            "Requests answered by the inbound routes, by path and HTTP status.",
            ["path", "status"],
            registry=self.registry,
        )
        self.last_reconciliation: dict[str, float] = {}
        #: The log's last position at start: events after it are counted.
        self.started_at = 0
        #: The log's last position, read at scrape time (for the projection lag).
        self.head = 0
        #: When this process started: stands in for the issue time of older commands.
        self.process_started = time.time()
        self._issued: dict[str, float] = {}
        # The labelled children of the per-request and per-event counters, by label
        # values: ``labels()`` validates and looks them up under a lock on every call.
        self._responses: dict[tuple[str, int], Counter] = {}
        self._appended: dict[str, Counter] = {}
        self.state = _StateCollector(self)
        self.registry.register(self.state)

    def refuse(self, route: str, reason: str) -> None:
        self.refused.labels(route, reason).inc()

    def handled(self, path: str, status: int) -> None:
        child = self._responses.get((path, status))
        if child is None:
            child = self._responses[(path, status)] = self.responses.labels(path, str(status))
        child.inc()

    def issued_at(self, command_id: str) -> float | None:
        """When a pending command was issued (known for commands issued since start)."""
        return self._issued.get(command_id)

    def reconciled(self, side: str) -> None:
        self.last_reconciliation[side] = time.time()

    def observe(self, event: Any) -> None:
        """Count one event (a :class:`eventstore.RecordedEvent`) if appended since start.

        Called with every event of the log in order (the engine's catch-up
        included); events at or before :attr:`started_at` were counted by an
        earlier run.
        """
        if event.position <= self.started_at:
            return
        child = self._appended.get(event.type)
        if child is None:
            child = self._appended[event.type] = self.events.labels(event.type)
        child.inc()
        self.head = max(self.head, event.position)
        # An issued command's id is its event id; outcomes carry it in their data.
        command_id = event.event_id if event.type == ISSUED else event.data.get("command_id")
        if event.type == ISSUED:
            self._issued[command_id] = _ts(event.recorded_at)
        elif event.type == DELIVERED:
            issued = self._issued.pop(command_id, None)
            if issued is not None:
                self.latency.observe(max(0.0, _ts(event.recorded_at) - issued))
        else:
            if event.type in (FAILED, ABANDONED, PARKED):
                # Only outcomes the remote caused carry ``remote_status`` (an HTTP
                # status, or ``network``); an abandon for a stale field or an
                # unlinked ticket is sync's own choice, not a remote error.
                status = event.data.get("remote_status")
                if status is not None:
                    side = str(event.data.get("kind", "?")).split(".", 1)[0]
                    self.remote_errors.labels(side, str(status)).inc()
            if event.type in NEVER_DELIVERED:
                self._issued.pop(command_id, None)

    def remote_request(self, remote: str, method: str, purpose: str) -> None:
        """One HTTP attempt to a desk (the clients' ``on_request``)."""
        self.remote_requests.labels(SIDES.get(remote, remote), method, purpose).inc()

    async def start(self, store: EventStore) -> None:
        """Count from the log's current end on (call once the log is open)."""
        self.started_at = self.head = await store.last_position()

    async def scrape(self, store: EventStore) -> bytes:
        """The exposition, with the log head read now (one read per scrape)."""
        self.head = max(self.head, await store.last_position())
        return self.exposition()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


StateFn = Callable[[], dict[str, Any]]


class _StateCollector(Collector):
    """Reads live state at scrape time through ``source`` (set by the app)."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self.source: StateFn | None = None

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        state = self.source() if self.source is not None else {}
        yield GaugeMetricFamily(
            "socbridge_outbox_depth",
            "Commands issued and not yet delivered or abandoned.",
            value=state.get("outbox_depth", 0),
        )
        yield GaugeMetricFamily(
            "socbridge_parked_commands",
            "Commands a remote refused for good, waiting for socbridge retry or skip.",
            value=state.get("parked", 0),
        )
        yield GaugeMetricFamily(
            "socbridge_outbox_oldest_age_seconds",
            "Age of the oldest pending command (0: none).",
            value=state.get("outbox_oldest_age", 0.0),
        )
        yield GaugeMetricFamily(
            "socbridge_projection_lag_events",
            "Log head position minus the sync engine's position.",
            value=state.get("projection_lag", 0),
        )
        yield CounterMetricFamily(
            "socbridge_sync_decided_again",
            "Inputs decided again because the log moved on before their decisions were "
            "appended (a delivery or callback landed first).",
            value=state.get("decided_again", 0),
        )
        yield CounterMetricFamily(
            "socbridge_sync_commits",
            "Appends of sync's decisions (each one commit); with socbridge_sync_inputs_decided "
            "it gives the inputs decided per commit.",
            value=state.get("sync_commits", 0),
        )
        yield CounterMetricFamily(
            "socbridge_sync_inputs_decided",
            "Inputs whose decisions sync appended.",
            value=state.get("sync_inputs_decided", 0),
        )
        last = GaugeMetricFamily(
            "socbridge_last_reconciliation_timestamp_seconds",
            "Unix time of the last completed poll (reconciliation) per side.",
            labels=["side"],
        )
        for side, at in sorted(self.metrics.last_reconciliation.items()):
            last.add_metric([side], at)
        yield last
        intake = CounterMetricFamily(
            "socbridge_intake_requests",
            "Callbacks/webhooks handled by the intakes, by route and outcome.",
            labels=["route", "outcome"],
        )
        for (route, outcome), count in sorted(state.get("intake", {}).items()):
            intake.add_metric([route, outcome], count)
        yield intake
