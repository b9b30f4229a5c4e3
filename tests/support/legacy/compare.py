"""Folding and deciding a log with the dict model and the typed model side by side."""

from __future__ import annotations

from collections.abc import Iterable

from daemon.sync.decide import decide
from daemon.sync.rules import Rules
from eventstore import RecordedEvent
from projections.fold import apply
from projections.replay import INPUTS, canonical
from projections.state import BridgeState
from tests.support.legacy import decide as legacy_decide
from tests.support.legacy import fold as legacy_fold
from tests.support.legacy import state as legacy_state


def same_as_legacy(events: Iterable[RecordedEvent], rules: Rules) -> int:
    """Fold ``events`` with both models, checking after each one that both states are the
    same JSON and that both decide an input alike; return how many inputs were decided."""
    old, new = legacy_state.BridgeState(), BridgeState()
    decided = 0
    for event in events:
        legacy_fold.apply(old, event)
        apply(new, event)
        assert new.to_json() == old.to_json(), f"states differ after #{event.position}"
        if event.type in INPUTS:
            was = [
                canonical(d.type, d.ticket, d.data) for d in legacy_decide.decide(old, event, rules)
            ]
            now = [canonical(d.type, d.ticket, d.data) for d in decide(new, event, rules)]
            assert now == was, f"decisions differ for #{event.position}"
            # Deciding must not touch the state it reads.
            assert new.to_json() == old.to_json()
            decided += bool(was)
    return decided
