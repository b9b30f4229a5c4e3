"""Do the two simulators agree? Read both sides through their real APIs and list every
difference a user would call a sync failure: a ticket with no twin or two twins, a note
missing or doubled on the other side, a status or priority that differs.

Shared by the resilience scenarios (in-process daemon) and the SIGKILL test (daemon
subprocess): it looks only at the simulators, never at the daemon's own state.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from daemon.simulators.harness import Analyst, Technician
from daemon.simulators.rehearsal import NOTE_TYPES_SENT, PRIORITY_MAPPING

Json = dict[str, Any]
BOARD = "SOC Incidents"
COMPANY = 250  # tenant acme
ORGANIZATION = 9001
MARKER = "[socbridge:"
FIELDS = ("status ", "priority ")
SECTION_FLAGS = {
    "Discussion": "detailDescriptionFlag",
    "Internal Analysis": "internalAnalysisFlag",
    "Resolution": "resolutionFlag",
}


@dataclass
class Pair:
    """A ConnectWise ticket and the SOC ticket it is synced with."""

    cw: Json
    soc: Json
    notes: list[Json] = field(default_factory=list)
    comments: list[Json] = field(default_factory=list)


@dataclass
class Picture:
    """Both sides as read, and every disagreement found."""

    pairs: list[Pair]
    problems: list[str]

    @property
    def agree(self) -> bool:
        return not self.problems

    @property
    def record_problems(self) -> list[str]:
        """Tickets and notes missing or doubled (status and priority differences left out)."""
        return [p for p in self.problems if not p.split(": ", 1)[-1].startswith(FIELDS)]

    def pair_for_cw(self, cw_id: int) -> Pair:
        return next(p for p in self.pairs if p.cw["id"] == cw_id)

    def pair_for_soc(self, soc_id: int) -> Pair:
        return next(p for p in self.pairs if p.soc["id"] == soc_id)


def _section(note: Json) -> str:
    return next((name for name, flag in SECTION_FLAGS.items() if note.get(flag)), "Discussion")


async def _all_notes(tech: Technician, ticket_id: int) -> list[Json]:
    notes: list[Json] = []
    page = 1
    while True:
        chunk = await tech._call(
            "GET", f"service/tickets/{ticket_id}/notes?pageSize=1000&page={page}"
        )
        notes.extend(chunk)
        if len(chunk) < 1000:
            return notes
        page += 1


async def picture(tech: Technician, analyst: Analyst) -> Picture:
    """Read both simulators and list what does not agree (acme's tickets only)."""
    problems: list[str] = []
    soc_all = [t for t in await analyst.tickets() if t.get("organization_id") == ORGANIZATION]
    cw_all = [
        t
        for t in await tech.tickets(f"board/name = '{BOARD}'")
        if (t.get("company") or {}).get("id") == COMPANY
    ]
    soc_by_id = {t["id"]: t for t in soc_all}
    cw_by_id = {t["id"]: t for t in cw_all}
    soc_twins = Counter(str(t.get("external_id") or "") for t in soc_all)
    cw_twins = Counter(str(t.get("externalXRef") or "") for t in cw_all)
    pairs: list[Pair] = []
    for cw in cw_all:
        xref = str(cw.get("externalXRef") or "")
        if xref.startswith("socbridge:soc:"):
            if cw_twins[xref] != 1:
                problems.append(f"{cw_twins[xref]} ConnectWise tickets carry {xref}")
            soc = soc_by_id.get(int(xref.rsplit(":", 1)[1]))
            if soc is None:
                problems.append(f"ConnectWise ticket {cw['id']} names a missing SOC ticket")
                continue
            pairs.append(Pair(cw, soc))
            continue
        marker = f"socbridge:cw:{cw['id']}"
        twins = [t for t in soc_all if t.get("external_id") == marker]
        if len(twins) != 1:
            problems.append(f"ConnectWise ticket {cw['id']} has {len(twins)} SOC tickets")
            continue
        pairs.append(Pair(cw, twins[0]))
    for soc in soc_all:
        ext = str(soc.get("external_id") or "")
        if ext.startswith("socbridge:cw:"):
            if soc_twins[ext] != 1 or int(ext.rsplit(":", 1)[1]) not in cw_by_id:
                problems.append(f"SOC ticket {soc['id']} ({ext}) has no single ConnectWise twin")
            continue
        n = cw_twins[f"socbridge:soc:{soc['id']}"]
        if n != 1:
            problems.append(f"SOC ticket {soc['id']} has {n} ConnectWise tickets")
    notes, comments = await asyncio.gather(
        asyncio.gather(*(_all_notes(tech, p.cw["id"]) for p in pairs)),
        asyncio.gather(*(analyst.comments(p.soc["id"]) for p in pairs)),
    )
    for pair, pair_notes, pair_comments in zip(pairs, notes, comments, strict=True):
        pair.notes, pair.comments = pair_notes, pair_comments
        problems.extend(_pair_problems(pair))
    return Picture(pairs, problems)


def _pair_problems(pair: Pair) -> list[str]:
    cw, soc = pair.cw, pair.soc
    name = f"CW {cw['id']} / SOC {soc['id']}"
    problems = []
    soc_solved = soc.get("status") in ("solved", "closed")
    cw_solved = (cw.get("status") or {}).get("name") == "Solved"
    if soc_solved != cw_solved:
        problems.append(f"{name}: status {soc.get('status')} vs {cw['status']['name']}")
    want = PRIORITY_MAPPING.get(soc.get("priority") or "normal")
    if want != (cw.get("priority") or {}).get("name"):
        problems.append(f"{name}: priority {soc.get('priority')} vs {cw['priority']['name']}")
    note_texts = [n.get("text") or "" for n in pair.notes]
    bodies = [c.get("body") or "" for c in pair.comments]
    for note in pair.notes:
        text = note.get("text") or ""
        if MARKER in text:
            continue
        copies = sum(f"[socbridge: ConnectWise note {note['id']}]" in b for b in bodies)
        wanted = 1 if _section(note) in NOTE_TYPES_SENT else 0
        if copies != wanted:
            problems.append(f"{name}: ConnectWise note {note['id']} is on the SOC {copies}x")
    for comment in pair.comments:
        body = comment.get("body") or ""
        if MARKER in body:
            continue
        copies = sum(f"[socbridge: SOC comment {comment['id']}]" in t for t in note_texts)
        if copies != 1:
            problems.append(f"{name}: SOC comment {comment['id']} is in ConnectWise {copies}x")
    return problems


def count_text(texts: list[str], token: str) -> int:
    return sum(token in t for t in texts)
