"""Arguments for calling a command's function directly, as argparse would build them."""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
from typing import Any

from daemon.cli.main import main
from tests.support.paths import REPO


def audit_args(**over: Any) -> argparse.Namespace:
    values = {"remote": False, "fix": False, "json": True, "stuck_attempts": 3, "stuck_age": 1000}
    return argparse.Namespace(**{**values, **over})


def run_socbridge(
    *args: str, stdin: bytes | None = None, entry: bool = False
) -> subprocess.CompletedProcess[bytes]:
    """Run ``socbridge ARGS``: in a subprocess with ``entry``, else through ``main`` here,
    with stdin, stdout and stderr as bytes as a subprocess would see them."""
    if entry:
        return subprocess.run(
            [sys.executable, "-m", "daemon", *args],
            cwd=REPO,
            input=stdin,
            capture_output=True,
            timeout=60,
        )
    streams = [io.TextIOWrapper(io.BytesIO(), encoding="utf-8") for _ in range(2)]
    saved = sys.stdin, sys.stdout, sys.stderr
    sys.stdin = io.TextIOWrapper(io.BytesIO(stdin or b""), encoding="utf-8")
    sys.stdout, sys.stderr = streams
    try:
        code = main(list(args))
    finally:
        for stream in streams:
            stream.flush()
        sys.stdin, sys.stdout, sys.stderr = saved
    out, err = (stream.buffer.getvalue() for stream in streams)  # type: ignore[attr-defined]
    return subprocess.CompletedProcess(list(args), code, out, err)
