"""The [connectwise] settings model: what it refuses, and that keys stay secret."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from daemon.connectors.connectwise.settings import ConnectWiseSettings
from daemon.service.secrets import SecretError
from tests.support.connectwise import write_secret

BASE: dict[str, Any] = {
    "site_url": "https://na.myconnectwise.net",
    "company_id": "demo_msp",
    "public_key": "credential:cw_public",
    "private_key": "credential:cw_private",
    "client_id": "3c5b2a9e-7f1d-4e8a-9b6c-0d2e4f6a8b1c",
    "api_member": "socbridge",
}


def make(**over: Any) -> ConnectWiseSettings:
    return ConnectWiseSettings.model_validate({**BASE, **over})


@pytest.mark.parametrize("key", ["routing_status", "solved_status", "unresolved_status"])
def test_unlinked_status_cannot_be_routing_or_mapped(key: str) -> None:
    with pytest.raises(ValidationError, match="unlinked status cannot be used"):
        make(**{key: "Unlinked"})


def test_unlinked_status_may_be_unset() -> None:
    assert make(unlinked_status=None, routing_status="Unlinked").unlinked_status is None


@pytest.mark.parametrize(
    ("over", "message"),
    [
        ({"site_url": "http://na.myconnectwise.net"}, "must use https"),
        ({"site_url": "na.myconnectwise.net"}, "absolute URL"),
        ({"site_url": "https://u:p@na.myconnectwise.net"}, "credentials"),
        ({"client_id": "not-a-guid"}, "clientId GUID"),
        ({"priority_mapping": {"urgent": "P1"}}, "missing high, normal, low"),
        ({"codebase": "a/b"}, "one path segment"),
        ({"surprise": 1}, "Extra inputs"),
    ],
)
def test_bad_settings_are_refused(over: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        make(**over)


def test_normalisation() -> None:
    s = make(site_url="http://127.0.0.1:8701/", codebase="v2025_1")
    assert s.site_url == "http://127.0.0.1:8701" and s.codebase == "v2025_1/"
    assert s.host == "127.0.0.1"


def test_keys_load_from_files_and_never_show(tmp_path: Path) -> None:
    pub = write_secret(tmp_path / "pub", "PUBLICVALUE")
    priv = write_secret(tmp_path / "priv", "PRIVATEVALUE")
    keys = make(public_key=pub, private_key=priv).load_keys()
    assert keys.private_key.reveal() == "PRIVATEVALUE"
    assert "PRIVATEVALUE" not in repr(keys) and "PUBLICVALUE" not in repr(keys)
    (tmp_path / "priv").chmod(0o644)
    with pytest.raises(SecretError, match="readable by group or others"):
        make(public_key=pub, private_key=priv).load_keys()
