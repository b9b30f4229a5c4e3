"""The notify protocol against a real unix datagram socket (path and abstract)."""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path

from daemon.service.sdnotify import Notifier


def test_path_socket_receives_ready_and_status(tmp_path: Path) -> None:
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        assert Notifier({"NOTIFY_SOCKET": str(path)}).notify(READY=1, STATUS="serving")
        assert sock.recv(4096) == b"READY=1\nSTATUS=serving"


def test_abstract_socket_and_watchdog_pings() -> None:
    name = f"socbridge-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(b"\0" + name.encode())
        sock.setblocking(False)
        notifier = Notifier({"NOTIFY_SOCKET": "@" + name, "WATCHDOG_USEC": "20000"})
        assert notifier.watchdog_s == 0.02

        async def two_pings() -> list[bytes]:
            loop = asyncio.get_running_loop()
            task = asyncio.create_task(notifier.watchdog_pings())
            got = [await loop.sock_recv(sock, 64), await loop.sock_recv(sock, 64)]
            task.cancel()
            return got

        assert asyncio.run(two_pings()) == [b"WATCHDOG=1", b"WATCHDOG=1"]


def test_without_notify_socket_nothing_is_sent() -> None:
    notifier = Notifier({})
    assert not notifier.enabled and not notifier.notify(READY=1)
    # A watchdog meant for another pid is not ours to feed.
    assert Notifier({"WATCHDOG_USEC": "1000", "WATCHDOG_PID": "1"}).watchdog_s is None
