"""Configuration errors say, one line per key, what the key wants and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.service.config import ConfigError, parse_config
from tests.support.paths import REPO

EXAMPLE = (REPO / "systemd" / "socbridge.example.toml").read_text(encoding="utf-8")


def _errors(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(Path("/etc/socbridge/socbridge.toml"), text)
    first, *lines = str(caught.value).splitlines()
    assert first == "configuration /etc/socbridge/socbridge.toml is invalid:"
    return [line.strip() for line in lines]


def test_the_example_is_valid() -> None:
    parse_config(REPO / "systemd" / "socbridge.example.toml", EXAMPLE)


def test_a_misspelt_key_names_the_nearest_known_key() -> None:
    text = EXAMPLE.replace("[connectwise]", '[connectwise]\nroutin_status = "Send to SOC"', 1)
    text += (
        '\n[[tenants]]\nname = "x"\nsoc_organization_id = 5\ncw_company_id = 6\nnote_type = "x"\n'
    )
    errors = _errors(text)
    assert "connectwise.routin_status: unknown key; did you mean `routing_status`?" in errors[0]
    assert any("note_type: unknown key; did you mean `note_type_used`?" in e for e in errors)


def test_a_key_unlike_any_known_one_is_refused_without_a_guess() -> None:
    [error] = _errors(EXAMPLE.replace("[store]", "[store]\nflux_capacitor = 1", 1))
    assert error.startswith("store.flux_capacitor: unknown key; remove it or check its spelling")


@pytest.mark.parametrize(
    ("key", "value", "says"),
    [
        ("poll_interval_seconds", '"soon"', "expected a number of seconds, got 'soon'"),
        ("requests_per_second", '"fast"', "expected a number, got 'fast'"),
        ("max_attempts", '"many"', "expected a whole number, got 'many'"),
        ("board", "7", "expected text in quotes, got 7"),
    ],
)
def test_a_value_of_the_wrong_kind_says_what_the_key_wants(key: str, value: str, says: str) -> None:
    lines = [line for line in EXAMPLE.splitlines() if not line.startswith(f"{key} =")]
    text = "\n".join(lines).replace("[connectwise]", f"[connectwise]\n{key} = {value}", 1)
    assert _errors(text) == [f"connectwise.{key}: {says}"]
