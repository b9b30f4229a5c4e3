"""NDJSON export and import: a faithful round trip, and a refused file changes nothing."""

from __future__ import annotations

import io
from pathlib import Path

import orjson
import pytest

from eventstore import EventStore, ImportError_, export_ndjson, import_ndjson, verify
from tests.support.events import ev


async def exported(store: EventStore) -> bytes:
    buf = io.BytesIO()
    await export_ndjson(store, buf)
    return buf.getvalue()


async def test_export_import_round_trip_is_exact(store: EventStore, tmp_path: Path) -> None:
    await store.append(
        [ev(f"s{i % 3}", tenant="acme", data={"i": i, "f": 0.1 * i}) for i in range(50)]
    )
    dump = await exported(store)
    assert dump.count(b"\n") == 50
    target = await EventStore.open(tmp_path / "restored.db")
    report = await import_ndjson(target, io.BytesIO(dump))
    assert (report.read, report.imported, report.skipped, report.last_position) == (50, 50, 0, 50)
    assert [e async for e in target.read()] == [e async for e in store.read()]
    assert (await verify(target)).ok
    assert await exported(target) == dump
    # New appends continue the imported chain.
    await target.append([ev("after")])
    assert (await verify(target)).ok
    await target.close()


async def test_reimport_skips_what_is_there_and_adds_the_rest(
    store: EventStore, tmp_path: Path
) -> None:
    await store.append([ev(data={"i": i}) for i in range(5)])
    first = await exported(store)
    await store.append([ev(data={"i": i}) for i in range(5, 8)])
    full = await exported(store)
    target = await EventStore.open(tmp_path / "t.db")
    await import_ndjson(target, io.BytesIO(first))
    report = await import_ndjson(target, io.BytesIO(full))
    assert (report.imported, report.skipped) == (3, 5)
    assert (await verify(target)).ok and (await verify(target)).checked == 8
    await target.close()


def edit_line(dump: bytes, index: int, **changes: object) -> bytes:
    lines = dump.splitlines()
    record = orjson.loads(lines[index])
    record.update(changes)
    lines[index] = orjson.dumps(record)
    return b"\n".join(lines) + b"\n"


@pytest.mark.parametrize(
    ("mangle", "line", "reason"),
    [
        (lambda d: edit_line(d, 3, data={"i": 999}), 4, "hash"),
        (lambda d: edit_line(d, 2, position=9), 3, "position"),
        (lambda d: b"\n".join(d.splitlines()[:2] + d.splitlines()[3:]), 3, "position"),
        (lambda d: d.replace(b"\n", b"\n{not json\n", 1), 2, "JSON"),
        (lambda d: edit_line(d, 0, surprise=1), 1, "unknown"),
        (lambda d: edit_line(d, 1, stream=None), 2, "stream"),
    ],
    ids=["edited-data", "bad-position", "missing-line", "garbage", "unknown-field", "null-stream"],
)
async def test_bad_file_is_refused_with_its_line_and_writes_nothing(
    store: EventStore,
    tmp_path: Path,
    mangle,
    line: int,
    reason: str,  # type: ignore[no-untyped-def]
) -> None:
    await store.append([ev(data={"i": i}) for i in range(6)])
    bad = mangle(await exported(store))
    target = await EventStore.open(tmp_path / "t.db")
    with pytest.raises(ImportError_) as err:
        await import_ndjson(target, io.BytesIO(bad))
    assert err.value.line == line
    assert reason in str(err.value) and "nothing was written" in str(err.value)
    assert await target.last_position() == 0
    await target.close()


async def test_import_of_another_log_into_a_non_empty_one_is_refused(
    store: EventStore, tmp_path: Path
) -> None:
    await store.append([ev(data={"i": i}) for i in range(3)])
    other = await EventStore.open(tmp_path / "other.db")
    await other.append([ev("x")])
    with pytest.raises(ImportError_, match="not an export of this log"):
        await import_ndjson(other, io.BytesIO(await exported(store)))
    assert await other.last_position() == 1
    await other.close()
