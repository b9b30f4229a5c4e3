"""systemd's notify protocol, without a dependency: one datagram per state change.

When systemd starts a ``Type=notify`` service it sets ``NOTIFY_SOCKET`` to a
unix datagram socket path; a leading ``@`` means the Linux abstract namespace
(the ``@`` becomes a NUL byte). The service sends newline-separated
``KEY=VALUE`` lines: ``READY=1`` once it serves, ``WATCHDOG=1`` at least every
half ``WATCHDOG_USEC``, ``RELOADING=1`` / ``STOPPING=1`` around those phases,
``STATUS=...`` as free text. Without ``NOTIFY_SOCKET`` (not under systemd)
every call is a no-op. :func:`watchdog_pings` is the keep-alive task: it runs
on the event loop, so a blocked loop stops the pings and systemd restarts us.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Mapping


class Notifier:
    """Sends notify datagrams to ``NOTIFY_SOCKET`` (a no-op when it is unset)."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        raw = env.get("NOTIFY_SOCKET", "")
        self.address: str | bytes | None = None
        if raw.startswith("@"):
            self.address = b"\0" + raw[1:].encode()
        elif raw.startswith("/"):
            self.address = raw
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        self.watchdog_s: float | None = None
        if usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            self.watchdog_s = int(usec) / 1_000_000

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, **fields: str | int) -> bool:
        """Send ``KEY=VALUE`` lines (e.g. ``notify(READY=1, STATUS="serving")``)."""
        if self.address is None:
            return False
        message = "\n".join(f"{key}={value}" for key, value in fields.items()).encode()
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            try:
                sock.sendto(message, self.address)
            except OSError:
                return False  # systemd gone or socket not writable: nothing to tell
        return True

    async def watchdog_pings(self) -> None:
        """Send ``WATCHDOG=1`` every half watchdog interval until cancelled."""
        if self.watchdog_s is None or self.address is None:
            return
        while True:
            self.notify(WATCHDOG=1)
            await asyncio.sleep(self.watchdog_s / 2)
