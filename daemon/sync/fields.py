"""Deciding one field of one observation: a chain of named steps, the first that applies decides.

An observation of a ticket shows each synced field (``status``, ``priority``)
with a value and the ticket's source time. Against what the link knows of that
field on both desks, the field is, in this order:

1. **stale**: older than what is known of that desk (a late poll, a duplicated
   or reordered delivery): its value was superseded; nothing to decide;
2. **a repeat**: from the same second as the known value, and the same value:
   nothing new (an echo of our own write is said so, as a ``repeat``);
3. **ambiguous**: from the same second, with another value, and not a fresh
   fetch read after the known value was set. Source times have one-second
   resolution, so which came last cannot be told: nothing is decided, and the
   ticket is read again (a ``{side}.fetch_ticket`` command);
4. **unchanged**: newer, same value: recorded, so anything older is stale;
5. **an echo**: a value socbridge is writing there coming back;
6. **a conflict**: the other desk moved the field too, to another value, since
   the last agreed value: resolved by the configured policy;
7. **a change**: copied to the other desk.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from daemon.sync.decision import Decision, issue_update
from projections import kinds
from projections.state import FieldName, FieldState, Link, Side, SideState, later, other


@dataclass(frozen=True, slots=True)
class FieldSeen:
    """One field of one observation of a desk.

    ``own_write`` says socbridge's API member touched the *ticket* last; ``read_after``
    is set on a fresh fetch: the ticket was read after that log position, and nothing
    else was recorded of it between the read and its observation.
    """

    name: FieldName
    side: Side
    value: str
    at: str | None
    own_write: bool = False
    read_after: int | None = None


@dataclass(frozen=True, slots=True)
class _Case:
    link: Link
    field: FieldState
    seen: FieldSeen
    #: What is known of the observed desk, and of the other one.
    mine: SideState
    theirs: SideState
    #: The observation's time against the newest known of its desk (None: either unknown).
    order: int | None


def decide_field(d: Decision, link: Link, seen: FieldSeen) -> None:
    """Decide one field of one observation (see the module docstring for the steps)."""
    f = link.fields[seen.name]
    mine, theirs = f.side(seen.side), f.side(other(seen.side))
    timed = seen.at is not None and mine.seen_at is not None
    order = later(seen.at, mine.seen_at) if timed else None
    case = _Case(link, f, seen, mine, theirs, order)
    for step in STEPS:
        if step(d, case):
            return


def stale(d: Decision, c: _Case) -> bool:
    """Older than what is known of this desk: superseded, nothing to decide."""
    return c.order is not None and c.order < 0


def repeat(d: Decision, c: _Case) -> bool:
    """The known value seen again from the same second: nothing new. When socbridge wrote
    that value there, the echo is recorded as a ``repeat``: it confirms nothing not known
    already (a later write of the same value, still in flight, has not landed by it)."""
    if c.order != 0 or c.seen.value != c.mine.value:
        return False
    if c.mine.was_written(c.seen.value):
        s = c.seen
        d.emit(
            kinds.ECHO_RECOGNISED,
            c.link,
            {"kind": "field", "field": s.name, "side": s.side, "value": s.value, "at": s.at,
             "repeat": True},
        )  # fmt: skip
    return True


def ambiguous(d: Decision, c: _Case) -> bool:
    """Another value from the same second as the known one, not a fresh fetch read after it.

    Which came last cannot be told from the times: neither is acted on; the ticket is
    read again, and that read (newer than both) decides. That holds for a value socbridge
    wrote there earlier too: ``own_write`` says who last touched the *ticket*, and a
    person may have set this field back to that value just before socbridge wrote
    another one.
    """
    if c.order != 0 or _fetched_since(c):
        return False
    s, link = c.seen, c.link
    # One read of the ticket at a time: a read waiting or under way answers this too
    # if it starts after this was recorded; if it started before, its observation finds
    # this still awaiting a read and asks for one more (see read_again), shared by all
    # that came meanwhile.
    waits_for = pending_read(d, link, s.side)
    asks = waits_for is None and s.side not in d.fetching
    d.emit(
        kinds.OBSERVATION_IGNORED,
        link,
        {
            "reason": "ambiguous",
            "field": s.name,
            "side": s.side,
            "value": s.value,
            "at": s.at,
            "known": c.mine.value,
            "detail": f"{s.value!r} and the known {c.mine.value!r} were both current at {s.at} "
            "(one-second source times); the ticket is read again to tell which is current",
            "fetch": asks,
            "seen_position": d.cause.position,
            **({"waits_for": waits_for} if waits_for is not None else {}),
        },
    )
    if asks:
        ask_read(d, link, s.side, {"reason": "ambiguous", "field": s.name, "at": s.at})
    return True


def pending_read(d: Decision, link: Link, side: Side) -> str | None:
    """The id of a read of ``link``'s ticket on ``side`` that is waiting or under way (not
    the one this observation is the answer of, nor one parked for an operator)."""
    fetch, answered = f"{side}.fetch_ticket", d.cause.data.get("fetch")
    for cmd in d.state.commands_of(link.link_id):
        if cmd.kind == fetch and cmd.command_id != answered and cmd.parked is None:
            return cmd.command_id
    return None


def ask_read(d: Decision, link: Link, side: Side, params: dict[str, object]) -> None:
    """Issue a read of ``link``'s ticket on ``side`` (at most one per input)."""
    d.fetching.add(side)
    if side == "cw":
        params["api_member"] = d.rules.api_member
    d.command(link, f"{side}.fetch_ticket", params)


def read_again(d: Decision, link: Link, side: Side) -> None:
    """A read was delivered: ambiguous observations that came while it was under way
    (after it started, or after its observation) still await one, so one more is
    asked for them all, unless one is waiting already."""
    if side not in link.awaiting_read or side in d.fetching:
        return
    if pending_read(d, link, side) is None:
        ask_read(d, link, side, {"reason": "ambiguous", "after_read": d.cause.data["command_id"]})


def _fetched_since(c: _Case) -> bool:
    """Whether a fresh fetch was read after the side's known value was recorded: then it
    shows the ticket as it is now, at least as new as anything known of it."""
    read_after = c.seen.read_after
    return read_after is not None and read_after >= (c.mine.known_at or 0)


def unchanged(d: Decision, c: _Case) -> bool:
    """The known value, newer: what is known holds as of this time. Even when one of our
    writes in flight carries this value too, this shows the value known before it as
    well (A -> B -> A in flight), so it confirms none of them; their delivery will."""
    if c.seen.value != c.mine.value:
        return False
    if c.seen.at is not None:
        d.unchanged.append(c.seen.name)
    return True


def echo(d: Decision, c: _Case) -> bool:
    """Our own write coming back (or, untimed, a late repeat of it): never re-sent.

    ``own_write`` says who last touched the *ticket*: a person may have changed this
    field just before socbridge wrote another one. So it only makes an echo of a value
    socbridge wrote there earlier (or the other side's) when source times cannot tell
    (one of them unknown). An observation newer than everything known of the side, or a
    fresh fetch, showing a value no write in flight carries shows a change.
    """
    s = c.seen
    in_flight = c.mine.expects(s.value) is not None
    untimed = s.at is None or c.mine.seen_at is None
    late_own = (
        s.own_write and untimed and (s.value == c.theirs.value or c.mine.was_written(s.value))
    )
    if not (in_flight or late_own):
        return False
    d.emit(
        kinds.ECHO_RECOGNISED,
        c.link,
        {"kind": "field", "field": s.name, "side": s.side, "value": s.value, "at": s.at},
    )
    return True


def conflict(d: Decision, c: _Case) -> bool:
    """The other desk moved too, to another value: resolved by the field's policy.

    The other side moved on its own when a person changed it there (a value socbridge
    wrote there came from this side, or from a conflict already decided), or when a
    change of it is on its way here (one of our writes to this side is in flight).
    """
    s, theirs = c.seen, c.theirs
    moved = (theirs.value != c.field.base and not theirs.written_by_us) or bool(c.mine.expected)
    if not moved or theirs.value is None or theirs.value == s.value:
        return False
    o = other(s.side)
    policy = d.rules.policy.get(s.name, "latest")
    if policy == "latest":
        order = later(s.at, theirs.changed_at)
        winner: str = s.side if order > 0 else o if order < 0 else "soc"
    else:
        winner = policy
    writes: dict[str, str] = {}
    if winner == s.side:
        writes[o] = s.value
        in_flight = c.mine.expected_values
        if in_flight and in_flight[-1] != s.value:
            writes[s.side] = s.value  # our stale write to this side must not stick
    else:
        writes[s.side] = theirs.value
    d.emit(
        kinds.CONFLICT_RESOLVED,
        c.link,
        {
            "field": s.name,
            "side": s.side,
            "value": s.value,
            "at": s.at,
            "other_value": theirs.value,
            "other_at": theirs.changed_at,
            "base": c.field.base,
            "policy": policy,
            "winner": winner,
            "writes": writes,
        },
    )
    for target, value in writes.items():
        issue_update(d, c.link, _side(target), s.name, value, seen=(s.side, s.value))
    return True


def change(d: Decision, c: _Case) -> bool:
    """A person changed the field on this desk: copied to the other one (unless it holds
    that value already, with none of our writes of another value on its way there)."""
    s, theirs = c.seen, c.theirs
    o = other(s.side)
    pending = theirs.expected_values
    copy = theirs.value != s.value or bool(pending and pending[-1] != s.value)
    writes = {o: s.value} if copy else {}
    d.emit(
        kinds.FIELD_DECIDED,
        c.link,
        {"field": s.name, "side": s.side, "value": s.value, "at": s.at, "writes": writes},
    )
    if writes:
        issue_update(d, c.link, o, s.name, s.value)
    return True


def _side(name: str) -> Side:
    return "cw" if name == "cw" else "soc"


#: The steps, in the order they are tried; the first that applies decides.
STEPS: tuple[Callable[[Decision, _Case], bool], ...] = (
    stale,
    repeat,
    ambiguous,
    unchanged,
    echo,
    conflict,
    change,
)
