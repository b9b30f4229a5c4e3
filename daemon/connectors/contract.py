"""What socbridge needs of a ticket desk: one contract that every desk's adapter honours.

Sync decides in the SOC's vocabulary and names no desk; the outbox carries out
what sync decided through a :class:`Desk` for the command's side; intake and
the pollers record what each desk says as observation events. Each desk's
package (``daemon/connectors/connectwise/``, ``daemon/connectors/soc/``)
implements these protocols with the same names on both sides, and one contract
test suite (``tests/daemon/connectors/test_contract.py``) runs against both
desks' simulators, so a third desk gets its tests by adding a fixture.

Errors: every failure of a call to a desk is a :class:`RemoteError`. An error
status is a :class:`RemoteApiError`, classified by the status into the
subclasses below, so callers catch what they mean (``RemoteNotFoundError``)
whichever desk answered; no response at all is :class:`RemoteUnavailableError`.
Messages carry the status and the desk's own code and message, never
credentials.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from aiohttp import web

from eventstore import NewEvent
from projections.state import FieldName, Json, JsonObject, PendingCommand, Side

#: A desk's ticket (or note) as its API returned it: JSON, in that desk's shape.
Record = Mapping[str, Any]


# --------------------------------------------------------------------- errors


class RemoteError(Exception):
    """Base of every error a call to a desk (or any remote socbridge calls) raises."""


class RemoteUnavailableError(RemoteError):
    """The remote could not be reached (timeouts, refused or dropped connections)
    on every attempt; ``attempts`` says how many were made."""

    def __init__(self, message: str, *, attempts: int) -> None:
        super().__init__(message)
        self.attempts = attempts


class RetryAfterTooLongError(RemoteError):
    """The remote asked us to wait longer than ``max_retry_after`` allows; the
    caller should give up on this request and try again later."""

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RemoteApiError(RemoteError):
    """A desk answered with an error status (``status``); ``side`` names the desk.

    Each desk's error classes derive from this one and from the classification
    that fits their status, so ``except RemoteNotFoundError`` catches a 404 from
    either desk.
    """

    side: ClassVar[Side]
    status: int


class RemoteInvalidError(RemoteApiError):
    """400 or 422: the request was refused as malformed or invalid; repeating it won't help."""


class RemoteAuthError(RemoteApiError):
    """401 or 403: the credentials were refused, or lack a permission."""


class RemoteNotFoundError(RemoteApiError):
    """404 or 410: no such record."""


class RemoteConflictError(RemoteApiError):
    """409: the record changed, or conflicts with another one."""


class RemoteRateLimitedError(RemoteApiError):
    """429, still answered after every retry."""


class RemoteServerError(RemoteApiError):
    """5xx, still answered after every retry."""


# --------------------------------------------------------------------- the desk


@dataclass(frozen=True, slots=True)
class Note:
    """A note (ConnectWise) or comment (SOC) of a ticket, as the outbox looks for markers."""

    id: int
    text: str


class Desk(Protocol):
    """What the outbox needs of one desk to carry out sync's commands.

    Commands carry their parameters as sync issued them (see ``daemon/sync/decide.py``);
    the desk knows which of them its API takes. Every method raises
    :class:`RemoteError` when the desk cannot be used.
    """

    @property
    def side(self) -> Side: ...

    async def read_ticket(self, ticket_id: int) -> Record:
        """The ticket as the desk holds it now (:class:`RemoteNotFoundError` if gone)."""
        ...

    async def read_tickets(self, ticket_ids: Collection[int]) -> dict[int, Record]:
        """Many tickets as the desk holds them now, each as :meth:`read_ticket` reads it, by
        id, in as few requests as the desk's API allows; a ticket that is gone is absent."""
        ...

    def field_values(self, ticket: Record, normalize: JsonObject) -> dict[FieldName, str]:
        """A ticket's status and priority in the SOC's vocabulary, as sync compares them
        (``normalize`` is the mapping an update command carries for this desk)."""
        ...

    async def room(self) -> None:
        """Return once the desk's rate limit would let a request go at once."""
        ...

    async def read_notes(self, ticket_id: int) -> list[Note]:
        """Every note of the ticket, oldest first."""
        ...

    async def create_ticket(self, params: JsonObject, *, idempotency_key: str) -> int:
        """Create the ticket a ``{side}.create_ticket`` command describes; its id."""
        ...

    async def find_by_marker(self, params: JsonObject) -> int | None:
        """The ticket a create with these parameters made, found by its marker (a create
        that may have landed before its outcome was recorded), or ``None``."""
        ...

    async def update_ticket(
        self, ticket_id: int, remote: Mapping[str, str], current: Record
    ) -> str | None:
        """Write ``remote`` (desk field -> desk value) over ``current`` (the ticket as just
        read); the ticket's new source time."""
        ...

    @property
    def safe_updates(self) -> bool:
        """Whether :meth:`update_unchanged_since` is available (the desk's API writes a
        ticket only if it is unchanged since a given source time)."""
        ...

    async def update_unchanged_since(
        self, ticket_id: int, remote: Mapping[str, str], stamp: str
    ) -> str | None:
        """Write ``remote`` only if the ticket's source time is still ``stamp``; the new
        source time. :class:`RemoteConflictError` when it changed since."""
        ...

    async def add_note(self, ticket_id: int, params: JsonObject) -> int | None:
        """Add the note an ``add_note``/``add_comment`` command carries; its id, or ``None``
        when the desk's answer does not name it."""
        ...

    def stream_for(self, ticket_id: int) -> str:
        """The event stream that holds a ticket's observations."""
        ...

    def fetched(self, ticket: Record, command: PendingCommand) -> dict[str, Any]:
        """What a fetch command read of a ticket, normalised as every observation of this
        desk is (``via: fetch``; see ``daemon/outbox/fetch.py``)."""
        ...

    def ticket_event(
        self, *, tenant: str | None, data: Mapping[str, Any], event_id: str,
        occurred_at: str | None,
    ) -> NewEvent:  # fmt: skip
        """The ticket observation carrying normalised ``data``, in its ticket's stream."""
        ...

    async def note_observations(
        self, ticket_id: int, tenant: str | None, command: PendingCommand
    ) -> list[NewEvent]:
        """Every note of the ticket, read now, as observation events (ids not final)."""
        ...


def text_param(params: Mapping[str, Json], key: str) -> str:
    """A command parameter that must be a string (a command issued by sync always has it)."""
    value = params.get(key)
    if not isinstance(value, str):
        raise ValueError(f"command parameter {key!r} is not a string")
    return value


# --------------------------------------------------------------------- intake, poller, signer


class Intake(Protocol):
    """A desk's inbound route: every delivery is read, parsed, verified (in the order the
    desk's signing demands), routed (is it ours, and whose) and recorded as an
    observation when it is ours; a 4xx and nothing recorded otherwise."""

    #: The path the daemon mounts it at (``POST``).
    path: ClassVar[str]
    #: Unix time of the last delivery recorded (``accepted``); ``None`` before the first.
    last_accepted: float | None

    @property
    def counts(self) -> Mapping[str, int]:
        """Deliveries by outcome (``accepted``, ``duplicate``, ``ignored.<why>``,
        ``rejected.<reason>``, ...), for ``/metrics``."""
        ...

    async def handle(self, request: web.Request) -> web.Response: ...


@dataclass
class PollReport:
    """What one reconciliation pass (or one ticket's refresh) did."""

    #: Pages of the desk's change export read (the SOC's; ConnectWise lists page inside
    #: its client, and a refresh reads none).
    pages: int = 0
    #: Tickets the desk returned.
    seen: int = 0
    #: Observations recorded: tickets that differed from their last observation.
    tickets_recorded: int = 0
    #: Notes or comments recorded for the first time.
    notes_recorded: int = 0
    #: Tickets that are not ours (not a tenant's, or a tenant whose sync is off).
    ignored: int = 0
    #: Where the next pass starts (the desk's own clock or cursor).
    watermark: str | None = None


class Poller(Protocol):
    """Reconciliation: catches what a desk's callbacks or webhooks missed."""

    async def poll_once(self) -> PollReport:
        """One pass over what changed since the watermark."""
        ...

    async def refresh(self, ticket_id: int, tenant: str | None = None) -> PollReport:
        """Read one ticket (and its notes) now and record what is new."""
        ...

    def kick(self, ticket_id: int, tenant: str | None = None) -> None:
        """Ask for :meth:`refresh` of this ticket soon (from the request path, no I/O)."""
        ...

    async def watermark(self) -> str | None:
        """Where the next pass starts, as durably recorded."""
        ...


class Signer(Protocol):
    """How a desk signs what it sends: the headers for a body, and the check of them."""

    def sign(self, body: bytes, timestamp: str) -> dict[str, str]:
        """The signature headers the desk sends with ``body`` (at ``timestamp``)."""
        ...

    def verify(self, headers: Mapping[str, str], body: bytes) -> None:
        """Raise the desk's signature error unless ``headers`` sign ``body``."""
        ...
