"""A real ``socbridge run`` subprocess against in-process simulators, for reload and tenant tests.

The test reads what the daemon did the way an operator would: its JSON log
lines (stdout, here a file), its event log (opened read-only from this
process) and both desks through their APIs. Waiting is polling with a
deadline (another process cannot be subscribed to), never a fixed sleep.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp

from daemon.cli.main import main
from daemon.simulators.harness import Analyst, Technician
from daemon.simulators.rehearsal import Rehearsal, start_rehearsal
from eventstore import EventStore, RecordedEvent
from tests.support.process import REPO, DaemonProcess, eventually


class Live:
    """The rehearsal, the daemon process, a read-only view of its log, and the two people."""

    def __init__(self, rehearsal: Rehearsal, daemon: DaemonProcess, http: aiohttp.ClientSession):
        self.rehearsal = rehearsal
        self.daemon = daemon
        self.http = http
        self.config_path = rehearsal.config_path
        self.db = rehearsal.config_path.parent / "events.db"
        self.analyst = Analyst(http, rehearsal.soc.url)
        self.technician = Technician(http, rehearsal.cw.url)

    # ------------------------------------------------------------ the daemon

    def hup(self) -> None:
        assert self.daemon.proc is not None
        self.daemon.proc.send_signal(signal.SIGHUP)

    def log_lines(self) -> list[dict[str, Any]]:
        lines = self.daemon.log_path.read_text(errors="replace").splitlines()
        return [json.loads(line) for line in lines if line.startswith("{")]

    async def log_line(
        self, match: Callable[[dict[str, Any]], bool], what: str, after: int = 0
    ) -> dict[str, Any]:
        """The first JSON log line past the first ``after`` lines that ``match``es."""

        async def found() -> dict[str, Any] | None:
            return next((line for line in self.log_lines()[after:] if match(line)), None)

        return await eventually(found, what, 20)

    async def events(self, type_prefix: str = "") -> list[RecordedEvent]:
        async with await EventStore.open(self.db, readonly=True) as store:
            return [e async for e in store.read() if e.type.startswith(type_prefix)]

    # ------------------------------------------------------------ the desks

    async def cw_ticket_for(self, soc_id: int) -> dict[str, Any] | None:
        found = await self.technician.tickets(f"externalXRef = 'socbridge:soc:{soc_id}'")
        return found[0] if found else None

    async def reaches_connectwise(self, soc_id: int) -> dict[str, Any]:
        async def check() -> dict[str, Any] | None:
            return await self.cw_ticket_for(soc_id)

        return await eventually(check, f"SOC ticket {soc_id} to reach ConnectWise", 20)

    async def webhook_refused(self, soc_id: int, after: int = 0) -> None:
        """Wait until the daemon answered a webhook about ``soc_id`` with a 4xx."""

        async def check() -> bool:
            deliveries = self.rehearsal.soc.dispatcher.deliveries[after:]
            return any(d.ticket_id == soc_id and d.outcome == "failed 422" for d in deliveries)

        await eventually(check, f"the daemon to refuse the webhook of SOC ticket {soc_id}", 20)


@asynccontextmanager
async def live_daemon(folder: Path) -> AsyncIterator[Live]:
    """Simulators in this process, ``socbridge run`` as a subprocess, until the block ends."""
    rehearsal = await start_rehearsal(
        "127.0.0.1", 0, folder / "socbridge.toml", None, poll_s=0.5, export_lag=0.1
    )
    daemon = DaemonProcess(rehearsal.config_path, rehearsal.daemon_url, folder / "daemon.log")
    try:
        async with aiohttp.ClientSession() as http:
            await daemon.start()
            await daemon.ready(http)
            yield Live(rehearsal, daemon, http)
            assert await daemon.stop() == 0
    finally:
        await daemon.stop()
        await rehearsal.stop()


def set_tenant(text: str, name: str, **values: Any) -> str:
    """The config ``text`` with keys of tenant ``name`` set (the sim config's layout)."""
    head, sep, rest = text.partition(f'name = "{name}"\n')
    assert sep, f"no tenant {name} in the config"
    block, nxt, tail = rest.partition("\n[")
    lines = [ln for ln in block.splitlines() if ln.split(" = ")[0] not in values]
    lines += [f"{k} = {json.dumps(v)}" for k, v in values.items()]
    return head + sep + "\n".join(lines) + "\n" + (nxt + tail if nxt else "")


async def socbridge(*args: str, entry: bool = False) -> subprocess.CompletedProcess[str]:
    """Run ``socbridge ARGS``: through the installed entry point in a subprocess with
    ``entry``, else the real command line (``main``) in this process, off the event loop
    (the commands call ``asyncio.run`` themselves) so the simulators here keep serving.
    A subprocess costs seconds of interpreter start and imports on a loaded host."""
    if entry:
        proc = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).parent / "socbridge"), *args,
            cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode is not None
        return subprocess.CompletedProcess(list(args), proc.returncode, out.decode(), err.decode())
    return await asyncio.to_thread(_in_process, list(args))


def _in_process(argv: list[str]) -> subprocess.CompletedProcess[str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return subprocess.CompletedProcess(argv, code, out.getvalue(), err.getvalue())
