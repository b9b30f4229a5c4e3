"""The simulator's conditions / orderBy / fields grammar."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.simulators.connectwise.conditions import (
    ConditionError,
    compile_conditions,
    project_fields,
    sort_records,
)

T = {
    "id": 5,
    "summary": "Printer O'Neil Offline",
    "closedFlag": False,
    "owner": None,
    "board": {"id": 41, "name": "SOC Incidents"},
    "_info": {"lastUpdated": "2026-01-02T10:00:00Z"},
}


@pytest.mark.parametrize(
    ("cond", "expected"),
    [
        ("id = 5", True),
        ("id != 5", False),
        ("id < 6 and id <= 5 and id > 4 and id >= 5", True),
        ("board/id = 41", True),
        ("board/name = 'soc incidents'", True),  # case-insensitive strings
        ('Board/Name = "SOC Incidents"', True),  # case-insensitive fields, double quotes
        ("summary contains 'offline'", True),
        ("summary like 'Printer%'", True),
        ("summary like 'Printer*Offline'", True),
        ("summary not like '%scanner%'", True),
        ("summary = 'Printer O''Neil Offline'", True),  # doubled quote escapes
        ("id in (1, 2, 5)", True),
        ("id not in (1, 2)", True),
        ("closedFlag = false", True),
        ("owner = null", True),
        ("lastUpdated > [2026-01-01T00:00:00Z]", True),  # bare lastUpdated = _info/lastUpdated
        ("_info/lastUpdated < [2026-01-02]", False),
        ("id = 1 or id = 5 and board/id = 41", True),  # and binds tighter
        ("(id = 1 or id = 5) and board/id = 40", False),
        ("not (id = 5)", False),
        ("ID = 5 AND CLOSEDFLAG = FALSE", True),
    ],
)
def test_conditions(cond: str, expected: bool) -> None:
    assert compile_conditions(cond)(T) is expected


@pytest.mark.parametrize(
    "bad",
    [
        "id =",
        "id == 5",
        "(id = 5",
        "id in 5",
        "summary like 5",
        "id = 5 x",
        "id ~ 3",
        "lastUpdated > [yesterday]",
    ],
)
def test_malformed_conditions_are_refused(bad: str) -> None:
    with pytest.raises(ConditionError):
        compile_conditions(bad)(T)


@settings(deadline=None)  # correctness, not speed: a cold first run may be slow
@given(st.lists(st.integers(0, 50), unique=True), st.integers(0, 50))
def test_greater_than_selects_exactly(ids: list[int], n: int) -> None:
    pred = compile_conditions(f"id > {n}")
    assert [i for i in ids if pred({"id": i})] == [i for i in ids if i > n]


def test_order_by_and_fields() -> None:
    rows = [{"id": 1, "p": {"n": "b"}}, {"id": 2, "p": {"n": "a"}}, {"id": 3, "p": None}]
    assert [r["id"] for r in sort_records(rows, "p/n asc, id desc")] == [3, 2, 1]
    assert [r["id"] for r in sort_records(rows, "id desc")] == [3, 2, 1]
    with pytest.raises(ConditionError):
        sort_records(rows, "id sideways")
    assert project_fields(T, "id,board/name") == {"id": 5, "board": {"name": "SOC Incidents"}}
