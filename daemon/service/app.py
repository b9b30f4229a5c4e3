"""The daemon's wiring: one aiohttp application, one ``cleanup_ctx`` per component.

Start order (and, reversed, stop order) is visible here in one place: the
secrets (read first, so a start that fails on one appends nothing), the
event log (where the applied config is recorded), the remote clients, the
sync engine, the outbox, the pollers, and the remote hooks. Routes are
registered up front (aiohttp freezes the router at start) and look up their
handler in the application state, which the contexts fill in as they start.
"""

from __future__ import annotations

import asyncio
import functools
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import structlog
from aiohttp import web

from daemon.connectors.connectwise import install as cw_install
from daemon.connectors.connectwise.client import ConnectWiseClient
from daemon.connectors.connectwise.desk import ConnectWiseDesk
from daemon.connectors.connectwise.intake import CallbackIntake
from daemon.connectors.connectwise.poller import ConnectWisePoller
from daemon.connectors.connectwise.settings import ApiKeys
from daemon.connectors.connectwise.signing import SigningKeyCache
from daemon.connectors.contract import Desk, Intake, PollReport, RemoteError
from daemon.connectors.polling import BasePoller
from daemon.connectors.remote import RemoteClient
from daemon.connectors.soc import install as soc_install
from daemon.connectors.soc.client import SocClient
from daemon.connectors.soc.desk import SocDesk
from daemon.connectors.soc.intake import WebhookIntake
from daemon.connectors.soc.poller import SocPoller
from daemon.console.activity import Activity
from daemon.console.auth import Tokens
from daemon.console.server import start_console
from daemon.console.sources import Bridge, DeskHealth
from daemon.outbox.worker import Outbox
from daemon.service.anchoring import Anchoring
from daemon.service.applied import record_applied
from daemon.service.config import Config, config_hash
from daemon.service.guard import guard_middleware
from daemon.service.metrics import CONTENT_TYPE, Live, Metrics
from daemon.service.secrets import Secret, load_secret
from daemon.service.supervisor import Supervisor
from daemon.service.writable import RETRY_AFTER_S, LogWritable
from daemon.sync.engine import SyncEngine
from daemon.sync.rules import rules_from_config
from daemon.sync.tenants import TenantDirectory
from eventstore import DatabaseUnavailableError, EventStore, utc_now
from projections.state import Side

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Applied:
    """The configuration in effect now (a successful reload replaces it) and its file."""

    config: Config
    path: Path | None


CONFIG = web.AppKey("config", Config)
STORE = web.AppKey("store", EventStore)
SESSION = web.AppKey("session", aiohttp.ClientSession)
CW_CLIENT = web.AppKey("cw_client", ConnectWiseClient)
SOC_CLIENT = web.AppKey("soc_client", SocClient)
#: Each desk as the outbox sees it, its intake and its poller (one of each per side).
DESKS = web.AppKey("desks", dict[Side, Desk])
INTAKES = web.AppKey("intakes", dict[Side, Intake])
POLLERS = web.AppKey("pollers", dict[Side, BasePoller])
ENGINE = web.AppKey("engine", SyncEngine)
OUTBOX = web.AppKey("outbox", Outbox)
STOP = web.AppKey("stop", asyncio.Event)
METRICS = web.AppKey("metrics", Metrics)
#: Set once intake, sync and outbox all run (systemd READY=1 is sent then).
RUNNING = web.AppKey("running", asyncio.Event)
APPLIED = web.AppKey("applied", Applied)
#: Restarts the outbox and the pollers when they raise (sync is not: see _sync_ctx).
SUPERVISOR = web.AppKey("supervisor", Supervisor)
WRITABLE = web.AppKey("writable", LogWritable)
TENANTS = web.AppKey("tenants", TenantDirectory)
#: The console's listening socket when ``socbridge run`` bound it before the start (a taken
#: port is refused before the log is opened); without it the console binds its own.
CONSOLE_SOCKET = web.AppKey("console_socket", socket.socket)


@dataclass(frozen=True)
class Secrets:
    """The remote credentials, read before the log is opened (see :func:`_secrets_ctx`)."""

    cw_keys: ApiKeys
    soc_token: Secret
    #: The console's tokens (``[admin] token``), when it has any.
    console_tokens: Tokens | None = None


SECRETS = web.AppKey("secrets", Secrets)
ACCEPT_BROKEN_CHAIN = web.AppKey("accept_broken_chain", bool)
ANCHORING = web.AppKey("anchoring", Anchoring)

#: How long a stop waits, at most, for sync to decide what the log already holds.
DRAIN_ON_STOP_S = 5.0


async def _secrets_ctx(app: web.Application) -> AsyncIterator[None]:
    # First: a start that fails on a missing or unreadable secret appends nothing.
    config = app[CONFIG]
    admin = config.admin
    tokens = Tokens.load(admin.token) if admin is not None and admin.token is not None else None
    app[SECRETS] = Secrets(
        config.connectwise.load_keys(), load_secret(config.soc.api_token), tokens
    )
    yield


async def _store_ctx(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    store = await EventStore.open(config.store.path, synchronous=config.store.synchronous)
    anchoring = Anchoring(store, config.store.anchors, config.store.anchor_interval_seconds)
    try:
        # A log edited since its last anchor refuses the start (unless accepted, recorded).
        await anchoring.check(accept_broken=app[ACCEPT_BROKEN_CHAIN])
    except BaseException:
        await store.close()
        raise
    app[STORE] = store
    app[ANCHORING] = anchoring
    # Events appended from here on are counted (fed by the sync engine, _sync_ctx).
    await app[METRICS].start(app[STORE])
    anchoring.start()
    yield
    # Last out (cleanup runs in reverse): the head anchored is where this run left the log.
    await anchoring.stop()
    await app[STORE].close()


async def _applied_ctx(app: web.Application) -> AsyncIterator[None]:
    # Recorded before sync loads, so the engine folds it before any decision.
    applied = app[APPLIED]
    recorded = await record_applied(app[STORE], applied.config, applied.path, "start")
    structlog.get_logger("socbridge").info(
        "config.applied",
        hash=config_hash(applied.config),
        path=str(applied.path),
        recorded=recorded is not None,  # False: same config as last applied, not repeated
    )
    # The start's anchor: the log as this run found it, with its applied config (a new
    # log has a head from here on).
    await app[ANCHORING].anchor("start")
    yield


async def _clients_ctx(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    session = aiohttp.ClientSession()
    app[SESSION] = session
    try:
        secrets = app[SECRETS]
        # A desk down at start is no reason to stop: the look-up is retried before use.
        app[CW_CLIENT] = await ConnectWiseClient.connect(
            config.connectwise, secrets.cw_keys, session, defer_lookup=True
        )
        app[SOC_CLIENT] = SocClient.from_settings(config.soc, secrets.soc_token, session=session)
        for client in (app[CW_CLIENT], app[SOC_CLIENT]):
            client.remote.on_request = app[METRICS].remote_request  # the API budget
            client.remote.on_error = app[METRICS].remote_request_failed
        desks: dict[Side, Desk] = {
            "cw": ConnectWiseDesk(app[CW_CLIENT]),
            "soc": SocDesk(app[SOC_CLIENT]),
        }
        app[DESKS] = desks
    except BaseException:
        await session.close()
        raise
    yield
    await app[CW_CLIENT].close()
    await app[SOC_CLIENT].close()
    await session.close()


async def _sync_ctx(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    engine = SyncEngine(
        app[STORE], rules_from_config(config), checkpoint_every=config.sync.checkpoint_every
    )
    await engine.load()
    # The engine reads and decodes every event anyway: metrics count from there.
    engine.on_event(app[METRICS].observe)
    engine.on_event(lambda _event: app[WRITABLE].written())
    app[ENGINE] = engine
    app[TENANTS] = TenantDirectory(engine)
    app[TENANTS].on_enabled(lambda tenant: _reread_tenant(app, tenant))
    desks: dict[Side, Desk] = app[DESKS]
    outbox = Outbox(
        app[STORE],
        engine,
        desks,
        max_delay_s=config.outbox.max_backoff_seconds,
        reobserve=functools.partial(_reobserve, app),
    )
    app[OUTBOX] = outbox
    supervisor = app[SUPERVISOR]
    supervisor.spawn("sync", engine.run)
    supervisor.spawn("outbox", outbox.run)
    yield
    # Intake and pollers have stopped (later contexts unwind first); stop the outbox,
    # then let sync decide what the log already holds, so the checkpoint it saves on
    # the way out is at the log's end. A stop never waits longer than DRAIN_ON_STOP_S:
    # whatever is left is folded and decided again at the next start.
    await supervisor.stop("outbox")
    if "sync" not in supervisor.down:
        try:
            await asyncio.wait_for(engine.drain(), DRAIN_ON_STOP_S)
        except TimeoutError:
            structlog.get_logger("socbridge.sync").warning(
                "sync.stopped_before_settled", waited_s=DRAIN_ON_STOP_S
            )
    await supervisor.stop("sync")


def _reconciled(metrics: Metrics, side: Side, report: PollReport) -> None:
    metrics.reconciled(side, report.tickets_recorded + report.notes_recorded)


def _reobserve(app: web.Application, side: Side, ticket_id: int, tenant: str | None) -> None:
    """Read a ticket again: the outbox found it changed behind its back, or its tenant's
    sync came back on. Its poller does that, once it runs."""
    poller = app[POLLERS].get(side)
    if poller is not None:
        poller.kick(ticket_id, tenant)


def _reread_tenant(app: web.Application, tenant: str) -> None:
    """A tenant's sync came back on: re-read its linked tickets on both sides, so what
    changed while it was off is observed now (tickets created meanwhile are picked up
    at their next change, as any ticket first seen then)."""
    for link in list(app[ENGINE].state.links.values()):
        if link.tenant == tenant and link.state == "linked":
            for side in ("cw", "soc"):
                ticket_id = link.ticket_id(side)
                if ticket_id is not None:
                    _reobserve(app, side, ticket_id, tenant)


async def _intake_ctx(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    store = app[STORE]
    # Live maps: a tenant switched off (or removed by a reload) is absent from the next lookup.
    by_company = app[TENANTS].by("cw_company_id")
    by_organization = app[TENANTS].by("soc_organization_id")
    cw_poller = ConnectWisePoller(store, app[CW_CLIENT], config.connectwise, by_company)
    pollers: dict[Side, BasePoller] = {
        "cw": cw_poller,
        "soc": SocPoller(store, app[SOC_CLIENT], config.soc, by_organization, utc_now),
    }
    keys = SigningKeyCache(
        app[SESSION],
        client_id=config.connectwise.client_id,
        ttl=config.connectwise.signing_key_ttl_seconds,
    )
    intakes: dict[Side, Intake] = {
        "cw": CallbackIntake(store, config.connectwise, by_company, keys, cw_poller.kick_notes),
        "soc": WebhookIntake(store, config.soc, by_organization, utc_now, kick=pollers["soc"].kick),
    }
    app[INTAKES] = intakes
    app[POLLERS].update(pollers)
    for side, poller in pollers.items():
        poller.on_pass(functools.partial(_reconciled, app[METRICS], side))
        # Writing resumed: read both desks now for what changed while it was stopped.
        app[WRITABLE].on_read_desks(poller.poll_now)
        poller.on_unwritable(functools.partial(app[WRITABLE].failed, refused=False))
    stop = asyncio.Event()
    app[STOP] = stop
    supervisor = app[SUPERVISOR]
    supervisor.spawn("poller-connectwise", functools.partial(pollers["cw"].run, stop))
    supervisor.spawn("poller-soc", functools.partial(pollers["soc"].run, stop))
    yield
    stop.set()
    await app[WRITABLE].stop()
    await supervisor.stop("poller-connectwise", "poller-soc")


#: Backoff of the background hook install while a remote does not answer: 1 s doubling to 5 min.
HOOKS_RETRY_FIRST_S, HOOKS_RETRY_MAX_S = 1.0, 300.0
#: How long the start waits for the first install before serving without it.
HOOKS_FIRST_TRY_S = 5.0


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


class HookUpkeep:
    """Installs both desks' hooks in the background, retrying with backoff until both are
    in place: a remote that is down at start does not stop the daemon from serving."""

    def __init__(self, app: web.Application) -> None:
        self._app = app
        self.installed = asyncio.Event()
        self.last_error: str | None = None

    def start(self) -> None:
        # Supervised: an unexpected error restarts the retries (the remote's errors are
        # retried here, with their own backoff).
        self._app[SUPERVISOR].spawn("hooks", self._run)

    async def stop(self) -> None:
        await self._app[SUPERVISOR].stop("hooks")

    async def install_once(self) -> None:
        app, config = self._app, self._app[CONFIG]
        # Both sides at once: each install is a few round trips to its own API.
        cw = asyncio.create_task(cw_install.install(app[CW_CLIENT], config.connectwise))
        try:
            soc_state = await soc_install.install(app[SOC_CLIENT], config.soc)
        except BaseException:
            cw.cancel()
            await asyncio.gather(cw, return_exceptions=True)
            raise
        cw_state = await cw
        structlog.get_logger("socbridge").info(
            "hooks.installed", connectwise=cw_state.describe(), soc=soc_state.healthy
        )

    async def _run(self) -> None:
        log = structlog.get_logger("socbridge")
        delay = HOOKS_RETRY_FIRST_S
        while True:
            await asyncio.sleep(delay)
            delay = min(delay * 2, HOOKS_RETRY_MAX_S)
            try:
                await self.install_once()
            except (RemoteError, OSError, TimeoutError) as exc:
                reason = _reason(exc)
                if reason != self.last_error:  # one line per change of reason, not per retry
                    log.error("hooks.install_failed", reason=reason, retry_in_s=delay)
                self.last_error = reason
                continue
            self.last_error = None
            self.installed.set()
            return


HOOKS = web.AppKey("hooks", HookUpkeep)


async def _hooks_ctx(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    log = structlog.get_logger("socbridge")
    upkeep = HookUpkeep(app)
    app[HOOKS] = upkeep
    if config.server.install_remote_hooks and app[ENGINE].state.removed:
        log.warning("hooks.not_installed", reason="the integration was removed (socbridge remove)")
        upkeep.installed.set()
    elif config.server.install_remote_hooks:
        try:
            # One bounded try in line, so a healthy start is READY with its hooks in place.
            async with asyncio.timeout(HOOKS_FIRST_TRY_S):
                await upkeep.install_once()
            upkeep.installed.set()
        except (RemoteError, OSError, TimeoutError) as exc:
            # The bound's own timeout says nothing: name the bound.
            timed_out = isinstance(exc, TimeoutError) and not str(exc)
            upkeep.last_error = (
                f"no answer within {HOOKS_FIRST_TRY_S:g} s" if timed_out else _reason(exc)
            )
            log.error("hooks.install_failed", reason=upkeep.last_error, retry="in the background")
            upkeep.start()
    else:
        upkeep.installed.set()
    # Ready to serve without waiting for the remotes: what arrives is recorded, and
    # what needs a remote waits in the outbox (and /readyz says why).
    app[RUNNING].set()
    yield
    await upkeep.stop()


async def _console_ctx(app: web.Application) -> AsyncIterator[None]:
    """The operator console on ``[admin] listen`` (no ``[admin]`` section: none)."""
    settings = app[CONFIG].admin
    if settings is None:
        yield
        return
    metrics = app[METRICS]

    def desks() -> list[DeskHealth]:
        out = []
        clients: tuple[tuple[Side, RemoteClient, str], ...] = (
            ("cw", app[CW_CLIENT].remote, "ConnectWise"),
            ("soc", app[SOC_CLIENT].remote, "SOC desk"),
        )
        for side, remote, label in clients:
            outage = remote.health.outage
            intake = app.get(INTAKES, {}).get(side)
            out.append(DeskHealth(
                side, label, outage is None, outage.reason if outage else None,
                outage.since if outage else remote.health.up_since,
                intake.last_accepted if intake is not None else None,
                metrics.last_reconciliation.get(side), remote.limits.rate_per_second,
                remote.attempts_made, remote.has_room(),
            ))  # fmt: skip
        return out

    async def lag() -> int:
        return max(0, await app[STORE].last_position() - app[ENGINE].state.position)

    bridge = Bridge(
        store=app[STORE],
        state=lambda: app[ENGINE].state,
        config=lambda: app[APPLIED].config,
        desks=desks,
        oldest_waiting=lambda: app[OUTBOX].oldest_waiting_by_side(
            metrics.issued_at, metrics.process_started
        ),
        tenant_enabled=lambda name: app[ENGINE].tenant_enabled(name),
        reread=functools.partial(_reobserve, app),
        lag=lag,
        activity=Activity(),
    )
    app[ENGINE].on_event(bridge.activity.observe)
    runner = await start_console(
        bridge, settings, app[SECRETS].console_tokens, app.get(CONSOLE_SOCKET)
    )
    yield
    await runner.cleanup()


def _intake(side: Side) -> Handler:
    """The route handler of a desk's intake (mounted before the intake exists). A log that
    cannot be written (disk full, I/O error) is answered 503 with Retry-After: the desks
    retry, and nothing acknowledged is lost."""

    async def handle(request: web.Request) -> web.StreamResponse:
        try:
            return await request.app[INTAKES][side].handle(request)
        except DatabaseUnavailableError as exc:
            request.app[WRITABLE].failed(str(exc))
            return web.json_response(
                {"error": "the event log cannot be written now; retry later"},
                status=503,
                headers={"Retry-After": str(RETRY_AFTER_S)},
            )

    return handle


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "alive"})


async def _readyz(request: web.Request) -> web.Response:
    engine = request.app.get(ENGINE)
    ready = engine is not None and engine.ready.is_set()
    reasons = [] if ready else ["starting: the sync engine has not caught up with the log"]
    for label, key in (("ConnectWise", CW_CLIENT), ("SOC desk", SOC_CLIENT)):
        client = request.app.get(key)
        described = client.remote.health.describe(label) if client is not None else None
        if described is not None:
            reasons.append(described)
    health = request.app[APPLIED].config.health
    outbox, store, metrics = request.app.get(OUTBOX), request.app.get(STORE), request.app[METRICS]
    if outbox is not None:
        waited = outbox.oldest_waiting_s(metrics.issued_at, metrics.process_started)
        if waited > health.max_pending_age_seconds:
            reasons.append(
                f"a command has waited {waited:.0f} s to go out "
                f"(over [health] max_pending_age_seconds = {health.max_pending_age_seconds:g})"
            )
    if engine is not None and store is not None:
        lag = await store.last_position() - engine.state.position
        if lag > health.max_decision_lag_events:
            reasons.append(
                f"sync has {lag} events of the log still to decide "
                f"(over [health] max_decision_lag_events = {health.max_decision_lag_events})"
            )
    reasons.extend(request.app[SUPERVISOR].reasons())
    unwritable = request.app[WRITABLE].describe()
    if unwritable is not None:
        reasons.append(unwritable)
    hooks = request.app.get(HOOKS)
    if hooks is not None and not hooks.installed.is_set():
        reasons.append(f"remote hooks not installed yet: {hooks.last_error or 'installing'}")
    ready = not reasons
    body = {
        "ready": ready,
        "reasons": reasons,
        "position": engine.state.position if engine else 0,
        "outbox_depth": len(engine.state.outbox) if engine else 0,
        "parked_commands": (len(engine.state.parked()) if engine else 0),
    }
    return web.json_response(body, status=200 if ready else 503)


async def _metrics(request: web.Request) -> web.Response:
    store = request.app.get(STORE)
    metrics = request.app[METRICS]
    body = await metrics.scrape(store) if store is not None else metrics.exposition()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


def _live_state(app: web.Application) -> Live:
    """What /metrics reads at scrape time (engine, outbox, each desk's health, intakes)."""
    live = Live(engine=app.get(ENGINE), outbox=app.get(OUTBOX), intakes=app.get(INTAKES, {}))
    cw, soc = app.get(CW_CLIENT), app.get(SOC_CLIENT)
    if cw is not None:
        live.remotes["cw"] = cw.remote.health
    if soc is not None:
        live.remotes["soc"] = soc.remote.health
    return live


def build_app(
    config: Config, config_path: Path | None = None, *, accept_broken_chain: bool = False
) -> web.Application:
    """The daemon as an aiohttp application; start it with an AppRunner.

    ``config_path`` is where ``config`` was read from (recorded with it, re-read on reload);
    ``accept_broken_chain`` starts on a log that fails its check at start, recording that.
    """
    metrics = Metrics()
    applied = Applied(config, config_path)
    app = web.Application(
        client_max_size=config.server.max_body_bytes,
        middlewares=[
            guard_middleware(
                lambda: applied.config.server.allowed_sources,
                lambda: applied.config.server.admin_sources,
                on_refused=metrics.refuse,
                on_handled=metrics.handled,
            )
        ],
    )
    app[CONFIG] = config
    app[ACCEPT_BROKEN_CHAIN] = accept_broken_chain
    app[APPLIED] = applied
    app[METRICS] = metrics
    app[RUNNING] = asyncio.Event()
    app[SUPERVISOR] = Supervisor(metrics.task_restarts)
    app[WRITABLE] = LogWritable()
    metrics.state.source = lambda: _live_state(app)
    app[POLLERS] = {}
    app.router.add_post(CallbackIntake.path, _intake("cw"))
    app.router.add_post(WebhookIntake.path, _intake("soc"))
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    app.router.add_get("/metrics", _metrics)
    app.cleanup_ctx.extend(
        [
            _secrets_ctx,
            _store_ctx,
            _applied_ctx,
            _clients_ctx,
            _sync_ctx,
            _intake_ctx,
            _hooks_ctx,
            _console_ctx,
        ]
    )
    return app
