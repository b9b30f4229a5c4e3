"""``socbridge verify | export | import``: operator commands on the event log file.

Each takes the log either from ``--db PATH`` or from a configuration file's
``[store] path`` (``--config FILE``). ``verify`` and ``export`` open the file
read-only, so they are safe to run while the daemon is writing it.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from pathlib import Path
from typing import IO

import orjson

from daemon.cli.main import EXIT_OK, EXIT_PROBLEM, EXIT_STORE, EXIT_USAGE
from daemon.cli.progress import Bars, OnProgress, wanted
from daemon.service.config import ConfigError, load_config
from eventstore import (
    EventStore,
    ImportError_,
    ImportReport,
    StoreError,
    VerifyReport,
    export_ndjson,
    import_ndjson,
    verify,
)
from eventstore.anchors import anchors_path, read_anchors
from eventstore.backup import BackupError, BackupReport, backup


def add_db_arguments(parser: argparse.ArgumentParser) -> None:
    """``--db`` / ``--config``: which event log a command works on."""
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--db", type=Path, metavar="PATH", help="the event log SQLite file")
    group.add_argument(
        "--config", type=Path, metavar="FILE", help="socbridge configuration ([store] path)"
    )


def resolve_db(args: argparse.Namespace) -> Path:
    if args.db is not None:
        return Path(args.db)
    return load_config(args.config).store.path


def _error(message: str) -> None:
    print(f"socbridge: error: {message}", file=sys.stderr)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser(
        "verify",
        help="check the event log's hash chain and order",
        formatter_class=fmt,
        description=(
            "Walk the whole event log, recompute every hash and check that positions and\n"
            "stream versions are dense. Opens the file read-only.\n\n"
            "exit codes: 0 intact, 1 broken (the first bad position is named), 3 unusable file"
        ),
        epilog=(
            "examples:\n"
            "  socbridge verify --config /etc/socbridge/socbridge.toml\n"
            "  socbridge verify --db /var/lib/socbridge/events.db --json"
        ),
    )
    add_db_arguments(p)
    p.add_argument(
        "--anchors", type=Path, metavar="FILE",
        help="the anchors to check against (default: the config's, or beside the log); "
        "e.g. a copy kept off the host",
    )  # fmt: skip
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser(
        "backup",
        help="copy the event log while the daemon runs, verified, with its anchors",
        formatter_class=fmt,
        description=(
            "An online, consistent copy of the event log (SQLite's backup API: one snapshot,\n"
            "appends go on meanwhile), with its projection rows. The copy is verified (chain\n"
            "and anchors) before it is renamed to DEST; its anchors are written to\n"
            "DEST.anchors. DEST must not exist. Restore: docs/operations.md.\n\n"
            "exit codes: 0 written and verified, 1 the copy failed its check (nothing kept),\n"
            "2 DEST exists or cannot be written, 3 the log cannot be read"
        ),
        epilog=(
            "examples:\n"
            "  socbridge backup /var/backups/socbridge/events-$(date +%F).db "
            "--config /etc/socbridge/socbridge.toml"
        ),
    )
    p.add_argument("dest", type=Path, metavar="DEST", help="the backup file to write")
    add_db_arguments(p)
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")
    p.set_defaults(func=cmd_backup)

    p = sub.add_parser(
        "export",
        help="write the event log as NDJSON",
        formatter_class=fmt,
        description=(
            "Write every event, in order, one JSON object per line (read-only).\n\n"
            "exit codes: 0 exported, 2 the output cannot be written, 3 unusable file"
        ),
        epilog=(
            "examples:\n"
            "  socbridge export --db events.db > backup.ndjson\n"
            "  socbridge export --config socbridge.toml --output backup.ndjson"
        ),
    )
    add_db_arguments(p)
    p.add_argument("--output", "-o", default="-", help="file to write (default: stdout)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser(
        "import",
        help="load an NDJSON export into an event log, verifying its chain",
        formatter_class=fmt,
        description=(
            "Check every line of an export (fields, order, hash chain) and write all of it in\n"
            "one transaction, or nothing. Lines the log already holds are skipped, so an\n"
            "interrupted import can be re-run. Stop the daemon first.\n\n"
            "exit codes: 0 imported, 1 refused (the bad line is named), 3 unusable file"
        ),
        epilog=(
            "examples:\n"
            "  socbridge import --db restored.db backup.ndjson\n"
            "  socbridge import --config socbridge.toml --json backup.ndjson"
        ),
    )
    add_db_arguments(p)
    p.add_argument("file", help="the NDJSON file to import ('-' for stdin)")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    p.set_defaults(func=cmd_import)


def _guarded(action: Callable[[], int], io_hint: str) -> int:
    """Run a command body, mapping the errors an operator can fix to exit codes."""
    try:
        return action()
    except ConfigError as exc:
        _error(str(exc))
        return EXIT_USAGE
    except ImportError_ as exc:
        _error(str(exc))
        return EXIT_PROBLEM
    except StoreError as exc:
        _error(str(exc))
        return EXIT_STORE
    except BrokenPipeError:
        raise  # the reader of our output went away: main ends quietly
    except OSError as exc:
        _error(f"{io_hint}: {exc.strerror}")
        return EXIT_USAGE


def anchors_of(args: argparse.Namespace, db: Path) -> Path:
    """The anchors file a command checks: ``--anchors``, the config's, or beside the log."""
    if getattr(args, "anchors", None) is not None:
        return Path(args.anchors)
    if args.db is None:
        return load_config(args.config).store.anchors
    return anchors_path(db)


def cmd_verify(args: argparse.Namespace) -> int:
    def action() -> int:
        path = resolve_db(args)
        anchors_file = anchors_of(args, path)
        if args.anchors is not None and not anchors_file.exists():
            _error(f"anchors file {anchors_file} does not exist; check --anchors")
            return EXIT_USAGE
        with Bars(wanted(args.json)) as bars:
            report = asyncio.run(_verify(path, anchors_file, bars.task("verifying", None)))
        if args.json:
            print(orjson.dumps({"db": str(path), **report.to_dict()}).decode())
        elif report.ok:
            anchored = (
                f", {report.anchors_checked} anchors agree ({anchors_file})"
                if report.anchors_checked
                else f", no anchors to check ({anchors_file} does not exist)"
            )
            print(f"event log {path}: intact, {report.checked} events, chain verified{anchored}")
        else:
            print(
                f"event log {path}: BROKEN at position {report.first_bad_position}: "
                f"{report.problem} ({report.checked} events before it are sound)"
            )
        return EXIT_OK if report.ok else EXIT_PROBLEM

    return _guarded(action, "cannot read the event log")


async def _verify(
    path: Path, anchors_file: Path, on_progress: OnProgress | None = None
) -> VerifyReport:
    store = await EventStore.open(path, readonly=True)
    try:
        return await verify(store, read_anchors(anchors_file), on_progress)
    finally:
        await store.close()


def cmd_backup(args: argparse.Namespace) -> int:
    def action() -> int:
        path = resolve_db(args)
        try:
            report = asyncio.run(_backup(path, Path(args.dest), anchors_of(args, path)))
        except BackupError as exc:
            _error(str(exc))
            return EXIT_PROBLEM if "fails its check" in str(exc) else EXIT_USAGE
        at = report.head
        doc = {
            "dest": str(report.dest),
            "anchors": str(report.anchors),
            "events": report.verified.checked,
            "position": at.position if at else 0,
            "hash": at.hash if at else None,
            "bytes": report.bytes,
            "anchors_checked": report.verified.anchors_checked,
        }
        if args.json:
            print(orjson.dumps(doc).decode())
        else:
            print(
                f"backup {report.dest}: {doc['events']} events up to position {doc['position']}, "
                f"chain verified ({doc['anchors_checked']} anchors agree); anchors in "
                f"{report.anchors}"
            )
        return EXIT_OK

    return _guarded(action, f"cannot write {args.dest}")


async def _backup(path: Path, dest: Path, live_anchors: Path) -> BackupReport:
    store = await EventStore.open(path, readonly=True)
    try:
        return await backup(store, dest, live_anchors)
    finally:
        await store.close()


def cmd_export(args: argparse.Namespace) -> int:
    def action() -> int:
        path = resolve_db(args)
        if args.output == "-":
            # The events are the output: no bar among them.
            count = asyncio.run(_export(path, sys.stdout.buffer))
            sys.stdout.buffer.flush()
        else:
            with open(args.output, "wb") as out, Bars(wanted()) as bars:
                count = asyncio.run(_export(path, out, bars.task("exporting", None)))
        print(f"exported {count} events from {path}", file=sys.stderr)
        return EXIT_OK

    return _guarded(action, f"cannot write {args.output}")


async def _export(path: Path, out: IO[bytes], on_progress: OnProgress | None = None) -> int:
    store = await EventStore.open(path, readonly=True)
    try:
        return await export_ndjson(store, out, on_progress=on_progress)
    finally:
        await store.close()


def cmd_import(args: argparse.Namespace) -> int:
    def action() -> int:
        path = resolve_db(args)
        with Bars(wanted(args.json)) as bars:
            if args.file == "-":
                report = asyncio.run(_import(path, sys.stdin.buffer, bars.task("importing", None)))
            else:
                with open(args.file, "rb") as source:
                    bar = bars.task("importing", _lines(source) if bars.progress else None)
                    report = asyncio.run(_import(path, source, bar))
        if args.json:
            summary = {"db": str(path), "imported": report.imported, "skipped": report.skipped,
                       "last_position": report.last_position}  # fmt: skip
            print(orjson.dumps(summary).decode())
            return EXIT_OK
        print(
            f"imported {report.imported} events into {path} ({report.skipped} already "
            f"present, log now ends at position {report.last_position})"
        )
        return EXIT_OK

    return _guarded(action, f"cannot read {args.file}")


def _lines(source: IO[bytes]) -> int | None:
    """The lines of a file (newlines counted a megabyte at a time), read back to its start;
    None for a pipe, which cannot be read twice."""
    if not source.seekable():
        return None
    count = sum(chunk.count(b"\n") for chunk in iter(lambda: source.read(1 << 20), b""))
    source.seek(0)
    return count


async def _import(
    path: Path, source: IO[bytes], on_progress: OnProgress | None = None
) -> ImportReport:
    store = await EventStore.open(path)
    try:
        return await import_ndjson(store, source, on_progress)
    finally:
        await store.close()
