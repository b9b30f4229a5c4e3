"""The ConnectWise simulator's in-memory state and the rules its writes obey.

Records are stored with references by id and rendered with names on the way
out (``{"id", "name", "_info"}``, ../shared/reference/connectwise/NOTES.md
§3.1, cited below as NOTES §x). Writes validate the way ConnectWise reports
it: a :class:`SimError` carries the status and the exact error body shape of
NOTES §5 (``code``, ``message``, ``errors[]`` with ``code``, ``message``,
``resource``, ``field``). Every ticket write notifies the listeners (the
callback dispatcher) with the writer's member identifier.
"""

from __future__ import annotations

import copy
import secrets
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from daemon.simulators.connectwise import fixture
from daemon.simulators.connectwise.fixture import Member, Role
from eventstore import utc_now

Json = dict[str, Any]
ChangeListener = Callable[[str, int, "Json | None", str, bool], None]
PermissionCheck = Callable[[str, str, str], None]

TICKET_LEVELS = ("owner", "board", "project", "phase", "status", "ticket", "integratortag")
CALLBACK_TYPES = (
    "activity agreement company contact configuration expense invoice member opportunity "
    "productcatalog project purchaseorder schedule ticket time"
).split()
WRITABLE_TICKET_FIELDS = {
    "summary", "board", "status", "company", "priority", "source", "owner", "contact",
    "severity", "impact", "externalXRef", "poNumber", "requiredDate", "budgetHours",
    "customFields", "integratorTags", "contactName", "contactEmailAddress", "type",
    "subType", "item", "team", "site", "skipCallback", "processNotifications",
}  # fmt: skip


class SimError(Exception):
    """An error answer: HTTP status plus a ConnectWise error body."""

    def __init__(self, status: int, code: str, message: str, errors: list[Json] | None = None):
        super().__init__(message)
        self.status = status
        self.body: Json = {"code": code, "message": message}
        if errors:
            self.body["errors"] = errors


def invalid(resource: str, *errors: tuple[str, str, str]) -> SimError:
    """400 InvalidObject with field errors ``(code, message, field)``."""
    return SimError(
        400,
        "InvalidObject",
        f"{resource} object is invalid",
        [{"code": c, "message": m, "resource": resource, "field": f} for c, m, f in errors],
    )


def not_found(kind: str, ident: object) -> SimError:
    return SimError(404, "NotFound", f"{kind} {ident} not found")


def cw_timestamp() -> str:
    """Now, as ConnectWise writes ``_info`` times: UTC, whole seconds."""
    return utc_now().strftime("%Y-%m-%dT%H:%M:%SZ")


class SimState:
    """Everything the simulated ConnectWise instance knows."""

    def __init__(self, clock: Callable[[], str] = cw_timestamp) -> None:
        self.clock = clock
        self.roles: dict[int, Role] = fixture.roles()
        self.members: dict[int, Member] = fixture.members()
        self.companies = fixture.companies()
        self.boards = fixture.boards()
        self.statuses = fixture.statuses()
        self.priorities = fixture.priorities()
        self.sources = fixture.sources()
        self.tickets: dict[int, Json] = {}
        self.notes: dict[int, list[Json]] = {}
        self.callbacks: dict[int, Json] = {}
        self.callback_key_id = str(uuid.uuid4())
        self.signing_key = secrets.token_urlsafe(32)
        self.listeners: list[ChangeListener] = []
        self._next = {"ticket": 1000, "note": 5000, "callback": 26550}

    def next_id(self, kind: str) -> int:
        self._next[kind] += 1
        return self._next[kind]

    # ------------------------------------------------------------ lookups

    def member_by_keys(self, company: str, public: str, private: str) -> Member | None:
        if company.casefold() != fixture.LOGIN_COMPANY.casefold():
            return None
        for m in self.members.values():
            if secrets.compare_digest(m.public_key, public) and secrets.compare_digest(
                m.private_key, private
            ):
                return m
        return None

    def member_by_identifier(self, identifier: str) -> Member | None:
        return next((m for m in self.members.values() if m.identifier == identifier), None)

    def ref(self, kind: str, rec_id: int | None) -> Json | None:
        """A rendered reference object for a stored id."""
        if rec_id is None:
            return None
        table: Mapping[int, Json] = {
            "board": self.boards,
            "status": self.statuses,
            "company": self.companies,
            "priority": self.priorities,
            "source": self.sources,
        }.get(kind, {})
        if kind == "owner":
            m = self.members.get(rec_id)
            return (
                {"id": m.id, "identifier": m.identifier, "name": f"{m.first_name} {m.last_name}"}
                if m
                else None
            )
        rec = table.get(rec_id)
        if rec is None:
            return {"id": rec_id}
        out: Json = {"id": rec_id, "name": rec["name"]}
        if kind == "company":
            out["identifier"] = rec["identifier"]
        if kind == "status":
            out["sort"] = rec["sortOrder"]
        if kind == "priority":
            out["sort"], out["level"] = rec["sortOrder"], rec["level"]
        return out

    # ------------------------------------------------------------ tickets

    def render_ticket(self, t: Json) -> Json:
        out = {k: v for k, v in t.items() if not k.startswith("_ref_")}
        for kind in ("board", "status", "company", "priority", "source", "owner"):
            value = self.ref(kind, t.get(f"_ref_{kind}"))
            if value is not None:
                out[kind] = value
        out["_info"] = dict(t["_info"])
        return out

    def _resolve(self, kind: str, value: Any, board_id: int | None = None) -> int:
        """Stored id for a written reference ``{"id": N}`` or ``{"name": ...}``."""
        table = {
            "board": self.boards,
            "status": self.statuses,
            "company": self.companies,
            "priority": self.priorities,
            "source": self.sources,
        }[kind]
        if not isinstance(value, Mapping):
            raise invalid("ticket", ("InvalidField", f"{kind} must be an object", kind))
        rec: Json | None
        if isinstance(value.get("id"), int) and value["id"] in table:
            rec = table[value["id"]]
        else:
            key = "identifier" if kind == "company" and "identifier" in value else "name"
            wanted = str(value.get(key, "")).casefold()
            candidates = [
                r for r in table.values() if wanted and str(r.get(key, "")).casefold() == wanted
            ]
            if kind == "status" and board_id is not None:
                # Status names repeat across boards ("New"): a name means this board's.
                candidates = [r for r in candidates if r["board"]["id"] == board_id] or candidates
            rec = candidates[0] if candidates else None
            if rec is None:
                raise invalid("ticket", ("InvalidField", f"{kind} is invalid", kind))
        if kind == "status" and board_id is not None and rec["board"]["id"] != board_id:
            raise invalid(
                "ticket", ("InvalidField", "status is not a status of the ticket's board", "status")
            )
        return int(rec["id"])

    def _default_status(self, board_id: int) -> int:
        on_board = [s for s in self.statuses.values() if s["board"]["id"] == board_id]
        default = next((s for s in on_board if s["defaultFlag"]), on_board[0])
        return int(default["id"])

    def create_ticket(self, body: Json, member: Member, check: PermissionCheck) -> Json:
        errors = []
        summary = body.get("summary")
        if not isinstance(summary, str) or not summary.strip():
            errors.append(("MissingRequiredField", "The summary field is required.", "summary"))
        elif len(summary) > 100:
            errors.append(("InvalidField", "summary exceeds max length of 100", "summary"))
        if not isinstance(body.get("company"), Mapping):
            errors.append(("MissingRequiredField", "The company field is required.", "company"))
        if errors:
            raise invalid("ticket", *errors)
        t: Json = {"id": 0, "summary": summary, "recordType": "ServiceTicket"}
        t["_ref_company"] = self._resolve("company", body["company"])
        board = self._resolve("board", body.get("board") or {"id": fixture.BOARD_ID})
        t["_ref_board"] = board
        status = body.get("status")
        t["_ref_status"] = (
            self._resolve("status", status, board) if status else self._default_status(board)
        )
        default_prio = next(p for p in self.priorities.values() if p["defaultFlag"])
        t["_ref_priority"] = self._resolve("priority", body.get("priority") or default_prio)
        if body.get("source"):
            t["_ref_source"] = self._resolve("source", body["source"])
        for key in ("externalXRef", "severity", "impact", "poNumber", "contactName"):
            if key in body:
                t[key] = body[key]
        t.setdefault("severity", "Medium")
        t.setdefault("impact", "Medium")
        if self.statuses[t["_ref_status"]]["closedStatus"]:
            check("Service Desk", "Close Service Tickets", "add")
        now = self.clock()
        t["id"] = self.next_id("ticket")
        t["_info"] = {
            "lastUpdated": now,
            "updatedBy": member.identifier,
            "dateEntered": now,
            "enteredBy": member.identifier,
        }
        self._set_closed(t, member, now)
        self.tickets[t["id"]] = t
        self.notes[t["id"]] = []
        text = body.get("initialDescription")
        if isinstance(text, str) and text.strip():
            self._add_note(t["id"], {"text": text, "detailDescriptionFlag": True}, member, now)
        self._notify("added", t, member, bool(body.get("skipCallback")))
        return self.render_ticket(t)

    def _set_closed(self, t: Json, member: Member, now: str) -> None:
        closed = bool(self.statuses[t["_ref_status"]]["closedStatus"])
        if closed and not t.get("closedFlag"):
            t["closedDate"], t["closedBy"] = now, member.identifier
        if not closed:
            t.pop("closedDate", None)
            t.pop("closedBy", None)
        t["closedFlag"] = closed

    def get_ticket(self, ticket_id: int) -> Json:
        t = self.tickets.get(ticket_id)
        if t is None:
            raise not_found("Ticket", ticket_id)
        return t

    def patch_ticket(
        self, ticket_id: int, ops: Any, member: Member, check: PermissionCheck
    ) -> Json:
        t = self.get_ticket(ticket_id)
        if not isinstance(ops, list) or not ops:
            raise SimError(400, "InvalidObject", "PatchOperation list is required")
        doc = self.render_ticket(t)
        skip = False
        for op in ops:
            if not isinstance(op, Mapping) or op.get("op") not in ("replace", "add", "remove"):
                raise invalid(
                    "patchOperation", ("InvalidField", "op must be add, replace or remove", "op")
                )
            parts = [p for p in str(op.get("path", "")).strip("/").split("/") if p]
            field = next(
                (f for f in WRITABLE_TICKET_FIELDS if parts and f.lower() == parts[0].lower()), None
            )
            if field is None:
                raise invalid(
                    "ticket", ("InvalidField", f"Cannot update path {op.get('path')!r}", "path")
                )
            if field in ("skipCallback", "processNotifications"):
                skip = skip or (field == "skipCallback" and bool(op.get("value")))
                continue
            target: Any = doc
            for part in [field, *parts[1:]][:-1]:
                target = target.setdefault(part, {})
            last = [field, *parts[1:]][-1]
            if op["op"] == "remove":
                target.pop(last, None)
            else:
                target[last] = copy.deepcopy(op.get("value"))
        new = dict(t)
        summary = doc.get("summary")
        if not isinstance(summary, str) or not summary.strip() or len(summary) > 100:
            raise invalid(
                "ticket", ("InvalidField", "summary is required, max length 100", "summary")
            )
        new["summary"] = summary
        new["_ref_board"] = self._resolve("board", doc.get("board"))
        new["_ref_status"] = self._resolve("status", doc.get("status"), new["_ref_board"])
        new["_ref_company"] = self._resolve("company", doc.get("company"))
        new["_ref_priority"] = self._resolve("priority", doc.get("priority"))
        if doc.get("source"):
            new["_ref_source"] = self._resolve("source", doc["source"])
        else:
            new.pop("_ref_source", None)
        for key in ("externalXRef", "severity", "impact", "poNumber", "contactName"):
            if key in doc:
                new[key] = doc[key]
            else:
                new.pop(key, None)
        closing = self.statuses[new["_ref_status"]]["closedStatus"]
        if closing and not t.get("closedFlag"):
            check("Service Desk", "Close Service Tickets", "edit")
        now = self.clock()
        new["_info"] = {**t["_info"], "lastUpdated": now, "updatedBy": member.identifier}
        self._set_closed(new, member, now)
        self.tickets[ticket_id] = new
        self._notify("updated", new, member, skip)
        return self.render_ticket(new)

    def delete_ticket(self, ticket_id: int, member: Member) -> None:
        t = self.get_ticket(ticket_id)
        del self.tickets[ticket_id]
        self.notes.pop(ticket_id, None)
        self._notify("deleted", t, member, False)

    # ------------------------------------------------------------ notes

    def _add_note(self, ticket_id: int, body: Json, member: Member, now: str) -> Json:
        flags = ("detailDescriptionFlag", "internalAnalysisFlag", "resolutionFlag")
        note: Json = {
            "id": self.next_id("note"),
            "ticketId": ticket_id,
            "text": body["text"],
            **{f: bool(body.get(f)) for f in flags},
            "issueFlag": False,
            "member": self.ref("owner", member.id),
            "customerUpdatedFlag": False,
            "processNotifications": body.get("processNotifications", True),
            "dateCreated": now,
            "createdBy": member.identifier,
            "internalFlag": bool(body.get("internalFlag", body.get("internalAnalysisFlag"))),
            "externalFlag": bool(body.get("externalFlag", False)),
            "_info": {"lastUpdated": now, "updatedBy": member.identifier},
        }
        self.notes[ticket_id].append(note)
        return note

    def create_note(self, ticket_id: int, body: Any, member: Member) -> Json:
        t = self.get_ticket(ticket_id)
        if not isinstance(body, Mapping):
            raise SimError(400, "InvalidObject", "ticketNote object is invalid")
        text = body.get("text")
        if not isinstance(text, str) or not text.strip():
            raise invalid(
                "ticketNote", ("MissingRequiredField", "The text field is required.", "text")
            )
        flags = ("detailDescriptionFlag", "internalAnalysisFlag", "resolutionFlag")
        if not any(body.get(f) for f in flags):
            raise invalid(
                "ticketNote",
                ("InvalidField", "At least one of Discussion, Internal Analysis or Resolution "
                 "must be selected", "detailDescriptionFlag"),
            )  # fmt: skip
        now = self.clock()
        note = self._add_note(ticket_id, dict(body), member, now)
        # A new note is a ticket update: it moves lastUpdated and fires the ticket callback.
        t["_info"] = {**t["_info"], "lastUpdated": now, "updatedBy": member.identifier}
        self._notify("updated", t, member, False)
        return copy.deepcopy(note)

    def list_notes(self, ticket_id: int) -> list[Json]:
        self.get_ticket(ticket_id)
        return copy.deepcopy(self.notes[ticket_id])

    # ------------------------------------------------------------ callbacks

    def create_callback(self, body: Any, member: Member) -> Json:
        if not isinstance(body, Mapping):
            raise SimError(400, "InvalidObject", "callbackEntry object is invalid")
        errors: list[tuple[str, str, str]] = []
        url = body.get("url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")) or " " in url:
            errors.append(("InvalidField", "Invalid URL", "url"))
        ctype = str(body.get("type", "")).lower()
        level = str(body.get("level", "")).lower()
        if ctype not in CALLBACK_TYPES:
            errors.append(("InvalidField", "Invalid type", "type"))
        elif ctype == "ticket" and level not in TICKET_LEVELS:
            errors.append(
                ("InvalidObject", "Unrecognized level for type, see documentation for "
                 "supported levels for each type", "level")
            )  # fmt: skip
        object_id = body.get("objectId", 0)
        if not isinstance(object_id, int):
            errors.append(("InvalidField", "objectId must be an integer", "objectId"))
        if errors:
            raise invalid("callbackEntry", *errors)
        for existing in self.callbacks.values():
            if (existing["url"], existing["type"], existing["level"], existing["objectId"]) == (
                url, ctype, level, object_id,
            ):  # fmt: skip
                raise invalid(
                    "callbackEntry",
                    ("ObjectExists", "A matching callback entry already exists", "objectId"),
                )
        now = self.clock()
        entry: Json = {
            "id": self.next_id("callback"),
            "description": str(body.get("description") or "")[:100],
            "url": url,
            "objectId": object_id,
            "type": ctype,
            "level": level,
            "memberId": member.id,
            "payloadVersion": str(body.get("payloadVersion") or "3.0.0"),
            "inactiveFlag": bool(body.get("inactiveFlag", False)),
            "isSoapCallbackFlag": False,
            "isSelfSuppressedFlag": bool(body.get("isSelfSuppressedFlag", False)),
            "connectWiseID": str(uuid.uuid4()),
            "_info": {"lastUpdated": now, "updatedBy": member.identifier},
        }
        self.callbacks[entry["id"]] = entry
        return copy.deepcopy(entry)

    def get_callback(self, callback_id: int) -> Json:
        entry = self.callbacks.get(callback_id)
        if entry is None:
            raise not_found("CallbackEntry", callback_id)
        return entry

    def patch_callback(self, callback_id: int, ops: Any, member: Member) -> Json:
        """JSON-Patch an entry; the result is re-validated like a new one."""
        entry = self.get_callback(callback_id)
        if not isinstance(ops, list) or not ops:
            raise SimError(400, "InvalidObject", "PatchOperation list is required")
        updated = dict(entry)
        writable = (
            "url",
            "description",
            "objectId",
            "level",
            "inactiveFlag",
            "isSelfSuppressedFlag",
        )
        for op in ops:
            field = str(op.get("path", "") if isinstance(op, Mapping) else "").strip("/")
            if field not in writable or op.get("op") != "replace":
                raise invalid("callbackEntry", ("InvalidField", f"Cannot update {field!r}", "path"))
            updated[field] = op.get("value")
        del self.callbacks[callback_id]
        try:
            fresh = self.create_callback(updated, member)
        except SimError:
            self.callbacks[callback_id] = entry  # refused: nothing changes
            raise
        # Keep the entry's identity: same id and connectWiseID, new content.
        del self.callbacks[fresh["id"]]
        fresh.update(id=callback_id, connectWiseID=entry["connectWiseID"])
        self.callbacks[callback_id] = fresh
        return copy.deepcopy(fresh)

    def delete_callback(self, callback_id: int) -> None:
        self.get_callback(callback_id)
        del self.callbacks[callback_id]

    # ------------------------------------------------------------ listeners

    def _notify(self, action: str, t: Json, member: Member, skip: bool) -> None:
        entity = None if action == "deleted" else self.render_ticket(t)
        for listener in list(self.listeners):
            listener(action, int(t["id"]), entity, member.identifier, skip)
