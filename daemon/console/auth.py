"""Who may use the console, and proof that a form came from the console itself.

- Without ``[admin] token`` the console listens on loopback only (config
  validation refuses anything else) and whoever reaches it is ``local``: the
  host's own users, or someone with an SSH tunnel to it.
- With a token file, every request needs a token: ``Authorization: Bearer
  TOKEN``, or a session cookie the login form gives. The token's name (its
  line ``NAME:TOKEN``) is recorded with every action taken with it.
- Every POST that changes something carries a CSRF token derived (HMAC) from
  the session: a page of another site cannot forge it, and it is answered 403
  without one. Cookies are ``HttpOnly`` and ``SameSite=Strict`` (``Secure``
  over TLS).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path

from daemon.service.secrets import Secret, SecretError, load_secret

COOKIE = "socbridge_console"
#: A login lasts this long without use.
SESSION_IDLE_S = 8 * 3600.0
#: Sessions kept at most (the least recently used go first): a client that never keeps
#: its cookie, a probe say, cannot grow the table without bound.
MAX_SESSIONS = 10_000
LOCAL = "local"


class TokenFileError(SecretError):
    """The token file holds no usable token; the message says what to write."""


@dataclass(frozen=True)
class Tokens:
    """The console's tokens by name (values kept as :class:`Secret`)."""

    by_name: dict[str, Secret]

    @classmethod
    def load(cls, ref: str) -> Tokens:
        """Read ``NAME:TOKEN`` lines (a bare ``TOKEN`` is named after the file)."""
        text = load_secret(ref).reveal()
        default = Path(ref.removeprefix("credential:")).stem or "admin"
        found: dict[str, Secret] = {}
        for raw in text.splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            name, sep, token = line.partition(":")
            name, token = (name.strip(), token.strip()) if sep else (default, line)
            if len(token) < 16:
                raise TokenFileError(
                    f"[admin] token {ref}: a token shorter than 16 characters (for {name!r}); "
                    "write NAME:TOKEN lines with long random tokens (openssl rand -hex 24)"
                )
            found[name] = Secret(token)
        if not found:
            raise TokenFileError(
                f"[admin] token {ref} holds no token; write NAME:TOKEN lines "
                "(openssl rand -hex 24 makes one)"
            )
        return cls(found)

    def match(self, given: str) -> str | None:
        """The name of the token ``given`` is, or ``None``."""
        name_found = None
        for name, token in self.by_name.items():
            # Compare with every token, so the time taken says nothing about which matched.
            if hmac.compare_digest(token.reveal().encode(), given.encode()):
                name_found = name
        return name_found


@dataclass
class Session:
    operator: str
    last_used: float = field(default_factory=time.monotonic)


class Sessions:
    """Browser sessions (in memory: a restart asks for the token again)."""

    def __init__(self) -> None:
        self._key = secrets.token_bytes(32)
        self._sessions: dict[str, Session] = {}

    def open(self, operator: str) -> str:
        self._expire()
        while len(self._sessions) >= MAX_SESSIONS:
            del self._sessions[next(iter(self._sessions))]  # kept in order of last use
        sid = secrets.token_urlsafe(32)
        self._sessions[sid] = Session(operator)
        return sid

    def get(self, sid: str | None) -> Session | None:
        if not sid:
            return None
        session = self._sessions.get(sid)
        if session is None:
            return None
        if time.monotonic() - session.last_used > SESSION_IDLE_S:
            del self._sessions[sid]
            return None
        session.last_used = time.monotonic()
        self._sessions[sid] = self._sessions.pop(sid)  # now the most recently used
        return session

    def close(self, sid: str | None) -> None:
        if sid:
            self._sessions.pop(sid, None)

    def csrf(self, sid: str) -> str:
        """The CSRF token of a session: forms carry it, POSTs are checked against it."""
        return hmac.new(self._key, sid.encode(), hashlib.sha256).hexdigest()

    def csrf_ok(self, sid: str | None, given: str | None) -> bool:
        if not sid or not given:
            return False
        return hmac.compare_digest(self.csrf(sid), given)

    def _expire(self) -> None:
        now = time.monotonic()
        for sid in [s for s, v in self._sessions.items() if now - v.last_used > SESSION_IDLE_S]:
            del self._sessions[sid]
