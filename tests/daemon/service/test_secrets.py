"""``credential:NAME`` in the service and outside it (an admin command run with sudo)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from daemon.service.secrets import (
    CREDENTIAL_STORE,
    SecretError,
    load_secret,
    resolve_secret_path,
)


def write(path: Path, value: str, mode: int = 0o600) -> None:
    path.write_text(value + "\n")
    path.chmod(mode)


def test_in_the_service_a_credential_is_read_from_credentials_directory(tmp_path: Path) -> None:
    write(tmp_path / "cw_private_key", "from-systemd")
    env = {"CREDENTIALS_DIRECTORY": str(tmp_path)}
    assert load_secret("credential:cw_private_key", env).reveal() == "from-systemd"


def test_outside_systemd_a_credential_is_the_file_the_unit_loads_it_from() -> None:
    assert resolve_secret_path("credential:cw_private_key", {}) == Path(
        "/etc/socbridge/credentials/cw_private_key"
    )
    assert CREDENTIAL_STORE == Path("/etc/socbridge/credentials")


def test_the_credential_store_can_be_another_folder(tmp_path: Path) -> None:
    write(tmp_path / "soc_api_token", "from-the-store")
    env = {"SOCBRIDGE_CREDENTIAL_STORE": str(tmp_path)}
    assert load_secret("credential:soc_api_token", env).reveal() == "from-the-store"


def test_a_missing_credential_names_both_places_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(SecretError) as err:
        load_secret("credential:cw_public_key", {"SOCBRIDGE_CREDENTIAL_STORE": str(tmp_path)})
    message = str(err.value)
    assert "\n" not in message
    assert "$CREDENTIALS_DIRECTORY is not set" in message
    assert str(tmp_path / "cw_public_key") in message

    with pytest.raises(SecretError) as err:
        load_secret("credential:cw_public_key", {"CREDENTIALS_DIRECTORY": str(tmp_path)})
    message = str(err.value)
    assert "\n" not in message and str(tmp_path) in message
    assert "LoadCredential=cw_public_key:/etc/socbridge/credentials/cw_public_key" in message


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop to another uid")
def test_a_store_the_user_cannot_read_says_to_run_as_root(tmp_path: Path) -> None:
    store = tmp_path / "credentials"
    store.mkdir(mode=0o700)
    write(store / "cw_private_key", "never-shown")
    env = {"SOCBRIDGE_CREDENTIAL_STORE": str(store)}
    read, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: another user, as `sudo -u socbridge` would be
        message = "read"
        try:
            os.setgid(65534)
            os.setuid(65534)
            load_secret("credential:cw_private_key", env)
        except BaseException as exc:
            message = str(exc)
        finally:
            os.write(write_end, message.encode())
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read) as pipe:
        message = pipe.read()
    os.waitpid(pid, 0)
    assert "cannot be read by this user; run the command as root (sudo)" in message
    assert "never-shown" not in message


def test_a_credential_name_cannot_leave_its_folder() -> None:
    for ref in ("credential:../x", "credential:..", "credential:"):
        with pytest.raises(SecretError, match="plain name"):
            resolve_secret_path(ref, {})
