"""The shipped systemd files: the example config loads, the unit's exposure is <= 2.0."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from daemon.service.config import load_config
from daemon.service.secrets import CREDENTIAL_STORE
from tests.support.paths import REPO

SYSTEMD = REPO / "systemd"


def test_example_config_is_accepted_and_serves_tls() -> None:
    config = load_config(SYSTEMD / "socbridge.example.toml")
    assert config.server.tls_cert is not None and not config.server.allow_plain_http
    assert config.connectwise.private_key == "credential:cw_private_key"


def test_unit_loads_every_credential_the_example_config_names() -> None:
    unit = (SYSTEMD / "socbridge.service").read_text()
    text = (SYSTEMD / "socbridge.example.toml").read_text()
    names = re.findall(r'"credential:(\w+)"', text)
    # From the folder admin commands read credential:NAME from when run with sudo, and only
    # those: a LoadCredential= whose file is missing fails the start (TLS files are not ones).
    loaded = re.findall(r"^LoadCredential=(\w+):(.*)$", unit, flags=re.M)
    assert sorted(loaded) == sorted((name, f"{CREDENTIAL_STORE}/{name}") for name in names)
    for line in ("Type=notify", "WatchdogSec=", "ExecReload=/bin/kill -HUP $MAINPID"):
        assert line in unit
    assert "StateDirectory=socbridge" in unit


def test_the_example_tls_files_are_in_the_folder_the_service_group_reads() -> None:
    config = load_config(SYSTEMD / "socbridge.example.toml")
    tmpfiles = (SYSTEMD / "socbridge.tmpfiles.conf").read_text()
    assert "d /etc/socbridge/tls 0750 root socbridge -" in tmpfiles
    for path in (config.server.tls_cert, config.server.tls_key):
        assert path is not None and str(path.parent) == "/etc/socbridge/tls"


def test_systemd_parses_every_line_of_the_unit() -> None:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed (apt-get install systemd)")
    done = subprocess.run(
        [tool, "verify", str(SYSTEMD / "socbridge.service")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    # The rest of what verify says is about this host (no /opt/socbridge, no /bin/kill).
    unparsed = [
        line
        for line in done.stderr.splitlines()
        if re.search(r"Unknown key|Invalid syntax|Unknown section|, ignoring", line)
    ]
    assert not unparsed, done.stderr


def test_unit_raises_the_open_file_limit_above_the_default_1024() -> None:
    unit = (SYSTEMD / "socbridge.service").read_text()
    [limit] = re.findall(r"^LimitNOFILE=(\d+)$", unit, flags=re.M)
    assert int(limit) >= 65536


def test_security_exposure_is_at_most_2() -> None:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed (apt-get install systemd)")
    done = subprocess.run(
        [tool, "security", "--offline=true", str(SYSTEMD / "socbridge.service")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if "--offline" in done.stderr and "unrecognized" in done.stderr:
        pytest.skip(f"this systemd-analyze has no --offline: {done.stderr.strip()}")
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", done.stdout)
    assert match, done.stdout + done.stderr
    assert float(match.group(1)) <= 2.0, done.stdout
