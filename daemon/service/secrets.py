"""Secrets (API keys, tokens, signing secrets): loaded from files, never shown.

A :class:`Secret` holds the value but prints as ``Secret('***')`` in reprs,
f-strings, logs and tracebacks; only :meth:`Secret.reveal` gives the value, and
only the code that puts it on the wire should call it (R15).

A secret reference in the configuration is either a path to a file, or
``credential:NAME`` for a systemd credential (``LoadCredential=NAME:...``),
read from ``$CREDENTIALS_DIRECTORY/NAME``. A file that group or others may
read is refused, so a key never sits world-readable on the host.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path


class SecretError(Exception):
    """A secret could not be loaded; the message says which file and the fix."""


class Secret:
    """A secret string that never shows itself."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The secret value, for putting on the wire only."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        import hmac

        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash(("Secret", len(self._value)))

    def __reduce__(self) -> str:
        raise TypeError("a Secret cannot be pickled")


def resolve_secret_path(ref: str, environ: Mapping[str, str] | None = None) -> Path:
    """The file a secret reference points at (``credential:NAME`` or a path)."""
    env = os.environ if environ is None else environ
    if ref.startswith("credential:"):
        name = ref.removeprefix("credential:")
        if not name or "/" in name:
            raise SecretError(f"secret reference {ref!r}: credential name must be a plain name")
        directory = env.get("CREDENTIALS_DIRECTORY")
        if not directory:
            raise SecretError(
                f"secret reference {ref!r} needs $CREDENTIALS_DIRECTORY: run under systemd "
                f"with LoadCredential={name}:/path/to/file, or give a file path instead"
            )
        return Path(directory) / name
    return Path(ref)


def load_secret(ref: str, environ: Mapping[str, str] | None = None) -> Secret:
    """Read a secret from its file, refusing one that group or others can read."""
    path = resolve_secret_path(ref, environ)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise SecretError(f"secret file {path} does not exist; create it (mode 0600)") from None
    except PermissionError:
        raise SecretError(
            f"secret file {path} cannot be read by this user; make it owned by the service user"
        ) from None
    if not stat.S_ISREG(st.st_mode):
        raise SecretError(f"secret file {path} is not a regular file")
    # systemd credentials are delivered read-only to the service user; both
    # 0400 and 0600 are fine, anything readable by group or others is not.
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SecretError(
            f"secret file {path} is readable by group or others "
            f"(mode {stat.S_IMODE(st.st_mode):04o}); run: chmod 600 {path}"
        )
    try:
        value = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise SecretError(f"secret file {path} could not be read: {type(exc).__name__}") from None
    if not value:
        raise SecretError(f"secret file {path} is empty")
    return Secret(value)
