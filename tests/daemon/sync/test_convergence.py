"""Both desks converge, whatever the daemon's timing: a model of its schedule around the real rules.

In the daemon, intake, the sync engine and the outbox run concurrently, and a
SIGKILL can land anywhere. So an input may be decided long after later events
were folded (the engine folds on while its own decisions are pending, and a
restart decides again every input past its checkpoint), a ConnectWise read is
appended after newer events, callbacks arrive out of order, and deliveries land
in between, or land on the remote and are killed before their outcome is
recorded. Real timing cannot be steered, so this test plays the daemon's
schedule as a model around the real pieces: ``decide`` and ``apply`` driven the
way ``SyncEngine._step`` drives them, the outbox's lanes and its accept check
(``accepted``, each desk's ``field_values``), the poller's rule that a read showing what the last
observation showed records nothing, and two remote tickets with one-second
source times. Hypothesis picks the schedule; when everything has settled, the
two tickets must agree, and a field that only one side changed must hold that
side's last change (what ``tests/daemon/bridge/test_sigkill.py`` checks on the
real daemon, where a kill once left them apart).
"""

from __future__ import annotations

import copy
import uuid
from collections import deque
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daemon.connectors.connectwise.desk import ConnectWiseDesk
from daemon.connectors.soc.desk import SocDesk
from daemon.outbox.deliver import accepted
from daemon.sync.decide import cw_status, decide, soc_status
from daemon.sync.engine import INPUTS
from eventstore import NewEvent, RecordedEvent, derived_event_id
from projections import kinds
from projections.fold import apply
from projections.state import BridgeState
from tests.support.rules import CW_PRIORITIES, RULES

T0 = datetime(2026, 11, 29, 12, 0, 0, tzinfo=UTC)
CW_ID, SOC_ID = 1, 11
VALUES = {
    ("cw", "status"): ["In Progress", "Solved", "Unresolved"],
    ("cw", "priority"): list(CW_PRIORITIES.values()),
    ("soc", "status"): ["open", "pending", "solved"],
    ("soc", "priority"): list(CW_PRIORITIES),
}
NORMALIZE = {
    "solved_status": RULES.solved_status,
    "priority_mapping": dict(CW_PRIORITIES),
    "default_soc_priority": RULES.default_soc_priority,
}


def stamp(second: int) -> str:
    return (T0 + timedelta(seconds=second)).strftime("%Y-%m-%dT%H:%M:%SZ")


def normal(side: str, fields: dict[str, str]) -> dict[str, str]:
    """A ticket's status and priority in the SOC's vocabulary (what sync compares)."""
    if side == "cw":
        return {
            "status": cw_status(RULES, fields["status"]),
            "priority": RULES.soc_priority_for_cw(fields["priority"]),
        }
    return {"status": soc_status(fields["status"]), "priority": fields["priority"]}


class Ticket:
    """One remote ticket: its fields (remote vocabulary), source time and last writer."""

    def __init__(self, side: str, fields: dict[str, str], at: int, origin: str) -> None:
        self.side, self.fields, self.at, self.by_bridge = side, dict(fields), at, False
        self.origin = origin

    def observation(self, via: str, **extra: Any) -> NewEvent:
        """What intake records of the ticket as it is now."""
        at = stamp(self.at)
        if self.side == "cw":
            ref = f"socbridge:soc:{SOC_ID}" if self.origin == "soc" else None
            data = {"id": CW_ID, "summary": "t1", **self.fields, "board": RULES.board,
                    "company_id": 250, "external_ref": ref, "updated_at": at,
                    "own_write": self.by_bridge, "via": via, **extra}  # fmt: skip
            stream, type_, source = f"cw:ticket:{CW_ID}", kinds.CW_TICKET_OBSERVED, "connectwise"
        else:
            ref = f"socbridge:cw:{CW_ID}" if self.origin == "cw" else None
            data = {"id": SOC_ID, "subject": "s11", **self.fields, "organization_id": 9001,
                    "external_id": ref, "updated_at": at, "via": via, **extra}  # fmt: skip
            stream, type_, source = f"soc:ticket:{SOC_ID}", kinds.SOC_TICKET_OBSERVED, "soc"
        return NewEvent(stream, type_, data, tenant="acme", ticket=stream, source=source,
                        event_id=str(uuid.uuid4()), occurred_at=at)  # fmt: skip


class Daemon:
    """The daemon's schedule as a model: a log, the engine, the outbox and intake."""

    def __init__(self, origin: str) -> None:
        self.origin = origin
        self.clock = 0
        self.log: list[RecordedEvent] = []
        self.ids: dict[str, RecordedEvent] = {}
        # The engine (SyncEngine): folded state, inputs waiting, own decisions not folded.
        self.state = BridgeState()
        self.deferred: deque[RecordedEvent] = deque()
        self.pending: set[str] = set()
        self.checkpoint = BridgeState()
        self.started_at = 0
        # The outbox: commands whose outcome is appended but not folded yet.
        self.done: set[str] = set()
        # Intake: reads and webhooks taken, not yet appended (late, out of order).
        self.mail: list[NewEvent] = []
        self.remote = (
            {"cw": Ticket("cw", {"status": RULES.routing_status,
                                 "priority": CW_PRIORITIES["normal"]}, 0, origin)}
            if origin == "cw"
            else {"soc": Ticket("soc", {"status": "open", "priority": "normal"}, 0, origin)}
        )  # fmt: skip
        #: side -> field -> the last value a person set there (normalised)
        self.human: dict[str, dict[str, str]] = {"cw": {}, "soc": {}}

    # ------------------------------------------------------------------ the log

    def append(self, events: list[NewEvent]) -> list[RecordedEvent]:
        recorded = []
        for e in events:
            if e.event_id in self.ids:  # idempotent on the event id
                recorded.append(self.ids[e.event_id])
                continue
            version = sum(r.stream == e.stream for r in self.log) + 1
            r = RecordedEvent(len(self.log) + 1, e.event_id, e.stream, version, e.type, 1,
                              e.tenant, e.ticket, e.causation_id, e.correlation_id, e.source,
                              e.occurred_at, stamp(self.clock), dict(e.data), "")  # fmt: skip
            self.log.append(r)
            self.ids[r.event_id] = r
            recorded.append(r)
        return recorded

    def last_in(self, stream: str) -> RecordedEvent | None:
        return next((r for r in reversed(self.log) if r.stream == stream), None)

    # --------------------------------------------------------------- the engine

    def step(self) -> bool:
        """Fold the next event, then decide the waiting inputs: ``SyncEngine._step``."""
        if self.state.position >= len(self.log):
            return False
        event = self.log[self.state.position]
        apply(self.state, event)
        self.pending.discard(event.event_id)
        if event.type in INPUTS:
            self.deferred.append(event)
        while self.deferred and not self.pending:
            decisions = decide(self.state, self.deferred[0], RULES)
            if (
                decisions
                and len(self.log) != self.state.position
                and not all(d.event_id in self.ids for d in decisions)
            ):
                break  # the log moved on: fold the rest, then decide again
            self.deferred.popleft()
            recorded = self.append(decisions)
            self.pending.update(r.event_id for r in recorded if r.position > self.state.position)
        self.done &= set(self.state.outbox)
        return True

    def save(self) -> None:
        if not self.deferred and not self.pending:
            self.checkpoint = copy.deepcopy(self.state)

    def kill(self) -> None:
        """SIGKILL and start again: the engine resumes from its checkpoint."""
        self.state = copy.deepcopy(self.checkpoint)
        self.deferred.clear()
        self.pending.clear()
        self.done.clear()
        self.started_at = len(self.log)

    # --------------------------------------------------------------- the outbox

    def ready(self) -> list[dict[str, Any]]:
        """Commands the outbox may attempt now (``Outbox._ready``), oldest first."""
        if self.state.position < self.started_at:
            return []  # not before sync has caught up after a start
        heads: dict[str, dict[str, Any]] = {}
        for c in self.state.outbox.values():
            if c.command_id in self.done:
                continue
            lane = c.link_id + ("#fetch" if c.kind.endswith(".fetch_ticket") else "")
            order = (not c.kind.endswith(".create_ticket"), c.issued_at)
            head = heads.get(lane)
            if head is None or order < (not head.kind.endswith(".create_ticket"),
                                        head.issued_at):  # fmt: skip
                heads[lane] = c
        out = []
        for c in sorted(heads.values(), key=lambda c: c.issued_at):
            link = self.state.links[c.link_id]
            if not c.is_create and link.ticket_id(c.target) is None:
                continue
            out.append(c)
        return out

    def attempt(self, pick: int, killed_before_outcome: bool = False) -> None:
        commands = self.ready()
        if not commands:
            return
        c = commands[pick % len(commands)]
        kind, params = c.kind, c.params
        target = kind.split(".", 1)[0]
        outcome: dict[str, Any]
        if kind == "soc.create_ticket":
            if "soc" not in self.remote:
                fields = {"status": params["status"], "priority": params["priority"]}
                self.remote["soc"] = Ticket("soc", fields, self.clock, self.origin)
                self.remote["soc"].by_bridge = True
            outcome = {"result": {"id": SOC_ID}}
        elif kind == "cw.create_ticket":
            if "cw" not in self.remote:
                fields = {"status": "New", "priority": params["priority"]}
                self.remote["cw"] = Ticket("cw", fields, self.clock, self.origin)
                self.remote["cw"].by_bridge = True
            outcome = {"result": {"id": CW_ID}}
        elif kind.endswith(".fetch_ticket"):
            ticket = self.remote[target]
            read_after = len(self.log)
            last = self.last_in(ticket.observation("fetch").stream)
            fresh = last is None or last.position <= read_after
            read = ticket.observation("fetch", read_after=read_after, fresh=fresh,
                                      fetch=c.command_id)  # fmt: skip
            [seen] = self.append([read])
            outcome = {"result": {"event_id": seen.event_id, "read_after": read_after,
                                  "fresh": fresh}}  # fmt: skip
        elif kind.endswith(".update_ticket"):
            ticket = self.remote[target]
            shape = ({"status": {"name": ticket.fields["status"]},
                      "priority": {"name": ticket.fields["priority"]}}
                     if target == "cw" else ticket.fields)  # fmt: skip
            norm = params.get("normalize") or {}
            now = (ConnectWiseDesk if target == "cw" else SocDesk).field_values(shape, norm)
            changed = {n: now[n] for n, ok in accepted(c).items() if now[n] not in ok}
            if changed:
                # Not overwritten: abandoned, and intake reads the ticket again.
                self.outcome(c, kinds.COMMAND_ABANDONED, {"reason": "stale", "stale": changed})
                self.read(target)
                return
            new = {**ticket.fields, **params["remote"]}
            if new != ticket.fields:
                ticket.fields, ticket.at, ticket.by_bridge = new, self.clock, True
                self.notify(target)
            outcome = {"result": {"updated_at": stamp(ticket.at)}}
        else:
            raise AssertionError(f"no model for {kind}")
        if killed_before_outcome:
            self.kill()
            return
        self.outcome(c, kinds.COMMAND_DELIVERED, {**outcome, "attempt": 1})

    def outcome(self, c: dict[str, Any], type_: str, data: dict[str, Any]) -> None:
        event = NewEvent(
            f"outbox:{c.link_id}", type_,
            {"command_id": c.command_id, "kind": c.kind, "link_id": c.link_id, **data},
            tenant="acme", ticket=c.link_id,
            event_id=derived_event_id("outbox", c.command_id, type_, ""),
            causation_id=c.command_id, source=kinds.OUTBOX_SOURCE,
        )  # fmt: skip
        self.append([event])
        self.done.add(c.command_id)

    # ------------------------------------------------------------------ intake

    def notify(self, side: str) -> None:
        """A change on ``side`` sends a callback: the SOC's carries the ticket; a
        ConnectWise callback only names it, and the ticket is read (later)."""
        if side == "soc":
            self.mail.append(self.remote["soc"].observation("webhook"))

    def read(self, side: str) -> None:
        """A poll or a callback's read: what the ticket shows now, appended later."""
        if side in self.remote:
            self.mail.append(self.remote[side].observation("poll"))

    def arrive(self, pick: int) -> None:
        if not self.mail:
            return
        e = self.mail.pop(pick % len(self.mail))
        if e.data["via"] == "poll":
            # A read showing what the last observation showed records nothing.
            last = self.last_in(e.stream)
            keys = ("status", "priority", "updated_at")
            if last is not None and all(last.data.get(k) == e.data.get(k) for k in keys):
                return
        self.append([e])

    def edit(self, side: str, name: str, pick: int) -> None:
        if side not in self.remote:
            return
        ticket = self.remote[side]
        value = VALUES[side, name][pick % len(VALUES[side, name])]
        ticket.fields[name] = value
        ticket.at, ticket.by_bridge = self.clock, False
        self.human[side][name] = normal(side, ticket.fields)[name]
        self.notify(side)

    # ------------------------------------------------------------------ settle

    def settle(self) -> None:
        """Let everything finish: no kills, every read and callback arrives, both
        tickets are polled until a full round adds nothing to the log."""
        for _ in range(200):
            size = len(self.log)
            while self.step():
                pass
            while self.ready():
                self.attempt(0)
                while self.step():
                    pass
            while self.mail:
                self.arrive(0)
            self.read("cw")
            self.read("soc")
            while self.mail:
                self.arrive(0)
            while self.step():
                pass
            self.clock += 1
            if len(self.log) == size and not self.ready() and not self.mail:
                return
        raise AssertionError("the bridge never settled")


def linked(origin: str) -> Daemon:
    """ConnectWise ticket 1 routed to the SOC (or SOC incident 11 opened), its twin
    created: a linked pair."""
    d = Daemon(origin)
    d.read(origin)
    d.arrive(0)
    d.settle()
    link = f"cw:{CW_ID}" if origin == "cw" else f"soc:{SOC_ID}"
    assert d.state.links[link].state == "linked"
    d.save()
    return d


def action(origin: str) -> st.SearchStrategy[tuple[Any, ...]]:
    """One step of the schedule; people edit only the ``origin`` side's ticket (as in the
    SIGKILL test: each desk changes the tickets it opened, so no conflict decides)."""
    return st.one_of(
        st.tuples(st.just("edit"), st.just(origin), st.sampled_from(["status", "priority"]),
                  st.integers(0, 3)),
        st.tuples(st.just("tick"), st.none(), st.none(), st.none()),
        st.tuples(st.just("read"), st.sampled_from(["cw", "soc"]), st.none(), st.none()),
        st.tuples(st.just("arrive"), st.none(), st.none(), st.integers(0, 3)),
        st.tuples(st.just("step"), st.none(), st.none(), st.integers(1, 6)),
        st.tuples(st.just("attempt"), st.none(), st.booleans(), st.integers(0, 1)),
        st.tuples(st.just("save"), st.none(), st.none(), st.none()),
        st.tuples(st.just("kill"), st.none(), st.none(), st.none()),
    )  # fmt: skip


schedules = st.sampled_from(["cw", "soc"]).flatmap(
    lambda origin: st.tuples(st.just(origin), st.lists(action(origin), max_size=120))
)


def play(origin: str, script: list[tuple[Any, ...]]) -> Daemon:
    d = linked(origin)
    for kind, a, b, n in script:
        if kind == "edit":
            d.edit(a, b, n)
        elif kind == "tick":
            d.clock += 1
        elif kind == "read":
            d.read(a)
        elif kind == "arrive":
            d.arrive(n)
        elif kind == "step":
            for _ in range(n):
                d.step()
        elif kind == "attempt":
            d.attempt(n, killed_before_outcome=b)
        elif kind == "save":
            d.save()
        else:
            d.kill()
    d.settle()
    return d


def disagreements(d: Daemon) -> list[str]:
    cw, soc = normal("cw", d.remote["cw"].fields), normal("soc", d.remote["soc"].fields)
    problems = [f"{n}: ConnectWise {cw[n]}, SOC {soc[n]}" for n in cw if cw[n] != soc[n]]
    for side, now in (("cw", cw), ("soc", soc)):
        other = "soc" if side == "cw" else "cw"
        for name, value in d.human[side].items():
            if name not in d.human[other] and now[name] != value:
                problems.append(f"{name}: {side} last set {value}, holds {now[name]}")
    return problems


def explained(d: Daemon) -> str:
    return "\n".join(f"{r.position} {r.type} {r.data}" for r in d.log)


E, R, A, S, T = "edit", "read", "arrive", "step", "tick"
#: Schedules this model found on the rules before they were fixed (shrunk), each one
#: leaving the two tickets apart: kept so they stay fixed. (The property below has one
#: desk edit; the last one here has both, whose same-second edits of equal values the
#: model still finds cases of: see the README's known limits.)
FOUND = {
    # A same-second read of the ticket before socbridge's write, decided before the
    # write's delivery and folded after it, put the older priority back in the state.
    "late-read-folded-after-delivery": ("cw", [
        (E, "cw", "priority", 0), (R, "cw", None, None), (E, "cw", "status", 1),
        (T, None, None, None), (A, None, None, 0), (R, "cw", None, None),
        (E, "cw", "priority", 2), (R, "cw", None, None), (A, None, None, 0),
        (E, "cw", "priority", 3), (A, None, None, 0)]),
    # socbridge's copy of a side's earlier value taken for a person's change there: a
    # conflict the other side "won" with a value that was only late.
    "own-copy-taken-for-a-conflict": ("cw", [
        (E, "cw", "priority", 1), (R, "cw", None, None), (A, None, None, 0),
        (T, None, None, None), (E, "cw", "priority", 2), (R, "cw", None, None),
        (A, None, None, 0), (S, None, None, 5), ("attempt", None, False, 1),
        (T, None, None, None), (E, "cw", "priority", 3), (R, "cw", None, None),
        (A, None, None, 1)]),
    # The late echo of a first write of "high" taken for the landing of a second one.
    "echo-of-an-earlier-write-of-the-same-value": ("cw", [
        (E, "cw", "priority", 1), (E, "cw", "status", 1), (R, "cw", None, None),
        (T, None, None, None), (E, "cw", "priority", 0), (T, None, None, None),
        (A, None, None, 0), (R, "cw", None, None), (A, None, None, 0),
        (S, None, None, 4), (E, "cw", "priority", 1), ("attempt", None, True, 0),
        (R, "cw", None, None)]),
    # A delivery settled a later write of the same value, still in flight.
    "delivery-settled-a-later-write-of-its-value": ("soc", [
        (E, "soc", "status", 2), (E, "soc", "priority", 3), (A, None, None, 0),
        (E, "soc", "priority", 1), (S, None, None, 4), (T, None, None, None),
        (E, "soc", "priority", 0), (A, None, None, 3), (A, None, None, 1),
        (E, "soc", "status", 1), (A, None, None, 1), (S, None, None, 5),
        ("attempt", None, False, 0), (E, "soc", "priority", 2), ("attempt", None, False, 1),
        (R, "cw", None, None), (A, None, None, 2), (E, "soc", "priority", 3)]),
    "same-second-writes-and-a-kill": ("soc", [
        (E, "soc", "priority", 2), (E, "soc", "priority", 0), (A, None, None, 1),
        (A, None, None, 0), (R, "cw", None, None), (E, "soc", "priority", 1),
        (S, None, None, 5), ("attempt", None, False, 0), (S, None, None, 2),
        ("save", None, None, None), (E, "soc", "status", 2), ("attempt", None, True, 1),
        (S, None, None, 2), (E, "soc", "priority", 0), ("attempt", None, False, 0),
        (E, "soc", "priority", 1), (T, None, None, None), (R, "cw", None, None),
        (E, "soc", "status", 2), (A, None, None, 0), (A, None, None, 0),
        (E, "soc", "priority", 2), (A, None, None, 0), (A, None, None, 2),
        (A, None, None, 2)]),
    # Both desks: a person's Solved taken for the echo of socbridge's write of it (the
    # same value, in flight); the write then landed over the person's later In Progress.
    "in-flight-write-over-a-later-change": ("soc", [
        (E, "soc", "status", 2), (E, "cw", "status", 1), (T, None, None, None),
        (R, "cw", None, None), (E, "cw", "status", 0)]),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(FOUND))
def test_schedules_that_once_left_the_tickets_apart_converge(name: str) -> None:
    origin, script = FOUND[name]
    d = play(origin, script)
    assert disagreements(d) == [], explained(d)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(schedules)
def test_both_tickets_agree_once_settled_whatever_the_schedule(
    schedule: tuple[str, list[tuple[Any, ...]]],
) -> None:
    d = play(*schedule)
    assert disagreements(d) == [], explained(d)
