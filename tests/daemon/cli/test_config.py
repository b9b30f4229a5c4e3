"""``socbridge config check|reference``, and the generated reference in docs/configuration.md."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
import typing
from pathlib import Path

from pydantic import BaseModel

from daemon.cli.main import main
from daemon.service.config import Config
from daemon.service.config_reference import END, START, render, splice
from daemon.simulators.connectwise import fixture as cwfx
from daemon.simulators.rehearsal import write_config
from daemon.simulators.trust import write_rehearsal_tls
from tests.support.paths import REPO


def socbridge(*args: str) -> subprocess.CompletedProcess[str]:
    """The real command line, in this process (a subprocess per call is slow under load)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


def rehearsal_config(tmp_path: Path) -> Path:
    path = tmp_path / "socbridge.toml"
    write_config(path, "http://127.0.0.1:1", "http://127.0.0.1:2", "127.0.0.1", 3, 5.0)
    return path


def test_the_documented_reference_is_the_generated_one() -> None:
    readme = (REPO / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert START in readme and END in readme
    assert splice(readme, render()) == readme, (
        "docs/configuration.md's reference is stale; run: "
        ".venv/bin/python -m daemon.service.config_reference docs/configuration.md"
    )


def _keys(model: type[BaseModel]) -> set[str]:
    keys = set()
    for name, info in model.model_fields.items():
        keys.add(name)
        for arg in (info.annotation, *typing.get_args(info.annotation)):
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                keys |= _keys(arg)
    return keys


def test_reference_documents_every_key_with_a_meaning() -> None:
    text = render()
    sections = {
        "store",
        "server",
        "connectwise",
        "soc",
        "tenants",
        "sync",
        "webhook",
        "conflict",
        "outbox",
        "health",
        "admin",
    }
    for key in _keys(Config) - sections:
        row = next((line for line in text.splitlines() if line.startswith(f"| `{key}` |")), None)
        assert row is not None, f"{key} missing from the reference"
        assert not row.rstrip().endswith("|  |"), f"{key} has no description"
    for header in (
        "`[store]`",
        "`[soc.webhook]`",
        "`[[tenants]]`",
        "`[sync.conflict]`",
        "`[admin]`",
    ):
        assert header in text


def test_check_accepts_a_good_file_and_never_prints_a_secret(tmp_path: Path) -> None:
    path = rehearsal_config(tmp_path)
    result = socbridge("config", "check", "--config", str(path), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["valid"] is True and len(report["hash"]) == 64
    assert report["secrets"]["connectwise.private_key"] == "ok"
    assert [t["name"] for t in report["tenants"]] == ["acme", "globex"]
    human = socbridge("config", "check", "--config", str(path))
    assert human.returncode == 0 and "valid" in human.stdout
    for out in (result.stdout, human.stdout, human.stderr):
        assert cwfx.API_PRIVATE_KEY not in out and cwfx.API_PUBLIC_KEY not in out


def test_check_names_an_unsafe_secret_file_and_exits_1(tmp_path: Path) -> None:
    path = rehearsal_config(tmp_path)
    secret = tmp_path / "secrets" / "cw_private_key"
    secret.chmod(0o644)
    result = socbridge("config", "check", "--config", str(path))
    assert result.returncode == 1
    assert "connectwise.private_key" in result.stdout and "chmod 600" in result.stdout
    assert cwfx.API_PRIVATE_KEY not in result.stdout + result.stderr


def test_check_refuses_an_invalid_file_naming_key_and_fix(tmp_path: Path) -> None:
    path = rehearsal_config(tmp_path)
    path.write_text(path.read_text().replace("[store]", "[store]\ncolour = 'blue'"))
    result = socbridge("config", "check", "--config", str(path))
    assert result.returncode == 2
    assert "store.colour" in result.stderr and "unknown key" in result.stderr
    as_json = socbridge("config", "check", "--config", str(path), "--json")
    assert as_json.returncode == 2 and json.loads(as_json.stdout)["valid"] is False


def test_reference_command_prints_the_reference_from_the_installed_entry_point() -> None:
    result = subprocess.run(
        [str(Path(sys.executable).parent / "socbridge"), "config", "reference"],
        capture_output=True, text=True, timeout=60, cwd=REPO,
    )  # fmt: skip
    assert result.returncode == 0 and result.stdout == render()


def test_check_loads_the_tls_files_as_run_would(tmp_path: Path) -> None:
    tls = write_rehearsal_tls(tmp_path / "tls", "127.0.0.1")
    path = tmp_path / "socbridge.toml"
    write_config(path, "http://127.0.0.1:1", "http://127.0.0.1:2", "127.0.0.1", 3, 5.0, tls)
    good = socbridge("config", "check", "--config", str(path), "--json")
    assert good.returncode == 0, good.stdout
    assert json.loads(good.stdout)["tls_files"] == "ok"
    # A key that is not the certificate's: the pair cannot be served.
    other = write_rehearsal_tls(tmp_path / "other", "127.0.0.1")
    tls.key.write_bytes(other.key.read_bytes())
    mismatched = socbridge("config", "check", "--config", str(path))
    assert mismatched.returncode == 1
    assert "tls      problem" in mismatched.stdout
    assert "server.tls_key" in mismatched.stdout and "key matches" in mismatched.stdout
    tls.cert.unlink()
    missing = socbridge("config", "check", "--config", str(path), "--json")
    assert missing.returncode == 1
    assert any(str(tls.cert) in p for p in json.loads(missing.stdout)["problems"])
