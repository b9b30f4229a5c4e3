"""``socbridge events``: columns, causes, JSON lines, filters, colour only on a TTY, --follow."""

from __future__ import annotations

import argparse
import asyncio
import io
from pathlib import Path

import orjson
import pytest

from daemon.cli.events import show_events
from daemon.cli.main import main
from eventstore import EventStore
from projections import kinds
from tests.support.history import Log, cw_seen, soc_seen


async def build(path: Path) -> None:
    log = await Log.open(path)
    await log.linked()
    await log.add(soc_seen(11, "2026-11-29T10:01:00Z", priority="high"))
    await log.add(cw_seen(2, "2026-11-29T10:02:00Z", status="New"))  # another ticket, not synced
    await log.close()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "events.db"
    asyncio.run(build(path))
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[str]]:
    code = main(["events", *argv])
    return code, capsys.readouterr().out.splitlines()


def test_timeline_is_aligned_columns_with_causes_and_no_colour_when_piped(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, lines = run(capsys, "--db", str(db))
    assert code == 0
    assert lines[0].split()[:7] == [
        "POS",
        "RECORDED",
        "TENANT",
        "TICKET",
        "TYPE",
        "CAUSE",
        "SUMMARY",
    ]
    type_column = lines[0].index("TYPE")
    assert all(line[type_column - 2 : type_column] == "  " for line in lines[1:])
    assert "\x1b[" not in "\n".join(lines)
    decided = next(line for line in lines if kinds.LINK_REQUESTED in line)
    assert " <-#1 " in decided  # caused by the observation at position 1
    assert any("field" not in line and "priority=high" in line for line in lines)


def test_json_lines_carry_every_field_and_the_cause_position(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, lines = run(capsys, "--db", str(db), "--json")
    docs = [orjson.loads(line) for line in lines]
    assert code == 0 and [d["position"] for d in docs] == list(range(1, len(docs) + 1))
    requested = next(d for d in docs if d["type"] == kinds.LINK_REQUESTED)
    assert requested["caused_by_position"] == 1 and requested["ticket"] == "cw:1"
    assert {"event_id", "stream", "tenant", "data", "recorded_at", "hash"} <= requested.keys()


def test_ticket_filter_gathers_the_link_and_both_sides_observations(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, lines = run(capsys, "--db", str(db), "--json", "--ticket", "soc:11")
    tickets = {orjson.loads(line)["ticket"] for line in lines}
    assert tickets == {"cw:1", "soc:11"}
    _, other = run(capsys, "--db", str(db), "--json", "--ticket", "cw:2")
    assert {orjson.loads(line)["ticket"] for line in other} == {"cw:2"}


def test_type_tenant_and_time_filters(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, lines = run(capsys, "--db", str(db), "--json", "--type", "outbox.")
    assert lines and all(orjson.loads(line)["type"].startswith("outbox.") for line in lines)
    _, none = run(capsys, "--db", str(db), "--json", "--tenant", "globex")
    assert none == []
    _, future = run(capsys, "--db", str(db), "--json", "--since", "2099-01-01T00:00:00Z")
    assert future == []
    _, past = run(capsys, "--db", str(db), "--json", "--until", "2099-01-01T00:00:00Z")
    assert len(past) > 5


@pytest.mark.parametrize(
    "argv",
    [["--ticket", "1001"], ["--ticket", "zen:1"], ["--since", "yesterday"],
     ["--since", "2026-11-29T10:00:00"]],
)  # fmt: skip
def test_bad_filters_are_refused_with_exit_2(
    db: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["events", "--db", str(db), *argv])
    assert exc.value.code == 2
    assert "error" in capsys.readouterr().err


def test_since_after_until_is_refused(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["events", "--db", str(db), "--since", "2026-11-29T11:00Z",
                 "--until", "2026-11-29T10:00Z"])  # fmt: skip
    assert code == 2 and "--since is after --until" in capsys.readouterr().err


def test_colour_on_a_terminal(db: Path) -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    async def show() -> str:
        out = Terminal()
        store = await EventStore.open(db, readonly=True)
        try:
            await show_events(store, _args(), out)
        finally:
            await store.close()
        return out.getvalue()

    with_tty = asyncio.run(show())
    assert "\x1b[36m" in with_tty and "\x1b[0m" in with_tty


def _args(**over: object) -> argparse.Namespace:
    values: dict[str, object] = dict(tenant=None, ticket=None, type=None, since=None, until=None,
                                     json=False, follow=False)  # fmt: skip
    values.update(over)
    return argparse.Namespace(**values)


class Watched(io.StringIO):
    """An output that says when a line with ``needle`` has been written."""

    def __init__(self, needle: str) -> None:
        super().__init__()
        self.needle = needle
        self.seen = asyncio.Event()

    def write(self, text: str) -> int:
        if self.needle in text:
            self.seen.set()
        return super().write(text)


async def test_follow_prints_a_new_event_as_it_is_appended(db: Path) -> None:
    out = Watched("soc:12")
    reader = await EventStore.open(db, readonly=True)
    writer = await EventStore.open(db)
    task = asyncio.create_task(show_events(reader, _args(follow=True, json=True), out))
    try:
        await writer.append([soc_seen(12, "2026-11-29T10:05:00Z")])
        await asyncio.wait_for(out.seen.wait(), 10)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await writer.close()
        await reader.close()
    assert orjson.loads(out.getvalue().splitlines()[-1])["ticket"] == "soc:12"


async def test_follow_of_a_ticket_picks_up_its_partner_once_linked(tmp_path: Path) -> None:
    log = await Log.open(tmp_path / "e.db")
    await log.add(cw_seen(1, "2026-11-29T10:00:00Z"))  # not linked yet: no partner known
    reader = await EventStore.open(tmp_path / "e.db", readonly=True)
    out = Watched("soc:11")
    task = asyncio.create_task(show_events(reader, _args(follow=True, ticket="cw:1"), out))
    try:
        await log.deliver("soc.create_ticket", {"id": 11})
        await log.add(soc_seen(11, "2026-11-29T10:01:00Z", priority="high"))
        await asyncio.wait_for(out.seen.wait(), 10)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await reader.close()
        await log.close()
    assert "soc.ticket.observed" in out.getvalue()
