"""The bridge's read model: links, their fields per desk, notes, and the outbox.

Per link and field (``status``, ``priority``) the model keeps, for each desk,
a :class:`SideState`: the value last known there, when a person last changed
it (source time), the newest source time seen of it, where in the log that
value was last set or confirmed, whether socbridge wrote it there, the writes
in flight to that desk (each with its command id, in the order they land),
and the values recently written there. :class:`FieldState` holds both desks'
records and the ``base``, the last value both agreed on. That is what tells an
echo from a person's change, and a concurrent change from a plain one, even
with several writes in flight (see ``daemon/sync/decide.py``).

Source times have one-second resolution, which is why a field keeps the
newest time seen and the log position of the known value: an observation from
the same second as the known value, with another value, is ambiguous unless it
is a fresh fetch read after that position.

The model is saved as JSON rows (``projections/persist.py``) whose shape is the
file format: :meth:`BridgeState.to_json` and :meth:`BridgeState.from_json`
write and read exactly that shape, and :func:`decode_link` refuses a row it
cannot read rather than misread it. A key that is ``None`` in a record below
(``seen_at``, ``known_at``, ``ours``, ``wrote``, ``settled``) is absent from the
row until it is first set.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, TypeGuard, cast

Side = Literal["cw", "soc"]
FieldName = Literal["status", "priority"]
LinkStatus = Literal["requested", "linked", "unlinked"]

SIDES: tuple[Side, Side] = ("cw", "soc")
FIELDS: tuple[FieldName, FieldName] = ("status", "priority")

#: A JSON value as the log and the rows hold it (command parameters are kept as issued).
Json = None | bool | int | float | str | list["Json"] | dict[str, "Json"]
JsonObject = dict[str, Json]


class ModelError(ValueError):
    """A saved row does not have the shape this model writes: it is rebuilt from the log."""


def later(a: str | None, b: str | None) -> int:
    """Compare two source timestamps (ISO 8601): 1 when ``a`` is later, -1 when earlier,
    0 when equal; an unknown time counts as the earliest."""
    if a is None or b is None:
        return 0 if a == b else (1 if b is None else -1)
    ta = datetime.fromisoformat(a.replace("Z", "+00:00"))
    tb = datetime.fromisoformat(b.replace("Z", "+00:00"))
    return (ta > tb) - (ta < tb)


def other(side: Side) -> Side:
    return "soc" if side == "cw" else "cw"


def is_side(value: object) -> TypeGuard[Side]:
    return value in SIDES


def is_field_name(value: object) -> TypeGuard[FieldName]:
    return value in FIELDS


def as_side(value: object) -> Side:
    if not is_side(value):
        raise ModelError(f"{value!r} is not a desk (cw or soc)")
    return value


def as_field_name(value: object) -> FieldName:
    if not is_field_name(value):
        raise ModelError(f"{value!r} is not a synced field (status or priority)")
    return value


# --------------------------------------------------------------------- records


@dataclass(slots=True)
class ExpectedWrite:
    """A value socbridge is writing (or has written) to a desk and expects to see come back.

    ``command_id`` names the update that writes it; ``None`` for what a ticket socbridge
    creates is expected to hold (its create's delivery settles that), and for writes
    loaded from saved rows that carry no command ids.
    """

    value: str
    command_id: str | None


@dataclass(slots=True)
class SideState:
    """One field as known on one desk."""

    #: The value last known there (``None`` before anything was known).
    value: str | None = None
    #: Source time of the last change a person made there that sync decided on.
    changed_at: str | None = None
    #: The newest source time observed of this desk's field: anything older is stale.
    seen_at: str | None = None
    #: Log position where ``value`` was last set or confirmed: a fetch read before it
    #: cannot tell whether it is newer (same-second source times).
    known_at: int | None = None
    #: Whether ``value`` was written there by socbridge (a copy, not a person's change).
    ours: bool | None = None
    #: socbridge's writes to this desk not seen landing yet, in the order they land.
    expected: list[ExpectedWrite] = field(default_factory=list)
    #: The last few values written there: a late callback of an older write carries one.
    wrote: list[str] | None = None

    @property
    def written_by_us(self) -> bool:
        return bool(self.ours)

    @property
    def expected_values(self) -> list[str]:
        return [w.value for w in self.expected]

    def expects(self, value: str) -> int | None:
        """Index of the first write in flight carrying ``value``, if any."""
        for i, write in enumerate(self.expected):
            if write.value == value:
                return i
        return None

    def expected_command(self, command_id: str) -> int | None:
        """Index of the write in flight made by ``command_id``, if any."""
        for i, write in enumerate(self.expected):
            if write.command_id == command_id:
                return i
        return None

    def landed_through(self, i: int) -> None:
        """Writes land in order: the expected write at ``i`` and every one before it."""
        del self.expected[: i + 1]

    def saw(self, at: str | None) -> None:
        """Remember the newest source time known of this desk (older observations are stale)."""
        if at is not None and (self.seen_at is None or later(at, self.seen_at) > 0):
            self.seen_at = at

    def remember_written(self, value: str, keep: int = 4) -> None:
        wrote = self.wrote if self.wrote is not None else []
        wrote.append(value)
        del wrote[:-keep]
        self.wrote = wrote

    def forget_written(self, value: str) -> None:
        """Forget the last time ``value`` was written here (its write never landed)."""
        wrote = self.wrote or []
        for i in range(len(wrote) - 1, -1, -1):
            if wrote[i] == value:
                del wrote[i]
                return

    def was_written(self, value: str) -> bool:
        return value in (self.wrote or ())


@dataclass(slots=True)
class FieldState:
    """One synced field of a link: each desk's record and the last agreed value."""

    cw: SideState = field(default_factory=SideState)
    soc: SideState = field(default_factory=SideState)
    #: The last value both desks agreed on.
    base: str | None = None

    def side(self, side: Side) -> SideState:
        return self.cw if side == "cw" else self.soc

    def agree(self) -> None:
        """When both desks hold the same value, that is the new base."""
        if self.cw.value is not None and self.cw.value == self.soc.value:
            self.base = self.cw.value

    @property
    def in_flight(self) -> bool:
        return bool(self.cw.expected or self.soc.expected)


NoteState = Literal["pending", "mirrored", "echo", "skipped"]


@dataclass(frozen=True, slots=True)
class NoteMirror:
    """What became of one note or comment (keyed ``cw:{note id}`` / ``soc:{comment id}``).

    ``mirrored`` names its ``partner``: the copy on the other desk, or, for a copy
    socbridge wrote, the note it copies.
    """

    state: NoteState
    partner: str | None = None
    reason: str | None = None

    def to_json(self) -> str:
        if self.state == "mirrored":
            return self.partner or ""
        if self.state == "skipped":
            return f"skipped:{self.reason}"
        return self.state

    @classmethod
    def from_json(cls, text: str) -> NoteMirror:
        if text == "pending":
            return PENDING
        if text == "echo":
            return ECHO
        if text.startswith("skipped:"):
            return cls("skipped", reason=text.removeprefix("skipped:"))
        return cls("mirrored", partner=text)


#: The two note states without a partner, shared: a link holds one per note.
PENDING = NoteMirror("pending")
ECHO = NoteMirror("echo")


@dataclass(slots=True)
class Link:
    """Two tickets, one per desk, kept in sync (or a ticket waiting for its partner)."""

    link_id: str
    tenant: str
    #: The desk whose ticket came first; socbridge creates the partner on the other.
    origin: Side
    requested_at: int
    state: LinkStatus = "requested"
    cw_id: int | None = None
    soc_id: int | None = None
    linked_at: int | None = None
    unlinked_at: int | None = None
    unlinked_reason: str | None = None
    fields: dict[FieldName, FieldState] = field(
        default_factory=lambda: {name: FieldState() for name in FIELDS}
    )
    notes: dict[str, NoteMirror] = field(default_factory=dict)
    #: Per desk, the log position of the latest ambiguous observation no read has answered
    #: yet: a fresh fetch read after it clears it (see daemon/sync/fields.py, ambiguous).
    awaiting_read: dict[Side, int] = field(default_factory=dict)

    def ticket_id(self, side: Side) -> int | None:
        return self.cw_id if side == "cw" else self.soc_id

    def set_ticket_id(self, side: Side, ticket_id: int | None) -> None:
        if side == "cw":
            self.cw_id = ticket_id
        else:
            self.soc_id = ticket_id

    @property
    def active(self) -> bool:
        return self.state in ("requested", "linked")

    def ticket_keys(self) -> frozenset[str]:
        """The ``ticket`` keys of a timeline of this link: its own (its decisions, commands
        and outcomes) and each side's ticket (``cw:ID``, ``soc:ID``: the observations)."""
        keys = {self.link_id}
        for side in SIDES:
            ticket_id = self.ticket_id(side)
            if ticket_id is not None:
                keys.add(f"{side}:{ticket_id}")
        return frozenset(keys)


@dataclass(frozen=True, slots=True)
class Parked:
    """Why a command waits for an operator: the remote's definitive refusal."""

    remote_status: str
    message: str
    parked_at: int  # log position of the ``outbox.command.parked`` event


@dataclass(slots=True)
class PendingCommand:
    """A command sync (or an audit repair) issued that has no final outcome yet.

    ``kind`` is ``{desk}.{action}`` (``soc.update_ticket``, ``cw.add_note``, ...);
    ``params`` are kept exactly as issued, for the outbox to carry out.
    """

    command_id: str
    kind: str
    link_id: str
    tenant: str | None
    params: JsonObject
    issued_at: int
    attempts: int = 0
    last_error: str | None = None
    #: Fields an echo settled before the delivery was recorded: the write may then only
    #: find its own value there, never overwrite what came after.
    settled: list[FieldName] | None = None
    #: Set while the remote's definitive refusal holds it (and its lane) back.
    parked: Parked | None = None

    @property
    def target(self) -> Side:
        return as_side(self.kind.split(".", 1)[0])

    @property
    def action(self) -> str:
        return self.kind.split(".", 1)[1]

    @property
    def is_create(self) -> bool:
        return self.kind.endswith(".create_ticket")

    @property
    def is_update(self) -> bool:
        return self.kind.endswith(".update_ticket")

    @property
    def is_fetch(self) -> bool:
        return self.kind.endswith(".fetch_ticket")

    @property
    def is_note(self) -> bool:
        return self.action in ("add_note", "add_comment")

    @property
    def lane(self) -> str:
        """Commands of one lane are carried out one at a time, oldest first: a link's
        writes to one side in the order decided; its fetches (reads, which order
        nothing) in a lane of their own. A write parked on one side holds that side's
        later writes (their order is the ticket's history), never the other side's."""
        return f"{self.link_id}#fetch" if self.is_fetch else f"{self.link_id}>{self.target}"

    def field_writes(self) -> dict[FieldName, str]:
        """The normalised values an update writes, per field (nothing for other kinds)."""
        fields = self.params.get("fields") if self.is_update else None
        if not isinstance(fields, dict):
            return {}
        return {as_field_name(k): _text(v, "fields") for k, v in fields.items()}


@dataclass(slots=True)
class AbandonedCommand:
    """A command that will not be delivered, and why (the audit lists and repairs these)."""

    command: PendingCommand
    reason: str
    abandoned_at: int


@dataclass
class BridgeState:
    """The folded state of the whole log up to ``position``."""

    position: int = 0
    links: dict[str, Link] = field(default_factory=dict)
    by_cw: dict[str, str] = field(default_factory=dict)
    by_soc: dict[str, str] = field(default_factory=dict)
    #: ConnectWise ticket ids that were unlinked: never linked again (R3).
    unlinked: dict[str, int] = field(default_factory=dict)
    outbox: dict[str, PendingCommand] = field(default_factory=dict)
    abandoned: dict[str, AbandonedCommand] = field(default_factory=dict)
    #: tenant -> enabled, for tenants switched by the operator (overrides the config)
    tenant_switches: dict[str, bool] = field(default_factory=dict)
    conflicts: int = 0
    removed: bool = False
    config_hash: str | None = None
    #: Links folded into since the projection rows were last saved (not part of the state:
    #: it tells a save which rows may have changed, so it encodes only those).
    touched: set[str] = field(default_factory=set, compare=False, repr=False)

    def link_for(self, side: Side, ticket_id: int | str) -> Link | None:
        index = self.by_cw if side == "cw" else self.by_soc
        link_id = index.get(str(ticket_id))
        return self.links.get(link_id) if link_id else None

    def commands_of(self, link_id: str) -> Iterator[PendingCommand]:
        return (c for c in self.outbox.values() if c.link_id == link_id)

    def parked(self) -> list[PendingCommand]:
        """The commands a desk refused for good, oldest first."""
        return sorted(
            (c for c in self.outbox.values() if c.parked is not None), key=lambda c: c.issued_at
        )

    def derive_indexes(self) -> None:
        """Rebuild the lookup maps from the links (they are not stored separately)."""
        self.by_cw.clear()
        self.by_soc.clear()
        self.unlinked.clear()
        for link_id, link in self.links.items():
            if link.cw_id is not None:
                self.by_cw[str(link.cw_id)] = link_id
            if link.soc_id is not None:
                self.by_soc[str(link.soc_id)] = link_id
            if link.state == "unlinked" and link.cw_id is not None and link.unlinked_at is not None:
                self.unlinked[str(link.cw_id)] = link.unlinked_at

    def to_json(self) -> JsonObject:
        return {
            **self.to_json_parts(),
            "links": {k: encode_link(v) for k, v in self.links.items()},
            "outbox": {k: encode_command(v) for k, v in self.outbox.items()},
        }

    def to_json_parts(self) -> JsonObject:
        """:meth:`to_json` but for ``links`` and ``outbox`` (``None`` there): the parts that
        are small, for a caller that encodes those two record by record."""
        return {
            "position": self.position,
            "links": None,
            "by_cw": dict(self.by_cw),
            "by_soc": dict(self.by_soc),
            "unlinked": dict(self.unlinked),
            "outbox": None,
            **{key: encode_meta(self, key) for key in META_KEYS},
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Json]) -> BridgeState:
        state = cls(position=_int(data.get("position"), "position"))
        state.links = {k: decode_link(v) for k, v in _object(data.get("links"), "links").items()}
        state.outbox = {
            k: decode_command(v) for k, v in _object(data.get("outbox"), "outbox").items()
        }
        for key in META_KEYS:
            decode_meta(state, key, data.get(key))
        state.derive_indexes()
        return state


# --------------------------------------------------------------------- the row format

#: The state's parts saved as ``projection_meta`` rows, by key.
META_KEYS = ("abandoned", "tenant_switches", "conflicts", "removed", "config_hash")


def encode_side(side: Side, s: SideState, into: JsonObject) -> None:
    into[side] = s.value
    into[f"{side}_at"] = s.changed_at
    into[f"expect_{side}"] = [w.value for w in s.expected]
    into[f"expect_{side}_ids"] = [w.command_id for w in s.expected]
    if s.seen_at is not None:
        into[f"{side}_seen"] = s.seen_at
    if s.known_at is not None:
        into[f"{side}_pos"] = s.known_at
    if s.ours is not None:
        into[f"{side}_ours"] = s.ours
    if s.wrote is not None:
        into[f"wrote_{side}"] = list(s.wrote)


def encode_field(f: FieldState) -> JsonObject:
    out: JsonObject = {"base": f.base}
    encode_side("cw", f.cw, out)
    encode_side("soc", f.soc, out)
    return out


def encode_link(link: Link) -> JsonObject:
    return {
        "link_id": link.link_id,
        "tenant": link.tenant,
        "origin": link.origin,
        "cw_id": link.cw_id,
        "soc_id": link.soc_id,
        "state": link.state,
        "requested_at": link.requested_at,
        "linked_at": link.linked_at,
        "unlinked_at": link.unlinked_at,
        "unlinked_reason": link.unlinked_reason,
        "fields": {name: encode_field(f) for name, f in link.fields.items()},
        "notes": {key: note.to_json() for key, note in link.notes.items()},
        **(
            {"awaiting_read": {k: v for k, v in link.awaiting_read.items()}}
            if link.awaiting_read
            else {}
        ),
    }


def encode_command(c: PendingCommand) -> JsonObject:
    out: JsonObject = {
        "command_id": c.command_id,
        "kind": c.kind,
        "link_id": c.link_id,
        "tenant": c.tenant,
        "params": c.params,
        "issued_at": c.issued_at,
        "attempts": c.attempts,
        "last_error": c.last_error,
    }
    if c.settled is not None:
        out["settled"] = list(c.settled)
    if c.parked is not None:
        p = c.parked
        out["parked"] = {"remote_status": p.remote_status, "message": p.message,
                         "parked_at": p.parked_at}  # fmt: skip
    return out


def encode_abandoned(a: AbandonedCommand) -> JsonObject:
    return {**encode_command(a.command), "reason": a.reason, "abandoned_at": a.abandoned_at}


def encode_meta(state: BridgeState, key: str) -> Json:
    if key == "abandoned":
        return {k: encode_abandoned(v) for k, v in state.abandoned.items()}
    if key == "tenant_switches":
        return dict(state.tenant_switches)
    if key == "conflicts":
        return state.conflicts
    if key == "removed":
        return state.removed
    if key == "config_hash":
        return state.config_hash
    raise KeyError(key)


def decode_meta(state: BridgeState, key: str, value: Json) -> None:
    if key == "abandoned":
        state.abandoned = {k: decode_abandoned(v) for k, v in _object(value, "abandoned").items()}
    elif key == "tenant_switches":
        switches = _object(value, "tenant_switches")
        state.tenant_switches = {k: _bool(v, "tenant_switches") for k, v in switches.items()}
    elif key == "conflicts":
        state.conflicts = _int(value, "conflicts")
    elif key == "removed":
        state.removed = _bool(value, "removed")
    elif key == "config_hash":
        state.config_hash = _opt_text(value, "config_hash")
    else:
        raise ModelError(f"unknown projection meta key {key!r}")


#: Per desk, the row keys of its record in a field: value, changed_at, expected values,
#: their command ids, seen_at, known_at, ours, wrote.
_SIDE_KEYS = {
    side: (side, f"{side}_at", f"expect_{side}", f"expect_{side}_ids", f"{side}_seen",
           f"{side}_pos", f"{side}_ours", f"wrote_{side}")
    for side in SIDES
}  # fmt: skip


def decode_side(side: Side, f: Mapping[str, Json]) -> SideState:
    # Every link's fields are decoded at each start: checked inline, not call by call.
    k_value, k_at, k_expect, k_ids, k_seen, k_pos, k_ours, k_wrote = _SIDE_KEYS[side]
    value, at, seen, pos, ours = (
        f.get(k_value),
        f.get(k_at),
        f.get(k_seen),
        f.get(k_pos),
        f.get(k_ours),
    )
    expect, ids, wrote = f.get(k_expect), f.get(k_ids), f.get(k_wrote)
    if not (
        (value is None or type(value) is str)
        and (at is None or type(at) is str)
        and (seen is None or type(seen) is str)
        and (pos is None or type(pos) is int)
        and (ours is None or type(ours) is bool)
        and type(expect) is list
        and all(type(v) is str for v in expect)
        and (wrote is None or (type(wrote) is list and all(type(v) is str for v in wrote)))
        and (not ids or (type(ids) is list and all(v is None or type(v) is str for v in ids)))
    ):
        raise ModelError(f"the {side} record of a field holds a value of the wrong type")
    # Checked above: the casts only tell the type checker what the check established.
    values = cast(list[str], expect)
    command_ids = (
        cast(list[str | None], ids) if ids and len(cast(list[Json], ids)) == len(values) else None
    )
    if command_ids is None:
        # Rows that carry no command id per write: the writes are known by value only.
        command_ids = [None] * len(values)
    return SideState(
        value,
        at,
        seen,
        pos,
        ours,
        [ExpectedWrite(v, i) for v, i in zip(values, command_ids, strict=True)],
        cast(list[str] | None, wrote),
    )


def decode_field(value: Json) -> FieldState:
    f = _object(value, "field")
    return FieldState(
        cw=decode_side("cw", f), soc=decode_side("soc", f), base=_opt_text(f.get("base"), "base")
    )


def decode_link(value: Json) -> Link:
    d = _object(value, "link")
    state = d.get("state")
    if state not in ("requested", "linked", "unlinked"):
        raise ModelError(f"link state {state!r} is unknown")
    return Link(
        link_id=_text(d.get("link_id"), "link_id"),
        tenant=_text(d.get("tenant"), "tenant"),
        origin=as_side(d.get("origin")),
        requested_at=_int(d.get("requested_at"), "requested_at"),
        state=cast(LinkStatus, state),
        cw_id=_opt_int(d.get("cw_id"), "cw_id"),
        soc_id=_opt_int(d.get("soc_id"), "soc_id"),
        linked_at=_opt_int(d.get("linked_at"), "linked_at"),
        unlinked_at=_opt_int(d.get("unlinked_at"), "unlinked_at"),
        unlinked_reason=_opt_text(d.get("unlinked_reason"), "unlinked_reason"),
        fields={
            as_field_name(k): decode_field(v) for k, v in _object(d.get("fields"), "fields").items()
        },
        notes={
            k: NoteMirror.from_json(_text(v, "note"))
            for k, v in _object(d.get("notes"), "notes").items()
        },
        awaiting_read={
            as_side(k): _int(v, "awaiting_read")
            for k, v in _object(d.get("awaiting_read", {}), "awaiting_read").items()
        },
    )


def decode_command(value: Json) -> PendingCommand:
    d = _object(value, "command")
    settled = d.get("settled")
    parked = d.get("parked")
    return PendingCommand(
        command_id=_text(d.get("command_id"), "command_id"),
        kind=_text(d.get("kind"), "kind"),
        link_id=_text(d.get("link_id"), "link_id"),
        tenant=_opt_text(d.get("tenant"), "tenant"),
        params=_object(d.get("params"), "params"),
        issued_at=_int(d.get("issued_at"), "issued_at"),
        attempts=_int(d.get("attempts"), "attempts"),
        last_error=_opt_text(d.get("last_error"), "last_error"),
        settled=None if settled is None else [as_field_name(v) for v in _list(settled, "settled")],
        parked=None if parked is None else decode_parked(parked),
    )


def decode_parked(value: Json) -> Parked:
    d = _object(value, "parked")
    return Parked(
        remote_status=_text(d.get("remote_status"), "remote_status"),
        message=_text(d.get("message"), "message"),
        parked_at=_int(d.get("parked_at"), "parked_at"),
    )


def decode_abandoned(value: Json) -> AbandonedCommand:
    d = _object(value, "abandoned command")
    return AbandonedCommand(
        command=decode_command(d),
        reason=_text(d.get("reason"), "reason"),
        abandoned_at=_int(d.get("abandoned_at"), "abandoned_at"),
    )


def _object(value: Json, what: str) -> dict[str, Json]:
    if not isinstance(value, dict):
        raise ModelError(f"{what} is not a JSON object")
    return value


def _list(value: Json, what: str) -> list[Json]:
    if not isinstance(value, list):
        raise ModelError(f"{what} is not a JSON array")
    return value


def _text(value: Json, what: str) -> str:
    if not isinstance(value, str):
        raise ModelError(f"{what} is not a string")
    return value


def _opt_text(value: Json, what: str) -> str | None:
    return None if value is None else _text(value, what)


def _int(value: Json, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ModelError(f"{what} is not an integer")
    return value


def _opt_int(value: Json, what: str) -> int | None:
    return None if value is None else _int(value, what)


def _bool(value: Json, what: str) -> bool:
    if not isinstance(value, bool):
        raise ModelError(f"{what} is not true or false")
    return value
