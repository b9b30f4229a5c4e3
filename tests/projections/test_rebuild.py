"""Rebuilding the projection from position 0 gives exactly the live state.

Hypothesis generates histories of observations on both sides (routing,
status and priority changes, notes, unlinking; some within the same second,
which sync cannot order and reads again), deliveries of whatever the outbox
holds (fetches recorded as fresh or not), and daemon restarts (checkpoint,
new engine, resume). The live
engine's state, the rows it persisted, and a plain fold of the whole log from
position 0 must all be equal.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daemon.sync.engine import SyncEngine
from eventstore import EventStore, NewEvent, RecordedEvent, derived_event_id
from projections import kinds
from projections.fold import fold
from projections.persist import ProjectionStore
from projections.state import BridgeState
from tests.support.history import Live
from tests.support.legacy.compare import same_as_legacy
from tests.support.rules import CW_PRIORITIES, RULES

cw_ticket = st.tuples(
    st.just("cw_ticket"),
    st.sampled_from([1, 2]),
    st.sampled_from(["New", "Send to SOC", "In Progress", "Solved", "Unlinked"]),
    st.sampled_from(list(CW_PRIORITIES.values())),
    st.booleans(),
)
soc_ticket = st.tuples(
    st.just("soc_ticket"),
    st.sampled_from([11, 12]),
    st.sampled_from(["new", "open", "pending", "solved"]),
    st.sampled_from(list(CW_PRIORITIES)),
    st.booleans(),
)
cw_note = st.tuples(
    st.just("cw_note"),
    st.sampled_from([1, 2]),
    st.integers(1, 4),
    st.sampled_from(["Discussion", "Internal Analysis"]),
    st.booleans(),
)
soc_comment = st.tuples(
    st.just("soc_comment"), st.sampled_from([11, 12]), st.integers(1, 4), st.none(), st.none()
)
# The same ticket observed again within the same second as the op before.
cw_same = cw_ticket.map(lambda op: ("cw_same", *op[1:]))
soc_same = soc_ticket.map(lambda op: ("soc_same", *op[1:]))
deliver = st.tuples(st.just("deliver"), st.integers(0, 3), st.none(), st.none(), st.none())
# A pending fetch command carried out: what the read shows (fresh or not), then its outcome.
fetch = st.tuples(
    st.just("fetch"),
    st.integers(0, 3),
    st.sampled_from(["In Progress", "Solved", "open", "solved"]),
    st.sampled_from(list(CW_PRIORITIES)),
    st.booleans(),
)
restart = st.tuples(st.just("restart"), st.none(), st.none(), st.none(), st.none())
histories = st.lists(
    st.one_of(
        cw_ticket,
        soc_ticket,
        cw_same,
        soc_same,
        cw_note,
        soc_comment,
        deliver,
        deliver,
        fetch,
        restart,
    ),
    min_size=1,
    max_size=25,
)


def second(n: int) -> str:
    return f"2026-11-29T10:{n // 60:02d}:{n % 60:02d}Z"


def observation(op: tuple[Any, ...], n: int) -> NewEvent | None:
    kind, ident, a, b, flag = op
    at = second(n - 1 if kind.endswith("_same") and n else n)
    kind = kind.replace("_same", "_ticket")
    if kind == "cw_ticket":
        data = {"id": ident, "summary": f"t{ident}", "status": a, "priority": b,
                "board": "SOC Incidents", "company_id": 250, "own_write": flag,
                "external_ref": None, "updated_at": at}  # fmt: skip
        return NewEvent(f"cw:ticket:{ident}", kinds.CW_TICKET_OBSERVED, data, tenant="acme",
                        ticket=f"cw:{ident}", source="connectwise", occurred_at=at)  # fmt: skip
    if kind == "soc_ticket":
        data = {"id": ident, "subject": f"s{ident}", "status": a, "priority": b,
                "organization_id": 9001, "external_id": None, "updated_at": at}  # fmt: skip
        return NewEvent(f"soc:ticket:{ident}", kinds.SOC_TICKET_OBSERVED, data, tenant="acme",
                        ticket=f"soc:{ident}", source="soc", occurred_at=at)  # fmt: skip
    if kind == "cw_note":
        data = {"id": ident * 100 + a, "ticket_id": ident, "text": "note", "section": b,
                "own_write": flag}  # fmt: skip
        return NewEvent(f"cw:ticket:{ident}", kinds.CW_NOTE_OBSERVED, data, tenant="acme",
                        ticket=f"cw:{ident}", source="connectwise")  # fmt: skip
    if kind == "soc_comment":
        data = {"ticket_id": ident, "comment_id": ident * 100 + a, "body": "reply"}
        return NewEvent(f"soc:ticket:{ident}", kinds.SOC_COMMENT_OBSERVED, data, tenant="acme",
                        ticket=f"soc:{ident}", source="soc")  # fmt: skip
    return None


def delivered(engine: SyncEngine, pick: int, n: int) -> NewEvent | None:
    pending = sorted(engine.state.outbox.values(), key=lambda c: c.issued_at)
    if not pending:
        return None
    command = pending[pick % len(pending)]
    result = {"id": 5000 + n} if command.kind.endswith(("create_ticket", "add_note",
                                                             "add_comment")) else {}  # fmt: skip
    return NewEvent(
        f"outbox:{command.link_id}", kinds.COMMAND_DELIVERED,
        {"command_id": command.command_id, "kind": command.kind,
         "link_id": command.link_id, "result": result, "attempt": 1},
        tenant="acme", ticket=command.link_id,
        event_id=derived_event_id("outbox", command.command_id, "delivered"),
        causation_id=command.command_id, source=kinds.OUTBOX_SOURCE,
    )  # fmt: skip


def fetched(engine: SyncEngine, op: tuple[Any, ...], n: int, read_after: int) -> list[NewEvent]:
    """A pending fetch command carried out: the ticket as read, then the outcome."""
    _, pick, status, priority, fresh = op
    pending = sorted(
        (c for c in engine.state.outbox.values() if c.kind.endswith("fetch_ticket")),
        key=lambda c: c.issued_at,
    )
    if not pending:
        return []
    command = pending[pick % len(pending)]
    link = engine.state.links[command.link_id]
    side = command.target
    ident = link.ticket_id(side)
    if ident is None:
        return []
    # Read within the second sync already knows of (a later second would simply be newer).
    at = link.fields["priority"].side(side).seen_at or second(n)
    extra = {"via": "fetch", "read_after": read_after, "fresh": fresh}
    if side == "cw":
        status = status if status[0].isupper() else "Solved" if status == "solved" else "New"
        data = {"id": ident, "summary": f"t{ident}", "status": status,
                "priority": CW_PRIORITIES[priority], "board": "SOC Incidents",
                "company_id": 250, "own_write": False, "external_ref": None,
                "updated_at": at, **extra}  # fmt: skip
        seen = NewEvent(f"cw:ticket:{ident}", kinds.CW_TICKET_OBSERVED, data, tenant="acme",
                        ticket=f"cw:{ident}", source="connectwise", occurred_at=at)  # fmt: skip
    else:
        status = status.lower() if status != "In Progress" else "open"
        data = {"id": ident, "subject": f"s{ident}", "status": status, "priority": priority,
                "organization_id": 9001, "external_id": None, "updated_at": at,
                **extra}  # fmt: skip
        seen = NewEvent(f"soc:ticket:{ident}", kinds.SOC_TICKET_OBSERVED, data, tenant="acme",
                        ticket=f"soc:{ident}", source="soc", occurred_at=at)  # fmt: skip
    outcome = NewEvent(
        f"outbox:{command.link_id}", kinds.COMMAND_DELIVERED,
        {"command_id": command.command_id, "kind": command.kind,
         "link_id": command.link_id, "result": {"fresh": fresh}, "attempt": 1},
        tenant="acme", ticket=command.link_id,
        event_id=derived_event_id("outbox", command.command_id, "delivered"),
        causation_id=command.command_id, source=kinds.OUTBOX_SOURCE,
    )  # fmt: skip
    return [seen, outcome]


async def play(
    path: Path, history: list[tuple[Any, ...]]
) -> tuple[Any, Any, Any, list[RecordedEvent]]:
    store = await EventStore.open(path, synchronous="NORMAL")
    live = Live(store)
    engine = await live.start()
    for n, op in enumerate(history):
        if op[0] == "restart":
            await live.settle()
            await live.stop()
            engine = await live.start()
            continue
        if op[0] == "fetch":
            events = fetched(engine, op, n, await store.last_position())
        else:
            event = delivered(engine, op[1], n) if op[0] == "deliver" else observation(op, n)
            events = [event] if event is not None else []
        for event in events:
            await store.append([event])
            await live.settle()
    await live.settle()
    await engine.save()
    await live.stop()
    events = [e async for e in store.read()]
    rebuilt = fold(events)
    persisted = await ProjectionStore(store).load()
    await store.close()
    return engine.state.to_json(), rebuilt.to_json(), persisted.to_json(), events


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(histories)
def test_rebuild_from_zero_equals_live_state_and_persisted_rows(
    history: list[tuple[Any, ...]],
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        live, rebuilt, persisted, _ = asyncio.run(play(Path(tmp) / "e.db", history))
    assert rebuilt == live
    assert persisted == live


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(histories)
def test_every_history_is_folded_and_decided_as_the_dict_model_did(
    history: list[tuple[Any, ...]],
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        *_, events = asyncio.run(play(Path(tmp) / "e.db", history))
    same_as_legacy(events, RULES)


def test_a_routed_ticket_history_builds_links_and_commands() -> None:
    """The generator's building blocks do reach the interesting states."""
    history = [
        ("cw_ticket", 1, "Send to SOC", CW_PRIORITIES["high"], False),
        ("deliver", 0, None, None, None),
        ("cw_note", 1, 1, "Discussion", False),
        ("restart", None, None, None, None),
        ("soc_comment", 11, 1, None, None),
    ]
    with tempfile.TemporaryDirectory() as tmp:
        live, rebuilt, persisted, _ = asyncio.run(play(Path(tmp) / "e.db", history))
    assert rebuilt == live == persisted
    assert live["links"]["cw:1"]["state"] == "linked"
    assert any(c["kind"] == "soc.add_comment" for c in live["outbox"].values())


def test_a_same_second_change_is_read_again_and_the_fresh_read_decides() -> None:
    """Two observations of one ticket within one second that disagree: sync takes
    neither, issues a fetch, and the fresh read decides (and the rebuild agrees)."""
    history = [
        ("cw_ticket", 1, "Send to SOC", CW_PRIORITIES["normal"], False),
        ("deliver", 0, None, None, None),
        ("cw_ticket", 1, "Send to SOC", CW_PRIORITIES["low"], False),
        ("cw_same", 1, "Send to SOC", CW_PRIORITIES["high"], False),
        ("fetch", 0, "In Progress", "high", True),
    ]
    with tempfile.TemporaryDirectory() as tmp:
        live, rebuilt, persisted, _ = asyncio.run(play(Path(tmp) / "e.db", history))
    assert rebuilt == live == persisted
    priority = live["links"]["cw:1"]["fields"]["priority"]
    assert priority["cw"] == "high"
    writes = [c["params"]["fields"] for c in live["outbox"].values() if "fields" in c["params"]]
    # "low" was written first; "high" (the fresh read) after; nothing for the ambiguous one.
    assert writes == [{"priority": "low"}, {"priority": "high"}]


def test_a_fetch_that_is_not_fresh_decides_nothing_and_reads_again() -> None:
    """A read that something else was recorded during cannot be ordered either."""
    history = [
        ("cw_ticket", 1, "Send to SOC", CW_PRIORITIES["normal"], False),
        ("deliver", 0, None, None, None),
        ("cw_ticket", 1, "Send to SOC", CW_PRIORITIES["low"], False),
        ("cw_same", 1, "Send to SOC", CW_PRIORITIES["high"], False),
        ("fetch", 0, "In Progress", "high", False),
    ]
    with tempfile.TemporaryDirectory() as tmp:
        live, rebuilt, persisted, _ = asyncio.run(play(Path(tmp) / "e.db", history))
    assert rebuilt == live == persisted
    assert live["links"]["cw:1"]["fields"]["priority"]["cw"] == "low"
    kinds_ = sorted(c["kind"] for c in live["outbox"].values())
    assert kinds_ == ["cw.fetch_ticket", "soc.update_ticket"]


async def test_a_save_that_waited_for_the_previous_one_checks_its_state_again(
    tmp_path: Path,
) -> None:
    # The engine may save only between a cause and its decisions. A save that had to wait
    # for the one before it (the idle saver behind a periodic one) takes the rows when it
    # gets its turn; by then folding may have moved on, so it asks again, and skips.
    store = await EventStore.open(tmp_path / "e.db", synchronous="NORMAL")
    try:
        projections = ProjectionStore(store)
        await projections.load()  # as the engine does at start (it creates the tables)
        first, second = BridgeState(position=3), BridgeState(position=5)
        quiet = True
        saving = asyncio.create_task(projections.save(first))
        waiting = asyncio.create_task(projections.save(second, when=lambda: quiet))
        await asyncio.sleep(0)  # both start: the first writes, the second waits its turn
        quiet = False  # the engine folded a cause meanwhile
        assert await saving >= 1
        assert await waiting == -1
        assert (await ProjectionStore(store).load()).position == 3
    finally:
        await store.close()
