"""The desks' vocabularies as sync compares them, and the markers socbridge leaves behind.

Values are compared in the SOC's vocabulary: a status is ``solved`` or ``open``
(R7: ConnectWise's Solved status is ``solved``, any other is ``open``; SOC
``solved``/``closed`` are ``solved``), a priority is a SOC priority (R6: a
ConnectWise priority maps back through the mapping). :func:`remote_value` turns
a normalised value into what to write on a desk.

Markers make writes findable again (exactly once after a crash) and let an echo
of socbridge's own note be recognised: a created SOC ticket's ``external_id``,
a created ConnectWise ticket's ``externalXRef``, and a line at the end of every
mirrored note.
"""

from __future__ import annotations

from daemon.sync.rules import SOC_SOLVED, Rules
from projections.state import FieldName, Side

SOC_MARKER = "socbridge:cw:"
CW_MARKER = "socbridge:soc:"
TEXT_MARKER = "[socbridge:"


def soc_external_id(cw_id: int) -> str:
    return f"{SOC_MARKER}{cw_id}"


def cw_external_ref(soc_id: int) -> str:
    return f"{CW_MARKER}{soc_id}"


def note_marker(side: Side, ident: int | str) -> str:
    where = "ConnectWise note" if side == "cw" else "SOC comment"
    return f"{TEXT_MARKER} {where} {ident}]"


def cw_status(rules: Rules, status: str | None) -> str:
    return "solved" if rules.cw_status_is_solved(status) else "open"


def soc_status(status: str | None) -> str:
    return "solved" if status in SOC_SOLVED else "open"


def remote_value(rules: Rules, target: Side, name: FieldName, value: str) -> dict[str, str]:
    """The remote field and value that make ``target`` hold normalised ``value``."""
    if target == "cw":
        if name == "status":
            # R7: SOC solved -> Solved; reopened after solved -> Unresolved.
            return {"status": rules.solved_status if value == "solved" else rules.unresolved_status}
        return {"priority": rules.priority_mapping[value]}
    if name == "status":
        return {"status": "solved" if value == "solved" else "open"}
    return {"priority": value}
