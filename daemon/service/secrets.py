"""Secrets (API keys, tokens, signing secrets): loaded from files, never shown.

A :class:`Secret` holds the value but prints as ``Secret('***')`` in reprs,
f-strings, logs and tracebacks; only :meth:`Secret.reveal` gives the value, and
only the code that puts it on the wire should call it (R15).

A secret reference in the configuration is either a path to a file, or
``credential:NAME`` for a systemd credential (``LoadCredential=NAME:...``),
read from ``$CREDENTIALS_DIRECTORY/NAME``. Outside systemd (an admin command
run with sudo), ``credential:NAME`` is read from the credential store the
unit's ``LoadCredential=`` lines load from, :data:`CREDENTIAL_STORE`. A file
that group or others may read is refused, so a key never sits world-readable
on the host.
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


#: Where ``credential:NAME`` is read from when ``$CREDENTIALS_DIRECTORY`` is unset: the
#: folder the unit's ``LoadCredential=NAME:/etc/socbridge/credentials/NAME`` lines load
#: each credential from (root only), so ``sudo socbridge validate`` reads the same files
#: the service gets. ``$SOCBRIDGE_CREDENTIAL_STORE`` names another folder.
CREDENTIAL_STORE = Path("/etc/socbridge/credentials")


def _credential(ref: str, environ: Mapping[str, str]) -> tuple[str, Path, str | None]:
    """(name, file, $CREDENTIALS_DIRECTORY or None) of a ``credential:NAME`` reference."""
    name = ref.removeprefix("credential:")
    if not name or "/" in name or name in (".", ".."):
        raise SecretError(f"secret reference {ref!r}: credential name must be a plain name")
    directory = environ.get("CREDENTIALS_DIRECTORY")
    if directory:
        return name, Path(directory) / name, directory
    return name, Path(environ.get("SOCBRIDGE_CREDENTIAL_STORE") or CREDENTIAL_STORE) / name, None


def resolve_secret_path(ref: str, environ: Mapping[str, str] | None = None) -> Path:
    """The file a secret reference points at (``credential:NAME`` or a path)."""
    env = os.environ if environ is None else environ
    if ref.startswith("credential:"):
        return _credential(ref, env)[1]
    return Path(ref)


def _unreadable(ref: str, path: Path, missing: bool, environ: Mapping[str, str]) -> SecretError:
    """The one-line error for a secret file that is missing, or this user cannot read."""
    if not ref.startswith("credential:"):
        if missing:
            return SecretError(f"secret file {path} does not exist; create it (mode 0600)")
        return SecretError(
            f"secret file {path} cannot be read by this user; make it owned by the service user"
        )
    name, _, directory = _credential(ref, environ)
    if directory is not None:
        return SecretError(
            f"credential {name} was not passed to the service ($CREDENTIALS_DIRECTORY is "
            f"{directory}): create {CREDENTIAL_STORE / name} (mode 0600), check that the unit "
            f"has LoadCredential={name}:{CREDENTIAL_STORE / name}, then restart"
        )
    if missing:
        return SecretError(
            f"secret reference {ref!r}: $CREDENTIALS_DIRECTORY is not set (not started by "
            f"systemd) and {path} does not exist; create it (mode 0600), or give a file path"
        )
    return SecretError(
        f"secret reference {ref!r}: $CREDENTIALS_DIRECTORY is not set (not started by "
        f"systemd) and {path} cannot be read by this user; run the command as root (sudo)"
    )


def load_secret(ref: str, environ: Mapping[str, str] | None = None) -> Secret:
    """Read a secret from its file, refusing one that group or others can read."""
    env = os.environ if environ is None else environ
    path = resolve_secret_path(ref, env)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise _unreadable(ref, path, True, env) from None
    except PermissionError:
        raise _unreadable(ref, path, False, env) from None
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
