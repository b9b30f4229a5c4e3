"""``/metrics``: the daemon's Prometheus exposition, one registry per application.

Each application gets its own ``CollectorRegistry`` (never the global one),
so tests can run several daemons in one process; the process collector
(``process_start_time_seconds``, CPU, memory, open files) is registered on it.
Names follow the Prometheus naming guide: the ``socbridge_`` prefix, base units,
counters ending in ``_total`` and no ticket ids in labels;
``docs/monitoring/`` holds the alerting rules and the Grafana dashboard that read them.
Counters and the latency histogram are fed by :meth:`Metrics.observe`, which the
daemon registers with the sync engine
(:meth:`~daemon.sync.engine.SyncEngine.on_event`): the engine
already reads and decodes every event of the log in order, so metrics see each
one once more for free rather than through a second subscription that read and
decoded the whole log again. Events after the log's head at start count
(:attr:`Metrics.started_at`; the engine's catch-up from its checkpoint is
skipped): every append counts, an ``outbox.command.issued`` ->
``delivered`` pair gives a delivery latency (log recorded times), and a
``failed``/``abandoned`` outcome counts a remote error by the ``remote_status``
the outbox records with it (the HTTP status, or ``network`` when no answer
came). Gauges that are state (each desk's health, outbox depth and oldest age,
decision lag, intake counts, the last success of each path) are read at scrape
time by :class:`_StateCollector` from the :class:`Live` objects the app hands
it; the log head for the decision lag is read from the store at each scrape
(:meth:`Metrics.scrape`), so the lag counts appends the engine has not folded yet.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from daemon.connectors.contract import Intake
from daemon.connectors.remote import RemoteHealth
from daemon.outbox.worker import Outbox
from daemon.sync.engine import SyncEngine
from eventstore import EventStore
from projections import kinds
from projections.state import Side

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
ISSUED, DELIVERED = kinds.COMMAND_ISSUED, kinds.COMMAND_DELIVERED
FAILED, ABANDONED, PARKED = kinds.COMMAND_FAILED, kinds.COMMAND_ABANDONED, kinds.COMMAND_PARKED
#: Outcomes after which a command is never delivered: its issue time is forgotten.
NEVER_DELIVERED = frozenset({ABANDONED, kinds.COMMAND_SUPERSEDED, kinds.COMMAND_SKIPPED})
#: The desks' client names, as the side labels say them.
SIDES = {"connectwise": "cw", "soc": "soc"}
#: The ``path`` label of each desk's intake in ``socbridge_last_success_timestamp_seconds``.
INTAKE_PATHS: dict[Side, str] = {"cw": "callback", "soc": "webhook"}


def build_version() -> str:
    """socbridge's version as installed (the package metadata)."""
    try:
        return version("socbridge")
    except PackageNotFoundError:
        return "unknown"


@dataclass
class Live:
    """The running components ``/metrics`` reads at scrape time (absent until started)."""

    engine: SyncEngine | None = None
    outbox: Outbox | None = None
    #: Each desk's health, as its client's last request found it.
    remotes: dict[Side, RemoteHealth] = field(default_factory=dict)
    intakes: dict[Side, Intake] = field(default_factory=dict)


def _ts(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


class Metrics:
    """The daemon's metrics; ``sources`` gives live state at scrape time."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)
        Gauge(
            "socbridge_build_info",
            "Always 1; the version label says which socbridge runs.",
            ["version"],
            registry=self.registry,
        ).labels(build_version()).set(1)
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
        self.remote_request_errors = Counter(
            "socbridge_remote_request_errors",
            "HTTP requests to each desk that it failed (every attempt): no answer "
            "(status network), credentials refused (401, 403), throttled (429) or a server "
            "error (5xx). Over socbridge_remote_requests_total: the error ratio.",
            ["side", "status"],
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
        self.poll_changes = Counter(
            "socbridge_poll_changes",
            "Tickets and notes a reconciliation pass recorded (changes the desk's callbacks "
            "or webhooks had not brought), by side.",
            ["side"],
            registry=self.registry,
        )
        for side in INTAKE_PATHS:
            self.poll_changes.labels(side)  # present at 0 from the start, for rate()
        self.last_reconciliation: dict[str, float] = {}
        #: (side, path) -> Unix time of the last success: ``poll`` (a completed pass) and
        #: ``delivery`` (a command delivered); the intakes keep their own (see _StateCollector).
        self.last_success: dict[tuple[str, str], float] = {}
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

    def reconciled(self, side: str, changes: int = 0) -> None:
        """A reconciliation pass completed on ``side``, recording ``changes`` tickets and notes."""
        now = time.time()
        self.last_reconciliation[side] = now
        self.last_success[(side, "poll")] = now
        self.poll_changes.labels(side).inc(changes)

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
            side = str(event.data.get("kind", "?")).split(".", 1)[0]
            self.last_success[(side, "delivery")] = _ts(event.recorded_at)
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

    def remote_request_failed(self, remote: str, status: str) -> None:
        """One HTTP attempt the desk failed (the clients' ``on_error``)."""
        self.remote_request_errors.labels(SIDES.get(remote, remote), status).inc()

    async def start(self, store: EventStore) -> None:
        """Count from the log's current end on (call once the log is open)."""
        self.started_at = self.head = await store.last_position()

    async def scrape(self, store: EventStore) -> bytes:
        """The exposition, with the log head read now (one read per scrape)."""
        self.head = max(self.head, await store.last_position())
        return self.exposition()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


StateFn = Callable[[], Live]


class _StateCollector(Collector):
    """Reads live state at scrape time through ``source`` (set by the app)."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self.source: StateFn | None = None

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        live = self.source() if self.source is not None else Live()
        yield from self._outbox(live)
        yield from self._sync(live.engine)
        yield from self._desks(live)

    def _outbox(self, live: Live) -> Iterator[Any]:
        engine, metrics = live.engine, self.metrics
        commands = list(engine.state.outbox.values()) if engine is not None else []
        yield GaugeMetricFamily(
            "socbridge_outbox_depth",
            "Commands issued and not yet delivered or abandoned.",
            value=len(commands),
        )
        pending = GaugeMetricFamily(
            "socbridge_outbox_pending",
            "Commands issued and not yet delivered or abandoned, by the desk they go to "
            "(parked and held ones included).",
            labels=["side"],
        )
        by_side = {side: 0 for side in INTAKE_PATHS}
        for command in commands:
            by_side[command.target] += 1
        for side, count in by_side.items():
            pending.add_metric([side], count)
        yield pending
        yield GaugeMetricFamily(
            "socbridge_parked_commands",
            "Commands a remote refused for good, waiting for socbridge retry or skip.",
            value=len(engine.state.parked()) if engine is not None else 0,
        )
        oldest = GaugeMetricFamily(
            "socbridge_outbox_oldest_age_seconds",
            "Age of the oldest pending command that should be going out, by the desk it "
            "goes to (0: none; parked lanes and held tenants excluded, as /readyz counts). "
            "Commands issued before this process started count from its start.",
            labels=["side"],
        )
        if live.outbox is not None:
            ages = live.outbox.oldest_waiting_by_side(metrics.issued_at, metrics.process_started)
            for side, age in ages.items():
                oldest.add_metric([side], age)
        yield oldest

    def _sync(self, engine: SyncEngine | None) -> Iterator[Any]:
        lag = max(0, self.metrics.head - engine.state.position) if engine is not None else 0
        yield GaugeMetricFamily(
            "socbridge_decision_lag_events",
            "Events of the log sync has still to decide: the log's head position minus "
            "the sync engine's position.",
            value=lag,
        )
        yield GaugeMetricFamily(
            "socbridge_projection_lag_events",
            "Deprecated: the same as socbridge_decision_lag_events (the old name).",
            value=lag,
        )
        yield CounterMetricFamily(
            "socbridge_sync_decided_again",
            "Inputs decided again because the log moved on before their decisions were "
            "appended (a delivery or callback landed first).",
            value=engine.raced if engine is not None else 0,
        )
        yield CounterMetricFamily(
            "socbridge_sync_commits",
            "Appends of sync's decisions (each one commit); with socbridge_sync_inputs_decided "
            "it gives the inputs decided per commit.",
            value=engine.commits if engine is not None else 0,
        )
        yield CounterMetricFamily(
            "socbridge_sync_inputs_decided",
            "Inputs whose decisions sync appended.",
            value=engine.inputs_decided if engine is not None else 0,
        )

    def _desks(self, live: Live) -> Iterator[Any]:
        up = GaugeMetricFamily(
            "socbridge_remote_up",
            "1 while the desk answers, as its last request found it; 0 while it is "
            "unreachable, answers 5xx or refuses the credentials.",
            labels=["side"],
        )
        for side, health in sorted(live.remotes.items()):
            up.add_metric([side], 1 if health.healthy else 0)
        yield up
        success = GaugeMetricFamily(
            "socbridge_last_success_timestamp_seconds",
            "Unix time of the last success per side and path: callback (ConnectWise) or "
            "webhook (SOC) recorded, poll (reconciliation pass completed), delivery (command "
            "delivered). Absent until the first since start.",
            labels=["side", "path"],
        )
        times = dict(self.metrics.last_success)
        for desk, intake in live.intakes.items():
            if intake.last_accepted is not None:
                times[(desk, INTAKE_PATHS[desk])] = intake.last_accepted
        for (where, path), at in sorted(times.items()):
            success.add_metric([where, path], at)
        yield success
        last = GaugeMetricFamily(
            "socbridge_last_reconciliation_timestamp_seconds",
            "Unix time of the last completed poll (reconciliation) per side; the same as "
            'socbridge_last_success_timestamp_seconds{path="poll"}.',
            labels=["side"],
        )
        for polled, at in sorted(self.metrics.last_reconciliation.items()):
            last.add_metric([polled], at)
        yield last
        intake_requests = CounterMetricFamily(
            "socbridge_intake_requests",
            "Callbacks/webhooks handled by the intakes, by route and outcome.",
            labels=["route", "outcome"],
        )
        for side, intake in sorted(live.intakes.items()):
            route = "connectwise" if side == "cw" else "soc"
            for outcome, count in sorted(intake.counts.items()):
                intake_requests.add_metric([route, outcome], count)
        yield intake_requests
