"""A realistic daemon history for the replay and restart benchmarks, written through the real store.

The log is what a running bridge writes: per ticket, the observation that
started a sync, the link request, the create command and its delivery, the
link; then, over and over, a change on one side (observation), the decision
(field decided, with the write to the other side), the command and its
delivery (an occasional failed attempt before it), the echo of socbridge's own
write observed on the other side and recognised; and notes and comments
mirrored the same way. The bodies have the shapes intake, sync and the outbox
write, so the fold handles every event as it does live, and the store assigns
positions, versions and the hash chain as it always does.

The ticket population is fixed (``links``) while the log grows, as on a bridge
that has been running for a while: the state the fold keeps is per link (plus
the note keys each link accumulates), not per event. Events are appended in
large batches (one transaction each) to generate quickly.

Writing a 1M-event log takes most of the benchmark's time (tens of minutes on
a small, busy host), so :class:`KeptHistory` can keep the logs it wrote in a
folder of the operator's choosing (``socbridge bench --keep-history DIR``) and
start later runs from copies of them: the same files, page for page, measured
the same way (replay of each log in a child process, then the restart on the
large one with the checkpoint a running daemon saves). A kept history is used
only when it was written by the same generator, store and fold (their source
files are fingerprinted) with the same sizes; otherwise it is written again.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import random
import shutil
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from daemon.bench import pipeline, replay_rss
from eventstore import EventStore, NewEvent, derived_event_id
from projections import kinds, persist
from projections.fold import apply
from projections.persist import ProjectionStore, write_transaction
from projections.state import BridgeState

TENANT = "acme"
CW_PRIORITIES = {
    "urgent": "Priority 1 - Emergency Response",
    "high": "Priority 2 - Quick Response",
    "normal": "Priority 3 - Normal Response",
    "low": "Priority 4 - Schedule Maintenance",
}
SOC_PRIORITIES = tuple(CW_PRIORITIES)
BATCH = 5000
#: Links per log: enough tickets that every batch touches many streams.
DEFAULT_LINKS = 5000


def _stamp(n: int) -> str:
    """A source timestamp that moves forward with the log (one second per ten events)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(1_795_000_000 + n // 10))


@dataclass
class _Link:
    link_id: str
    origin: str
    cw_id: int
    soc_id: int
    priority: str = "high"
    notes: int = 0


@dataclass
class HistoryWriter:
    """Appends realistic episodes to a store until it holds the requested number of events."""

    store: EventStore
    links: int = DEFAULT_LINKS
    seed: int = 7
    written: int = 0
    _made: list[_Link] = field(default_factory=list)
    _pending: list[NewEvent] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._count = self.written

    # ----------------------------------------------------------- event makers

    def _emit(self, **kw: Any) -> str:
        event = NewEvent(**kw)
        self._pending.append(event)
        self._count += 1
        return event.event_id

    def _cw_observed(self, link: _Link, writer: str, at: str) -> str:
        n = self._count
        data = {
            "id": link.cw_id,
            "summary": f"Suspicious sign-in for user{link.cw_id % 97}@acme.example",
            "status": "Send to SOC",
            "status_id": 502,
            "closed": False,
            "priority": CW_PRIORITIES[link.priority],
            "priority_id": SOC_PRIORITIES.index(link.priority) + 1,
            "board": "SOC Incidents",
            "board_id": 41,
            "company_id": 250,
            "company_identifier": "AcmeCorp",
            "company_name": "Acme Corporation",
            "source": "SOC Platform" if link.origin == "soc" else "Email Connector",
            "owner": "jsmith",
            "external_ref": f"socbridge:soc:{link.soc_id}" if link.origin == "soc" else None,
            "record_type": "ServiceTicket",
            "entered_at": "2026-11-01T08:00:00Z",
            "updated_at": at,
            "updated_by": writer,
            "own_write": writer == "socbridge-api",
            "via": "callback",
            "action": "updated",
            "message_id": f"00000000-0000-4000-8000-{n:012d}",
        }
        return self._emit(
            stream=f"cw:ticket:{link.cw_id}", type=kinds.CW_TICKET_OBSERVED, data=data,
            tenant=TENANT, ticket=f"cw:{link.cw_id}", source="connectwise",
            event_id=derived_event_id("connectwise", "callback", str(data["message_id"])),
            occurred_at=at,
        )  # fmt: skip

    def _soc_observed(self, link: _Link, actor: int, at: str) -> str:
        data = {
            "id": link.soc_id,
            "subject": f"Suspicious sign-in for user{link.cw_id % 97}@acme.example",
            "status": "open",
            "priority": link.priority,
            "organization_id": 9001,
            "external_id": f"socbridge:cw:{link.cw_id}" if link.origin == "cw" else None,
            "requester_id": 7001,
            "assignee_id": actor,
            "tags": ["phishing", "identity"],
            "created_at": "2026-11-01T08:00:01Z",
            "updated_at": at,
            "actor_id": actor,
            "own_write": actor == 7100,
            "via": "webhook",
        }
        return self._emit(
            stream=f"soc:ticket:{link.soc_id}", type=kinds.SOC_TICKET_OBSERVED, data=data,
            tenant=TENANT, ticket=f"soc:{link.soc_id}", source="soc", occurred_at=at,
        )  # fmt: skip

    def _decision(self, cause: str, link: _Link, type_: str, data: dict[str, Any], i: int) -> str:
        stream = (
            f"outbox:{link.link_id}" if type_ == kinds.COMMAND_ISSUED else f"link:{link.link_id}"
        )
        return self._emit(
            stream=stream, type=type_, data={"link_id": link.link_id, **data}, tenant=TENANT,
            ticket=link.link_id, event_id=derived_event_id("sync", cause, str(i)),
            causation_id=cause, correlation_id=link.link_id, source=kinds.SYNC_SOURCE,
        )  # fmt: skip

    def _outcome(
        self, command: str, link: _Link, kind: str, type_: str, data: dict[str, Any]
    ) -> None:
        self._emit(
            stream=f"outbox:{link.link_id}", type=type_,
            data={"command_id": command, "kind": kind, "link_id": link.link_id, **data},
            tenant=TENANT, ticket=link.link_id,
            event_id=derived_event_id("outbox", command, type_, str(data.get("attempt", ""))),
            causation_id=command, correlation_id=link.link_id, source=kinds.OUTBOX_SOURCE,
        )  # fmt: skip

    def _deliver(self, command: str, link: _Link, kind: str, result: dict[str, Any]) -> None:
        attempt = 1
        if self._rng.random() < 0.03:  # a 503 or a timeout, retried
            self._outcome(command, link, kind, kinds.COMMAND_FAILED, {
                "attempt": 1, "error": "HTTP 503 from the remote API", "retry_in_s": 1.0,
                "remote_status": 503})  # fmt: skip
            attempt = 2
        self._outcome(command, link, kind, kinds.COMMAND_DELIVERED,
                      {"result": result, "attempt": attempt})  # fmt: skip

    # -------------------------------------------------------------- episodes

    def _new_link(self) -> None:
        k = len(self._made)
        origin = "soc" if k % 3 == 2 else "cw"
        cw_id, soc_id = 200_000 + k, 900_000 + k
        link = _Link(f"{origin}:{cw_id if origin == 'cw' else soc_id}", origin, cw_id, soc_id)
        self._made.append(link)
        at = _stamp(self._count)
        if origin == "cw":
            cause = self._cw_observed(link, "jsmith", at)
            ticket_id, kind = cw_id, "soc.create_ticket"
            params = {"organization_id": 9001, "subject": f"Incident {cw_id}",
                      "body": f"Incident {cw_id}\n\n[socbridge: ConnectWise ticket {cw_id}]",
                      "priority": link.priority, "status": "open",
                      "external_id": f"socbridge:cw:{cw_id}"}  # fmt: skip
            result = {"id": soc_id}
        else:
            cause = self._soc_observed(link, 7002, at)
            ticket_id, kind = soc_id, "cw.create_ticket"
            params = {"company_id": 250, "board": "SOC Incidents",
                      "summary": f"SOC incident {soc_id}", "source": "SOC Platform",
                      "priority": CW_PRIORITIES[link.priority],
                      "external_ref": f"socbridge:soc:{soc_id}"}  # fmt: skip
            result = {"id": cw_id}
        self._decision(cause, link, kinds.LINK_REQUESTED, {
            "tenant": TENANT, "origin": origin, "ticket_id": ticket_id,
            "fields": {"status": {"cw": "open", "soc": "open"},
                       "priority": {"cw": link.priority, "soc": link.priority}}}, 0)  # fmt: skip
        command = self._decision(
            cause, link, kinds.COMMAND_ISSUED, {"kind": kind, "params": params}, 1
        )
        self._deliver(command, link, kind, result)
        self._decision(command, link, kinds.LINKED, {"cw_id": cw_id, "soc_id": soc_id}, 0)

    def _field_change(self, link: _Link) -> None:
        side = self._rng.choice(("cw", "soc"))
        target = "soc" if side == "cw" else "cw"
        link.priority = self._rng.choice([p for p in SOC_PRIORITIES if p != link.priority])
        at = _stamp(self._count)
        cause = (
            self._cw_observed(link, "jsmith", at)
            if side == "cw"
            else self._soc_observed(link, 7002, at)
        )
        self._decision(cause, link, kinds.FIELD_DECIDED, {
            "field": "priority", "side": side, "value": link.priority, "at": at,
            "writes": {target: link.priority}}, 0)  # fmt: skip
        kind = f"{target}.update_ticket"
        value = CW_PRIORITIES[link.priority] if target == "cw" else link.priority
        params = {"fields": {"priority": link.priority}, "remote": {"priority": value},
                  "accept": {"priority": [value]}}  # fmt: skip
        command = self._decision(
            cause, link, kinds.COMMAND_ISSUED, {"kind": kind, "params": params}, 1
        )
        self._deliver(command, link, kind, {"updated_at": at})
        # socbridge's own write comes back from the other side: an echo.
        echo = (
            self._cw_observed(link, "socbridge-api", at) if target == "cw"
            else self._soc_observed(link, 7100, at)
        )  # fmt: skip
        self._decision(echo, link, kinds.ECHO_RECOGNISED, {
            "kind": "field", "field": "priority", "side": target, "value": link.priority,
            "at": at}, 0)  # fmt: skip

    def _note(self, link: _Link) -> None:
        link.notes += 1
        at = _stamp(self._count)
        comment_id = link.soc_id * 100 + link.notes
        body = f"Analyst update {link.notes}: blocked the sender domain and reset the password."
        cause = self._emit(
            stream=f"soc:ticket:{link.soc_id}", type=kinds.SOC_COMMENT_OBSERVED,
            data={"ticket_id": link.soc_id, "comment_id": comment_id, "body": body,
                  "public": True, "author_id": 7002, "created_at": at, "own_write": False,
                  "via": "poll"},
            tenant=TENANT, ticket=f"soc:{link.soc_id}", source="soc", occurred_at=at,
        )  # fmt: skip
        key = f"soc:{comment_id}"
        self._decision(cause, link, kinds.NOTE_MIRROR_DECIDED, {"note_key": key, "target": "cw"}, 0)
        params = {"note_key": key, "text": f"{body}\n\n[socbridge: SOC comment {comment_id}]",
                  "section": "Discussion"}  # fmt: skip
        command = self._decision(cause, link, kinds.COMMAND_ISSUED,
                                 {"kind": "cw.add_note", "params": params}, 1)  # fmt: skip
        note_id = link.cw_id * 100 + link.notes
        self._deliver(command, link, "cw.add_note", {"id": note_id})
        echo = self._emit(
            stream=f"cw:ticket:{link.cw_id}", type=kinds.CW_NOTE_OBSERVED,
            data={"id": note_id, "ticket_id": link.cw_id, "text": params["text"],
                  "section": "Discussion", "internal": False, "external": True,
                  "author": "socbridge-api", "contact": None, "created_at": at,
                  "updated_at": at, "own_write": True, "via": "poll"},
            tenant=TENANT, ticket=f"cw:{link.cw_id}", source="connectwise", occurred_at=at,
        )  # fmt: skip
        recognised = {"kind": "note", "note_key": f"cw:{note_id}", "mirror_of": key}
        self._decision(echo, link, kinds.ECHO_RECOGNISED, recognised, 0)

    def _episode(self, total: int, queued: int) -> None:
        done = queued + len(self._pending)
        # Links are created over the first half of the log, then only worked.
        due = min(self.links, 1 + self.links * 2 * done // max(total, 1))
        if len(self._made) < due:
            self._new_link()
            return
        link = self._rng.choice(self._made)
        if self._rng.random() < 0.2:
            self._note(link)
        else:
            self._field_change(link)

    async def grow(self, total: int) -> int:
        """Append episodes until the log holds at least ``total`` events; return the count."""
        # The next batch is made while the writer thread commits the previous one.
        in_flight: asyncio.Task[Any] | None = None
        queued = self.written
        while queued < total:
            while len(self._pending) < BATCH and queued + len(self._pending) < total:
                self._episode(total, queued)
            batch, self._pending = self._pending, []
            if in_flight is not None:
                await in_flight
            in_flight = asyncio.ensure_future(self.store.append(batch))
            queued += len(batch)
        if in_flight is not None:
            await in_flight
        self.written = queued
        return self.written


async def write_checkpoint(store: EventStore) -> int:
    """Fold the whole log and save the projection and checkpoint, as the daemon does on stop."""
    projections = ProjectionStore(store)
    state = await projections.load()
    state = BridgeState() if state.position == 0 else state
    async for event in store.read(state.position + 1, batch_size=2000):
        apply(state, event)
    await projections.save(state)
    return state.position


async def generate(path: Path, total: int, links: int = DEFAULT_LINKS) -> int:
    """A fresh log of ``total`` events at ``path`` (no checkpoint); return its size."""
    store = await EventStore.open(path, synchronous="NORMAL")
    try:
        return await HistoryWriter(store, links=links).grow(total)
    finally:
        await store.close()


# ------------------------------------------------------------------ kept logs

REPO = Path(__file__).resolve().parents[2]
#: The files whose code decides a kept log's bytes and its checkpoint rows (besides
#: the generator itself, see :meth:`KeptHistory.fingerprint`).
FINGERPRINTED = (
    "eventstore/chain.py",
    "eventstore/events.py",
    "eventstore/schema.py",
    "eventstore/writer.py",
    "projections/fold.py",
    "projections/kinds.py",
    "projections/state.py",
)
PROJECTION_TABLES = (
    "projection_checkpoints", "projection_links", "projection_outbox", "projection_meta"
)  # fmt: skip


def _backup(source: Path, target: Path) -> None:
    """Copy a live SQLite file page for page (its WAL included) with the backup API."""
    target.unlink(missing_ok=True)
    src = sqlite3.connect(source)
    try:
        dst = sqlite3.connect(target)
        try:
            src.backup(dst)
        finally:
            dst.close()
    finally:
        src.close()


@dataclass
class KeptHistory:
    """The history logs kept in ``folder`` between benchmark runs, for ``large`` events.

    ``small.db`` is the log as it was at ``large / 10`` events and ``large.db`` at
    ``large``, each before any checkpoint (as they are replayed); ``checkpoint.db``
    holds the projection rows and checkpoint that :func:`write_checkpoint` saved
    on the large log. ``history.json`` is written last: without it (or with a
    fingerprint that no longer matches) the folder is not used.
    """

    folder: Path
    large: int
    links: int
    _written_with: str = ""

    @property
    def marker(self) -> Path:
        return self.folder / "history.json"

    def path(self, name: str) -> Path:
        return self.folder / f"{name}.db"

    def fingerprint(self) -> str:
        """What the kept files depend on: the sizes, the generator's code, the projection
        tables' schema and the store's and the fold's sources."""
        digest = hashlib.sha256(f"{self.large}:{self.links}:{BATCH}:{TENANT}".encode())
        for part in (_stamp, _Link, HistoryWriter, write_checkpoint):
            digest.update(inspect.getsource(part).encode())
        digest.update(repr((persist.NAME, persist._SCHEMA, CW_PRIORITIES)).encode())
        for name in FINGERPRINTED:
            digest.update(name.encode() + b"\0" + (REPO / name).read_bytes())
        return digest.hexdigest()

    def load(self) -> dict[str, Any] | None:
        """What was recorded when the logs were written, if they can be used."""
        try:
            kept = orjson.loads(self.marker.read_bytes())
        except (OSError, orjson.JSONDecodeError):
            return None
        if kept.get("fingerprint") != self.fingerprint():
            return None
        if not all(self.path(n).is_file() for n in ("small", "large", "checkpoint")):
            return None
        return dict(kept)

    def start(self) -> None:
        """A new history is about to be written: forget the old one first, and note
        what it is written with (sources edited during the run do not count)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self.marker.unlink(missing_ok=True)
        self._written_with = self.fingerprint()

    async def keep_log(self, name: str, db: Path) -> None:
        await asyncio.to_thread(_backup, db, self.path(name))

    async def keep_checkpoint(self, store: EventStore) -> None:
        target = self.path("checkpoint")
        target.unlink(missing_ok=True)

        def copy(conn: sqlite3.Connection) -> None:
            conn.execute("ATTACH DATABASE ? AS kept", (str(target),))
            try:
                for table in PROJECTION_TABLES:
                    conn.execute(f"CREATE TABLE kept.{table} AS SELECT * FROM main.{table}")
            finally:
                conn.execute("DETACH DATABASE kept")

        await store.run_exclusive(copy)

    def finish(self, figures: dict[str, Any]) -> None:
        record = {"fingerprint": self._written_with, "large": self.large, "links": self.links}
        self.marker.write_bytes(orjson.dumps({**record, "figures": figures}))

    async def copy_log(self, name: str, db: Path) -> None:
        """A working copy of a kept log at ``db`` (runs append to it; the kept one stays)."""
        await asyncio.to_thread(shutil.copyfile, self.path(name), db)

    async def restore_checkpoint(self, store: EventStore) -> int:
        """Put the kept projection rows and checkpoint into ``store`` (a copy of ``large``),
        as :func:`write_checkpoint` would write them; return the checkpoint position."""
        await ProjectionStore(store).load()  # creates the tables if the copy lacks them
        source = str(self.path("checkpoint"))

        def copy(conn: sqlite3.Connection) -> int:
            conn.execute("ATTACH DATABASE ? AS kept", (source,))
            try:
                with write_transaction(conn):
                    for table in PROJECTION_TABLES:
                        conn.execute(f"DELETE FROM main.{table}")
                        conn.execute(f"INSERT INTO main.{table} SELECT * FROM kept.{table}")
            finally:
                conn.execute("DETACH DATABASE kept")
            row = conn.execute("SELECT MAX(position) FROM main.projection_checkpoints").fetchone()
            return int(row[0] or 0)

        return int(await store.run_exclusive(copy))


# ------------------------------------------------------------- the figures


async def _replay(db: Path, key: str, env: dict[str, str]) -> dict[str, Any]:
    run = await replay_rss.measure(db, env)
    return {
        f"replay_{key}_events": run.events,
        f"replay_{key}_s": round(run.wall_s, 2),
        "rss_mb" if key == "1m" else f"rss_{key}_mb": round(run.peak_rss_mb, 1),
    }


async def _write_and_replay(
    db: Path, large: int, links: int, env: dict[str, str], kept: KeptHistory | None
) -> dict[str, Any]:
    """Write the log through the store, replaying it at ``large / 10`` and at ``large``
    events, then save the checkpoint; keep each stage in ``kept`` when given."""
    figures: dict[str, Any] = {}
    if kept is not None:
        kept.start()
    store = await EventStore.open(db, synchronous="NORMAL")
    writer = HistoryWriter(store, links=links)
    try:
        for size, key, name in ((large // 10, "100k", "small"), (large, "1m", "large")):
            started = time.perf_counter()
            await writer.grow(size)
            figures[f"history_{key}_write_s"] = round(time.perf_counter() - started, 1)
            figures.update(await _replay(db, key, env))
            if kept is not None:
                await kept.keep_log(name, db)
        # The checkpoint a daemon saves as it folds and on stop; restarts resume from it.
        await write_checkpoint(store)
        if kept is not None:
            await kept.keep_checkpoint(store)
            kept.finish({k: v for k, v in figures.items() if k.startswith("history_")})
    finally:
        await store.close()
    return figures


async def _replay_kept(
    db: Path, kept: KeptHistory, recorded: dict[str, Any], env: dict[str, str]
) -> dict[str, Any]:
    """Replay copies of the kept logs, then give the large one its kept checkpoint."""
    figures: dict[str, Any] = dict(recorded["figures"])  # how long writing them took
    small = db.with_name("small.db")
    for name, copy, key in (("small", small, "100k"), ("large", db, "1m")):
        await kept.copy_log(name, copy)
        figures.update(await _replay(copy, key, env))
    small.unlink()
    store = await EventStore.open(db, synchronous="NORMAL")
    try:
        await kept.restore_checkpoint(store)
    finally:
        await store.close()
    return figures


async def figures(
    root: Path, large: int, restarts: int, quick: bool, keep: Path | None = None
) -> dict[str, Any]:
    """Replay logs of ``large / 10`` and ``large`` events; restart the daemon on the large one.

    With ``keep``, the logs are written there once and copied from by later runs
    (:class:`KeptHistory`); ``history_reused`` says which happened.
    """
    env = pipeline.child_env(root)
    db = root / "history" / "events.db"
    db.parent.mkdir()
    result: dict[str, Any] = {}
    if not quick:
        empty = root / "history" / "empty.db"
        await (await EventStore.open(empty)).close()
        result["rss_baseline_mb"] = round((await replay_rss.measure(empty, env)).peak_rss_mb, 1)
    # 5000 tickets for the 1M log (as for the 100k one: the state is per ticket).
    links = min(DEFAULT_LINKS, max(10, large // 200))
    kept = KeptHistory(keep, large, links) if keep is not None else None
    recorded = kept.load() if kept is not None else None
    if kept is not None and recorded is not None:
        result.update(await _replay_kept(db, kept, recorded, env))
    else:
        result.update(await _write_and_replay(db, large, links, env, kept))
    result["history_links"] = links
    if kept is not None:
        result["history_reused"] = recorded is not None
    result.update(await pipeline.ready_after_restart(root, db, restarts))
    return result
