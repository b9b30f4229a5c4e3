"""The sync test (R12): a real round trip for one tenant through the running daemon.

The test acts on both remote systems with the configuration's own API
credentials, as the SOC platform and the MSP would, and watches for the
running daemon's effect on the other side: a SOC ticket becomes a ConnectWise
ticket, a SOC reply a ConnectWise note, a ConnectWise note a SOC comment, a
routed ConnectWise ticket a SOC ticket, and a solve on either side a solve on
the other. Each outcome is read back from the remote API, and the link from
the event log. Waiting is event driven: a step re-checks whenever the log
records something about its tickets, and polls the API every ``poll_s`` in
case the log is quiet, until its deadline.

Every step is an event in the log (``admin.sync_test.*``, one correlation id
per run, the tenant set, the reason in ``data``), appended through the event
store beside the running daemon (WAL; the busy timeout covers the second
writer). The test tickets are kept, solved, for the record.

ConnectWise writes made with the API member's keys are socbridge's own to the
daemon (R8: its own notes never go back to the SOC), so the ConnectWise ->
SOC note needs a member who works tickets: ``technician`` keys. Without them
that one step fails and says so; every other step runs with the API member.
"""

from __future__ import annotations

import asyncio
import re
import ssl
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from ipaddress import ip_address
from typing import Any, Literal

import aiohttp

from daemon.connectors.connectwise.client import ConnectWiseClient, note_section
from daemon.connectors.connectwise.errors import ConnectWiseError
from daemon.connectors.connectwise.settings import ApiKeys
from daemon.connectors.contract import RemoteError
from daemon.connectors.soc.client import SocClient
from daemon.connectors.soc.errors import SocError
from daemon.service.config import Config, TenantSettings
from daemon.service.secrets import SecretError, load_secret
from daemon.sync.vocabulary import cw_external_ref, soc_external_id
from eventstore import EventStore, NewEvent, RecordedEvent, new_event_id
from projections import kinds
from projections.fold import apply
from projections.persist import ProjectionStore

Status = Literal["passed", "failed", "skipped"]
Json = dict[str, Any]

SOURCE = "socbridge.sync_test"
#: Where the daemon records each configuration it applies (daemon.service.applied).
CONFIG_STREAM = "admin:config"
EMAIL = re.compile(r"^[^@\s<>(),;:\"]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+$")
REMOTE_ERRORS = (ConnectWiseError, SocError, RemoteError, aiohttp.ClientError, TimeoutError)
#: The ticket each step's event is about (so 'socbridge events --ticket' shows it).
STEP_TICKET = {
    "create_soc_to_cw": "soc_a",
    "reply_soc_to_cw": "soc_a",
    "reply_cw_to_soc": "soc_a",
    "create_cw_to_soc": "cw_b",
    "solve_soc_to_cw": "soc_a",
    "solve_cw_to_soc": "cw_b",
}


class UsageError(Exception):
    """The command cannot run as asked (unknown tenant, bad email): exit 2."""


class StepFailed(Exception):
    """A step did not hold; the message is the reason shown and recorded."""


@dataclass(frozen=True)
class Step:
    name: str
    title: str
    needs: tuple[str, ...]


STEPS = (
    Step("preflight", "preflight", ()),
    Step("create_soc_to_cw", "create SOC -> ConnectWise", ("preflight",)),
    Step("reply_soc_to_cw", "reply SOC -> ConnectWise", ("create_soc_to_cw",)),
    Step("reply_cw_to_soc", "reply ConnectWise -> SOC", ("create_soc_to_cw",)),
    Step("create_cw_to_soc", "create ConnectWise -> SOC", ("preflight",)),
    Step("solve_soc_to_cw", "solve SOC -> ConnectWise", ("create_soc_to_cw",)),
    Step("solve_cw_to_soc", "solve ConnectWise -> SOC", ("create_cw_to_soc",)),
)


@dataclass
class StepResult:
    step: str
    title: str
    status: Status
    reason: str
    duration_s: float
    tickets: dict[str, int] = field(default_factory=dict)

    def to_json(self, run_id: str, tenant: str) -> Json:
        return {
            "type": "step",
            "run_id": run_id,
            "tenant": tenant,
            "step": self.step,
            "title": self.title,
            "status": self.status,
            "duration_s": round(self.duration_s, 3),
            "reason": self.reason,
            "tickets": self.tickets,
        }


@dataclass
class Report:
    run_id: str
    tenant: str
    recipient: str
    steps: list[StepResult] = field(default_factory=list)
    cleanup: list[str] = field(default_factory=list)
    tickets: dict[str, int] = field(default_factory=dict)
    duration_s: float = 0.0
    interrupted: bool = False

    def count(self, status: Status) -> int:
        return sum(1 for s in self.steps if s.status == status)

    @property
    def ok(self) -> bool:
        return not self.interrupted and all(s.status == "passed" for s in self.steps)

    def to_json(self) -> Json:
        return {
            "type": "summary",
            "run_id": self.run_id,
            "tenant": self.tenant,
            "recipient": self.recipient,
            "ok": self.ok,
            "passed": self.count("passed"),
            "failed": self.count("failed"),
            "skipped": self.count("skipped"),
            "interrupted": self.interrupted,
            "duration_s": round(self.duration_s, 3),
            "tickets": self.tickets,
            "cleanup": self.cleanup,
        }


def check_usage(config: Config, tenant: str, recipient: str) -> TenantSettings:
    """The tenant's settings, or UsageError naming what is wrong with the request."""
    found = next((t for t in config.tenants if t.name == tenant), None)
    if found is None:
        known = ", ".join(t.name for t in config.tenants)
        raise UsageError(f"unknown tenant {tenant!r}; the configuration has: {known}")
    if len(recipient) > 254 or not EMAIL.match(recipient):
        raise UsageError(f"--recipient {recipient!r} is not a well-formed email address")
    return found


def readyz_url(config: Config) -> tuple[str, ssl.SSLContext | None]:
    """Where this configuration's daemon answers /readyz from this host, and how to trust it."""
    server = config.server
    if server.admin_port is not None:
        return f"http://{_local(server.admin_host)}:{server.admin_port}/readyz", None
    if server.tls_cert is None:
        return f"http://{_local(server.host)}:{server.port}/readyz", None
    # Our own daemon on our own host: trust exactly its configured certificate.
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    context.load_verify_locations(cafile=str(server.tls_cert))
    context.check_hostname = False
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    return f"https://{_local(server.host)}:{server.port}/readyz", context


def _local(host: str) -> str:
    if host in ("", "0.0.0.0"):  # noqa: S104 - mapping a wildcard bind to loopback
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    try:
        return f"[{host}]" if ip_address(host).version == 6 else host
    except ValueError:
        return host


def _error(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class SyncTest:
    """One sync test run; :meth:`run` plays every step and returns the report."""

    def __init__(
        self,
        config: Config,
        tenant: str,
        recipient: str,
        *,
        timeout_s: float = 120.0,
        poll_s: float = 2.0,
        technician: ApiKeys | None = None,
        cleanup: bool = True,
        on_step: Callable[[StepResult], None] | None = None,
    ) -> None:
        self.config = config
        self.tenant = check_usage(config, tenant, recipient)
        self.recipient = recipient
        self.timeout_s = timeout_s
        self.poll_s = poll_s
        self.technician = technician
        self.do_cleanup = cleanup
        self.on_step = on_step or (lambda _r: None)
        self.run_id = new_event_id()
        self.marker = f"socbridge sync test {self.run_id}"
        self.report = Report(self.run_id, tenant, recipient)
        self.tickets = self.report.tickets  # soc_a, cw_a, cw_b, soc_b
        cw = config.connectwise
        self.note_type_used = self.tenant.note_type_used or cw.note_type_used
        sent = self.tenant.note_types_sent
        self.note_types_sent = tuple(sent if sent is not None else cw.note_types_sent)
        self._store: EventStore | None = None
        self._started: RecordedEvent | None = None
        self._seen: list[RecordedEvent] = []
        self._issued: dict[str, Json] = {}
        self._keys: set[str] = set()
        self._wake = asyncio.Event()
        self._cw: ConnectWiseClient | None = None
        self._soc: SocClient | None = None
        self._actor: ConnectWiseClient | None = None  # ConnectWise writes, as the MSP
        self._session: aiohttp.ClientSession | None = None
        self._blocked: dict[str, str] = {}
        self._since = 0
        self._daemon_down = False
        self._steps: dict[str, Callable[[], Awaitable[str]]] = {
            "preflight": self._preflight,
            "create_soc_to_cw": self._create_soc_to_cw,
            "reply_soc_to_cw": self._reply_soc_to_cw,
            "reply_cw_to_soc": self._reply_cw_to_soc,
            "create_cw_to_soc": self._create_cw_to_soc,
            "solve_soc_to_cw": self._solve_soc_to_cw,
            "solve_cw_to_soc": self._solve_cw_to_soc,
        }

    # ------------------------------------------------------------------ running

    @property
    def cw(self) -> ConnectWiseClient:
        """The ConnectWise client (connected by the preflight step)."""
        if self._cw is None:
            raise RuntimeError("the ConnectWise client is not connected yet")
        return self._cw

    @property
    def soc(self) -> SocClient:
        """The SOC client (connected by the preflight step)."""
        if self._soc is None:
            raise RuntimeError("the SOC client is not connected yet")
        return self._soc

    async def run(self) -> Report:
        began = time.monotonic()
        store = await EventStore.open(
            self.config.store.path, synchronous=self.config.store.synchronous
        )
        self._store = store
        try:
            self._started = await self._record(
                kinds.SYNC_TEST_STARTED,
                {
                    "run_id": self.run_id,
                    "recipient": self.recipient,
                    "timeout_s": self.timeout_s,
                    "steps": [s.name for s in STEPS],
                },
            )
            watcher = asyncio.create_task(self._watch(self._started.position + 1))
            async with aiohttp.ClientSession() as session:
                self._session = session
                try:
                    try:
                        for step in STEPS:
                            await self._run_step(step)
                    except asyncio.CancelledError:
                        # Ctrl-C (or a stop): no test ticket is left open for it.
                        self.report.interrupted = True
                    if self.do_cleanup and self.tickets:
                        await self._cleanup()
                finally:
                    watcher.cancel()
                    await asyncio.gather(watcher, return_exceptions=True)
                    for client in {self._cw, self._soc, self._actor} - {None}:
                        await client.close()  # type: ignore[union-attr]
            self.report.duration_s = time.monotonic() - began
            summary = self.report.to_json()
            del summary["type"]
            await self._record(kinds.SYNC_TEST_FINISHED, summary)
        finally:
            await store.close()
        if self.report.interrupted:
            raise asyncio.CancelledError
        return self.report

    async def _run_step(self, step: Step) -> None:
        blocked = next((self._blocked[n] for n in step.needs if n in self._blocked), None)
        self._since = len(self._seen)  # what the log says from now on is this step's
        began = time.monotonic()
        if blocked is not None:
            status: Status = "skipped"
            reason = f"needs '{blocked}', which failed"
        else:
            try:
                if self._daemon_down:
                    # Acting while the daemon is gone would only leave tickets behind.
                    await self._daemon_ready()
                    self._daemon_down = False
                reason = await self._steps[step.name]()
                status = "passed"
            except StepFailed as exc:
                status, reason = "failed", str(exc)
            except REMOTE_ERRORS as exc:
                status, reason = "failed", f"a remote call failed: {_error(exc)}"
            except SecretError as exc:
                status, reason = "failed", str(exc)
            except Exception as exc:  # reported: the run still finishes and cleans up
                status, reason = "failed", f"unexpected {_error(exc)}"
        result = StepResult(
            step.name, step.title, status, reason, time.monotonic() - began, dict(self.tickets)
        )
        if status != "passed":
            self._blocked[step.name] = blocked or step.title
        self.report.steps.append(result)
        data = result.to_json(self.run_id, self.tenant.name)
        for key in ("type", "run_id", "tenant"):
            del data[key]
        etype = kinds.SYNC_TEST_STEP_PASSED if status == "passed" else kinds.SYNC_TEST_STEP_FAILED
        await self._record(etype, data, ticket=self._step_ticket(step.name))
        self.on_step(result)

    def _step_ticket(self, step: str) -> str | None:
        key = STEP_TICKET.get(step)
        if key is None or key not in self.tickets:
            return None
        return f"{key[:-2]}:{self.tickets[key]}"

    async def _record(self, etype: str, data: Json, *, ticket: str | None = None) -> RecordedEvent:
        assert self._store is not None
        event = NewEvent(
            stream=f"admin:sync_test:{self.run_id}",
            type=etype,
            data={"run_id": self.run_id, **data},
            tenant=self.tenant.name,
            ticket=ticket,
            causation_id=self._started.event_id if self._started else None,
            correlation_id=self.run_id,
            source=SOURCE,
        )
        return (await self._store.append([event]))[0]

    # ------------------------------------------------------------- the log

    async def _watch(self, start: int) -> None:
        """Collect what the log records from now on; wake a waiting step for its tickets."""
        assert self._store is not None
        async for event in self._store.subscribe(start):
            self._seen.append(event)
            if event.type == kinds.COMMAND_ISSUED:
                self._issued[event.event_id] = event.data
            if event.ticket in self._keys or event.data.get("link_id") in self._keys:
                self._wake.set()

    def _follow(self, *keys: str) -> None:
        self._keys.update(keys)
        self._wake.set()

    def _about(self, keys: Iterable[str], *, since: int = 0) -> list[RecordedEvent]:
        wanted = set(keys)
        return [
            e for e in self._seen[since:] if e.ticket in wanted or e.data.get("link_id") in wanted
        ]

    def _linked(self, link_id: str) -> RecordedEvent | None:
        return next(
            (e for e in self._seen if e.type == kinds.LINKED and e.data.get("link_id") == link_id),
            None,
        )

    def _gave_up(self, link_id: str, kind: str, note_key: str | None = None) -> str | None:
        """Why the daemon gave up (or parked) a command of ``kind`` for the link, if it did."""
        for e in self._about([link_id], since=self._since):
            stopped = {kinds.COMMAND_ABANDONED: "gave up", kinds.COMMAND_PARKED: "parked"}
            if e.type not in stopped or e.data.get("kind") != kind:
                continue
            params = self._issued.get(e.data.get("command_id", ""), {}).get("params", {})
            if note_key is None or params.get("note_key") == note_key:
                return f"the daemon {stopped[e.type]} {kind}: {e.data.get('reason')}"
        return None

    async def _last_word(self, keys: Iterable[str]) -> str:
        """Why a step may have timed out: the daemon is gone, or the newest thing the log
        says about its tickets since the step began."""
        try:
            await self._daemon_ready()
        except StepFailed as exc:
            self._daemon_down = True
            return str(exc)
        events = [
            e for e in self._about(keys, since=self._since) if not e.type.startswith("admin.")
        ]
        if not events:
            return (
                "the daemon recorded nothing about it meanwhile: are the callback and the "
                "webhook installed (socbridge callbacks status, socbridge webhooks status), "
                "and is --timeout above the poll interval?"
            )
        e = events[-1]
        detail = e.data.get("error") or e.data.get("reason") or e.data.get("kind") or ""
        return f"last in the log: #{e.position} {e.type} {detail}".rstrip()

    async def _until(
        self, check: Callable[[], Awaitable[Any]], what: str, keys: Iterable[str]
    ) -> Any:
        """Re-check at every logged event about ``keys`` and every ``poll_s`` until
        ``check`` returns something truthy (or raises StepFailed); then return it."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_s
        keys = list(keys)
        while True:
            self._wake.clear()
            result = await check()
            if result:
                return result
            remaining = deadline - loop.time()
            if remaining <= 0:
                why = await self._last_word(keys)
                raise StepFailed(f"{what} not seen within {self.timeout_s:g} s; {why}")
            try:
                await asyncio.wait_for(self._wake.wait(), min(remaining, self.poll_s))
            except TimeoutError:
                pass

    # --------------------------------------------------------------- steps

    async def _preflight(self) -> str:
        assert self._store is not None
        tenant = self.tenant
        # The effective switch: the config's default, overridden by tenants enable/disable.
        state = await ProjectionStore(self._store).load()
        async for event in self._store.read(state.position + 1):
            apply(state, event)
        # The configured value is the one the daemon last applied (what runs), else the file's.
        applied = await self._store.last_in_stream(CONFIG_STREAM)
        running = {
            t.get("name"): t.get("sync_enabled")
            for t in (applied.data.get("tenants") or [] if applied is not None else [])
            if isinstance(t, dict)
        }
        configured = running.get(tenant.name)
        if not isinstance(configured, bool):
            configured = tenant.sync_enabled
        switched = state.tenant_switches.get(tenant.name)
        enabled = configured if switched is None else switched
        origin = (
            "the config's sync_enabled"
            if switched is None
            else "a tenants enable/disable recorded in the event log"
        )
        if not enabled:
            raise StepFailed(
                f"sync is off for tenant {tenant.name} ({origin}); nothing was created"
            )
        if state.removed:
            raise StepFailed(
                "the integration was removed (socbridge remove): the daemon does not sync"
            )
        ready = await self._daemon_ready()
        cfg, session = self.config, self._session
        assert session is not None
        try:
            self._soc = SocClient.from_settings(
                cfg.soc, load_secret(cfg.soc.api_token), session=session
            )
            await self._soc.me()
        except REMOTE_ERRORS as exc:
            raise StepFailed(f"the SOC API does not answer: {_error(exc)}") from None
        try:
            keys = cfg.connectwise.load_keys()
            self._cw = await ConnectWiseClient.connect(cfg.connectwise, keys, session)
            await self._cw.company_info_system()
        except REMOTE_ERRORS as exc:
            raise StepFailed(f"the ConnectWise API does not answer: {_error(exc)}") from None
        self._actor = self._cw
        if self.technician is not None:
            try:
                self._actor = await ConnectWiseClient.connect(
                    cfg.connectwise, self.technician, session
                )
                await self._actor.company_info_system()
            except REMOTE_ERRORS as exc:
                raise StepFailed(
                    f"ConnectWise refuses the technician keys: {_error(exc)}"
                ) from None
        return (
            f"sync on for {tenant.name} ({origin}); {ready}; "
            f"SOC and ConnectWise answer; recipient {self.recipient}"
        )

    async def _daemon_ready(self) -> str:
        url, context = readyz_url(self.config)
        timeout = aiohttp.ClientTimeout(total=min(10.0, self.timeout_s))
        assert self._session is not None
        try:
            async with self._session.get(url, ssl=context or True, timeout=timeout) as resp:
                body = await resp.json(content_type=None)
                status = resp.status
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise StepFailed(
                f"the daemon is not reachable at {url} ({_error(exc)}): start it "
                "(socbridge run --config FILE, or systemctl start socbridge)"
            ) from None
        if status == 403:
            raise StepFailed(
                f"{url} answered 403: /readyz only answers [server] admin_sources; set "
                "[server] admin_port to probe the daemon from this host"
            )
        if status != 200 or not isinstance(body, dict) or not body.get("ready"):
            raise StepFailed(f"the daemon at {url} is not ready (HTTP {status}): {body}")
        return f"daemon ready at {url}"

    async def _create_soc_to_cw(self) -> str:
        assert self._soc is not None and self._cw is not None
        tenant, cw = self.tenant, self.config.connectwise
        body = (
            f"{self.marker}: a test incident created by 'socbridge sync-test' for tenant "
            f"{tenant.name}, to check that SOC tickets reach ConnectWise. No action needed; "
            "the test solves it when done."
        )
        resp = await self._soc.remote.request(
            "POST",
            "tickets.json",
            json={
                "ticket": {
                    "subject": f"{self.marker} (SOC -> ConnectWise)",
                    "comment": {"body": body, "public": True},
                    "organization_id": tenant.soc_organization_id,
                    "requester": {"email": self.recipient, "name": self.recipient},
                    "priority": "normal",
                    "tags": ["socbridge_sync_test"],
                }
            },
            headers={"Idempotency-Key": f"sync-test-{self.run_id}"},
        )
        soc_id = int(resp.json()["ticket"]["id"])
        self.tickets["soc_a"] = soc_id
        link_id = f"soc:{soc_id}"
        self._follow(link_id)

        async def created() -> Json | None:
            if reason := self._gave_up(link_id, "cw.create_ticket"):
                raise StepFailed(reason)
            linked = self._linked(link_id)
            if linked is None:
                return None
            return await self.cw.get_ticket(int(linked.data["cw_id"]))

        what = f"a ConnectWise ticket for SOC ticket {soc_id}"
        ticket = await self._until(created, what, [link_id])
        cw_id = int(ticket["id"])
        self.tickets["cw_a"] = cw_id
        self._follow(f"cw:{cw_id}")
        company = (ticket.get("company") or {}).get("id")
        board = (ticket.get("board") or {}).get("name")
        wrong = [
            f"{name} is {got!r}, expected {want!r}"
            for name, got, want in (
                ("company", company, tenant.cw_company_id),
                ("board", board, cw.board),
                ("externalXRef", ticket.get("externalXRef"), cw_external_ref(soc_id)),
            )
            if got != want
        ]
        if self.run_id not in str(ticket.get("summary")):
            wrong.append(f"summary {ticket.get('summary')!r} lacks the run id")
        if wrong:
            raise StepFailed(
                f"ConnectWise ticket {cw_id} for SOC ticket {soc_id}: " + "; ".join(wrong)
            )
        return (
            f"SOC ticket {soc_id} (requester {self.recipient}) -> ConnectWise ticket {cw_id} "
            f"(company {company}, board {board})"
        )

    async def _reply_soc_to_cw(self) -> str:
        assert self._soc is not None and self._cw is not None
        soc_id, cw_id = self.tickets["soc_a"], self.tickets["cw_a"]
        text = f"{self.marker}: a public reply from the SOC."
        doc = await self._soc.add_comment(soc_id, text, public=True)
        comment_id = next(
            (
                e["id"]
                for e in (doc.get("audit") or {}).get("events", [])
                if e.get("type") == "Comment"
            ),
            None,
        )
        note_key = f"soc:{comment_id}"
        link_id = f"soc:{soc_id}"

        async def mirrored() -> Json | None:
            if reason := self._gave_up(link_id, "cw.add_note", note_key):
                raise StepFailed(reason)
            for note in await self.cw.list_notes(cw_id):
                if text in str(note.get("text")):
                    return note
            return None

        what = f"the SOC comment {comment_id} as a note on ConnectWise ticket {cw_id}"
        note = await self._until(mirrored, what, [link_id, f"cw:{cw_id}"])
        section = note_section(note)
        if section != self.note_type_used:
            raise StepFailed(
                f"the reply arrived as a {section} note on ConnectWise ticket {cw_id}, "
                f"expected {self.note_type_used} (note_type_used)"
            )
        return f"SOC comment {comment_id} -> {section} note {note['id']} on ConnectWise {cw_id}"

    async def _reply_cw_to_soc(self) -> str:
        soc_id, cw_id = self.tickets["soc_a"], self.tickets["cw_a"]
        if not self.note_types_sent:
            raise StepFailed(
                f"tenant {self.tenant.name} sends no note types to the SOC (note_types_sent "
                "is empty): no ConnectWise note can reach the SOC"
            )
        if self.technician is None:
            member = self.config.connectwise.api_member
            raise StepFailed(
                f"a note written with the API member's keys ({member}) is socbridge's own and "
                "is never sent to the SOC (R8); give --technician-public-key and "
                "--technician-private-key of a member who works tickets to test this direction"
            )
        assert self._soc is not None and self._actor is not None
        section = "Discussion" if "Discussion" in self.note_types_sent else self.note_types_sent[0]
        text = f"{self.marker}: a {section} note from the MSP."
        note = await self._actor.create_note(cw_id, text, section)
        note_key = f"cw:{note['id']}"
        link_id = f"soc:{soc_id}"

        async def mirrored() -> Json | None:
            for e in self._about([link_id], since=self._since):
                if e.data.get("note_key") != note_key:
                    continue
                if e.type == kinds.NOTE_SKIPPED:
                    raise StepFailed(
                        f"the daemon did not send note {note['id']}: {e.data['reason']}"
                    )
                if e.type == kinds.ECHO_RECOGNISED:
                    raise StepFailed(
                        f"the daemon took note {note['id']} for its own write (were the "
                        "technician keys the API member's?)"
                    )
            if reason := self._gave_up(link_id, "soc.add_comment", note_key):
                raise StepFailed(reason)
            for comment in await self.soc.list_comments(soc_id):
                if text in str(comment.get("body")):
                    return comment
            return None

        what = f"the ConnectWise {section} note {note['id']} as a comment on SOC ticket {soc_id}"
        comment = await self._until(mirrored, what, [link_id, f"cw:{cw_id}"])
        visibility = "public" if comment.get("public") else "private"
        return (
            f"ConnectWise {section} note {note['id']} -> {visibility} comment {comment['id']} "
            f"on SOC {soc_id}"
        )

    async def _create_cw_to_soc(self) -> str:
        assert self._soc is not None and self._actor is not None
        tenant, cw = self.tenant, self.config.connectwise
        priority = cw.priority_mapping.get("normal") or cw.priority_mapping[cw.default_soc_priority]
        ticket = await self._actor.create_ticket(
            {
                "summary": f"{self.marker} (ConnectWise -> SOC)"[:100],
                "company": {"id": tenant.cw_company_id},
                "board": {"name": cw.board},
                "status": {"name": cw.routing_status},
                "priority": {"name": priority},
                "contactEmailAddress": self.recipient,
                "initialDescription": (
                    f"{self.marker}: a test ticket created by 'socbridge sync-test' to check "
                    "that tickets routed to the SOC arrive there. The test solves it."
                ),
            }
        )
        cw_id = int(ticket["id"])
        self.tickets["cw_b"] = cw_id
        link_id = f"cw:{cw_id}"
        self._follow(link_id)

        async def created() -> Json | None:
            if reason := self._gave_up(link_id, "soc.create_ticket"):
                raise StepFailed(reason)
            linked = self._linked(link_id)
            if linked is None:
                return None
            return await self.soc.get_ticket(int(linked.data["soc_id"]))

        what = f"a SOC ticket for ConnectWise ticket {cw_id} (status {cw.routing_status})"
        soc = await self._until(created, what, [link_id])
        soc_id = int(soc["id"])
        self.tickets["soc_b"] = soc_id
        self._follow(f"soc:{soc_id}")
        wrong = [
            f"{name} is {got!r}, expected {want!r}"
            for name, got, want in (
                ("organization_id", soc.get("organization_id"), tenant.soc_organization_id),
                ("external_id", soc.get("external_id"), soc_external_id(cw_id)),
            )
            if got != want
        ]
        if wrong:
            raise StepFailed(
                f"SOC ticket {soc_id} for ConnectWise ticket {cw_id}: " + "; ".join(wrong)
            )
        return (
            f"ConnectWise ticket {cw_id} ({cw.routing_status}) -> SOC ticket {soc_id} "
            f"(organization {soc.get('organization_id')})"
        )

    async def _solve_soc_to_cw(self) -> str:
        assert self._soc is not None and self._cw is not None
        soc_id, cw_id = self.tickets["soc_a"], self.tickets["cw_a"]
        solved = self.config.connectwise.solved_status
        await self._soc.set_status(soc_id, "solved")
        link_id = f"soc:{soc_id}"

        async def done() -> bool:
            if reason := self._gave_up(link_id, "cw.update_ticket"):
                raise StepFailed(reason)
            ticket = await self.cw.get_ticket(cw_id)
            return (ticket.get("status") or {}).get("name") == solved

        await self._until(done, f"ConnectWise ticket {cw_id} in {solved}", [link_id, f"cw:{cw_id}"])
        return f"SOC ticket {soc_id} solved -> ConnectWise ticket {cw_id} {solved}"

    async def _solve_cw_to_soc(self) -> str:
        assert self._soc is not None and self._actor is not None
        cw_id, soc_id = self.tickets["cw_b"], self.tickets["soc_b"]
        solved = self.config.connectwise.solved_status
        await self._actor.update_ticket(cw_id, {"status": {"name": solved}})
        link_id = f"cw:{cw_id}"

        async def done() -> bool:
            if reason := self._gave_up(link_id, "soc.update_ticket"):
                raise StepFailed(reason)
            ticket = await self.soc.get_ticket(soc_id)
            return ticket.get("status") in ("solved", "closed")

        await self._until(done, f"SOC ticket {soc_id} solved", [link_id, f"soc:{soc_id}"])
        return f"ConnectWise ticket {cw_id} {solved} -> SOC ticket {soc_id} solved"

    # ------------------------------------------------------------- cleanup

    async def _cleanup(self) -> None:
        """Solve every test ticket still open on either side (they are kept, solved)."""
        solved = self.config.connectwise.solved_status
        notes = self.report.cleanup
        for key in ("soc_a", "soc_b"):
            soc_id = self.tickets.get(key)
            if soc_id is None or self._soc is None:
                continue
            try:
                if (await self._soc.get_ticket(soc_id)).get("status") not in ("solved", "closed"):
                    await self._soc.set_status(soc_id, "solved")
                    notes.append(f"solved SOC ticket {soc_id}")
            except REMOTE_ERRORS as exc:
                notes.append(f"could not solve SOC ticket {soc_id}: {_error(exc)}")
        for key in ("cw_a", "cw_b"):
            cw_id = self.tickets.get(key)
            client = self._actor or self._cw
            if cw_id is None or client is None:
                continue
            try:
                ticket = await client.get_ticket(cw_id)
                if (ticket.get("status") or {}).get("name") != solved:
                    await client.update_ticket(cw_id, {"status": {"name": solved}})
                    notes.append(f"set ConnectWise ticket {cw_id} to {solved}")
            except REMOTE_ERRORS as exc:
                notes.append(f"could not solve ConnectWise ticket {cw_id}: {_error(exc)}")
