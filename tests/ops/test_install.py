"""The README's service install, played as written (issue 16, section 7).

The steps between ``<!-- install:begin -->`` and ``<!-- install:end -->`` in the
README are read, not copied: every ``sh`` block is played command by command
into a scratch root (a ``DESTDIR``: ``/etc``, ``/opt``, ``/var`` and ``/run``
are moved under it), as root, with ``systemd-sysusers`` and
``systemd-tmpfiles`` run with ``--root``. Then ``socbridge config check`` and
``socbridge validate`` run against the ConnectWise simulator:

- as root, as the README's own lines run them (``credential:NAME`` from the
  credential store, since ``$CREDENTIALS_DIRECTORY`` is unset);
- as the service user (``setpriv --reuid``), with the credentials the
  installed unit's ``LoadCredential=`` lines name, delivered as systemd does;
- as the service user without them, to see the one-line error;
- with the README's reverse-proxy ``[server]`` (no TLS files at all).

A command the README gains that this test does not know how to play fails it,
so the documented steps and the test cannot drift apart.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import shutil
import stat
import sys
import tempfile
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon.service.secrets import CREDENTIAL_STORE
from daemon.simulators.connectwise import SimServer
from daemon.simulators.connectwise import fixture as cwfx
from daemon.simulators.soc import fixture as socfx
from tests.support.paths import REPO

README = REPO / "README.md"
BEGIN, END = "<!-- install:begin -->", "<!-- install:end -->"
#: Absolute paths the steps write to, moved under the scratch root.
MOVED = ("/etc/", "/opt/", "/var/", "/run/", "/usr/local/")
#: The values an engineer pastes for each credential the README installs (from the simulators).
SECRETS = {
    "cw_public_key": cwfx.API_PUBLIC_KEY,
    "cw_private_key": cwfx.API_PRIVATE_KEY,
    "soc_api_token": socfx.API_TOKEN,
}
TOOLS = ("systemd-sysusers", "systemd-tmpfiles", "setpriv")
#: The folders of a Debian 12 host with systemd that the steps write into (/etc/sysusers.d is
#: not one of them: the steps must create it).
DEBIAN = ("etc/systemd/system", "etc/tmpfiles.d", "opt", "var/lib", "run")

pytestmark = [
    pytest.mark.slow,  # about 12 s: seven socbridge processes
    pytest.mark.skipif(
        os.geteuid() != 0 or any(shutil.which(t) is None for t in TOOLS),
        reason="plays the install as root with systemd-sysusers, systemd-tmpfiles and setpriv "
        "(apt-get install systemd util-linux); CI runs as root with them",
    ),
]


def install_section() -> str:
    text = README.read_text(encoding="utf-8")
    assert text.count(BEGIN) == 1 and text.count(END) == 1, "README: one pair of install markers"
    return text[text.index(BEGIN) + len(BEGIN) : text.index(END)]


def code_blocks(section: str, lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", section, flags=re.M | re.S)


def commands(block: str) -> list[list[str]]:
    joined = re.sub(r"\\\n\s*", " ", block)
    return [shlex.split(line) for line in joined.splitlines() if line.strip()]


class Root:
    """The scratch root the steps are played into."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def moved(self, arg: str) -> str:
        return str(self.path) + arg if arg.startswith(MOVED) else arg

    def ids(self, database: str, name: str) -> tuple[int, int]:
        """(uid or gid, primary gid) of ``name`` in the root's passwd or group file."""
        for line in (self.path / "etc" / database).read_text().splitlines():
            fields = line.split(":")
            if fields[0] == name:
                return int(fields[2]), int(fields[3] if database == "passwd" else fields[2])
        raise AssertionError(f"{name} is not in the scratch root's /etc/{database}")


@pytest.fixture
def root() -> Iterator[Root]:
    # Not under pytest's tmp_path: the service user must be able to reach the files.
    path = Path(tempfile.mkdtemp(prefix="socbridge-install-"))
    path.chmod(0o755)
    for folder in DEBIAN:
        (path / folder).mkdir(parents=True, exist_ok=True)
    try:
        yield Root(path)
    finally:
        shutil.rmtree(path, ignore_errors=True)


async def run(
    argv: list[str], env: dict[str, str] | None = None, stdin: bytes | None = None
) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *argv,
        cwd=REPO,
        env=env if env is not None else dict(os.environ),
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(stdin), 90)
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace")


def write_certificate(folder: Path, host: str) -> None:
    """What ``certbot certonly`` leaves in /etc/letsencrypt/live/HOST (from a throwaway CA)."""
    import trustme

    folder.mkdir(parents=True, exist_ok=True)
    issued = trustme.CA().issue_cert(host)
    (folder / "fullchain.pem").write_bytes(b"".join(b.bytes() for b in issued.cert_chain_pems))
    issued.private_key_pem.write_to_path(str(folder / "privkey.pem"))


def set_keys(text: str, section: str, values: dict[str, object], drop: tuple[str, ...] = ()) -> str:
    """``text`` with ``values`` set (and ``drop`` deleted) in ``[section]``, as an editor would."""
    lines, current, seen = [], "", set()
    for line in text.splitlines():
        header = re.match(r"^\[+([^\]]+)\]+\s*$", line)
        if header:
            if current == section:
                lines += [f"{k} = {json.dumps(v)}" for k, v in values.items() if k not in seen]
            current = header.group(1)
        key = re.match(r"^(\w+)\s*=", line)
        if current == section and key and key.group(1) in drop:
            continue
        if current == section and key and key.group(1) in values:
            seen.add(key.group(1))
            line = f"{key.group(1)} = {json.dumps(values[key.group(1)])}"
        lines.append(line)
    return "\n".join(lines) + "\n"


def edit_config(path: Path, root: Root, cw_url: str) -> None:
    """``sudoedit``: point the example at the simulators; paths move under the scratch root.

    Written in place, so the file keeps the mode and owner the README installed it with."""
    text = re.sub(
        r'"(/(?:etc|var|run|opt)/[^"]*)"', lambda m: f'"{root.moved(m[1])}"', path.read_text()
    )
    text = set_keys(
        text,
        "connectwise",
        {
            "site_url": cw_url,
            "company_id": cwfx.LOGIN_COMPANY,
            "client_id": cwfx.CLIENT_ID,
            "api_member": cwfx.API_MEMBER,
        },
    )
    text = set_keys(text, "soc", {"url": "http://127.0.0.1:9", "email": socfx.API_EMAIL})
    with path.open("w") as f:
        f.write(text)


async def play(argv: list[str], root: Root, cw_url: str, admin_env: dict[str, str]) -> str:
    """Play one README command into the scratch root; what was done, for the failure message."""
    shown = shlex.join(argv)
    if argv[0] == "sudo":
        argv = argv[1:]  # the test runs as root
    tool = Path(argv[0]).name
    if tool == "apt-get":
        return f"skipped (packages of this host): {shown}"
    if argv[:3] == ["python3", "-m", "venv"]:
        # The venv is this checkout's (make install put socbridge in it): linked, not rebuilt.
        venv = Path(root.moved(argv[3]))
        venv.parent.mkdir(parents=True, exist_ok=True)
        venv.symlink_to(sys.prefix, target_is_directory=True)
        return f"linked {venv} to {sys.prefix}: {shown}"
    if tool == "pip" and argv[1:] == ["install", "."]:
        return f"skipped (this checkout is installed in the venv): {shown}"
    if tool == "sudoedit":
        edit_config(Path(root.moved(argv[1])), root, cw_url)
        return f"edited for the simulators: {shown}"
    if tool == "systemctl":
        return f"skipped (no service manager in a scratch root): {shown}"
    args = [root.moved(a) for a in argv]
    stdin = None
    if tool == "install":
        for flag, database in (("-o", "passwd"), ("-g", "group")):
            if flag in args and args[args.index(flag) + 1] != "root":
                i = args.index(flag) + 1
                args[i] = str(root.ids(database, args[i])[0])
        if "/dev/stdin" in args:
            stdin = (SECRETS[Path(args[-1]).name] + "\n").encode()
        source = Path(args[-2])
        if "letsencrypt/live" in str(source) and not source.exists():
            write_certificate(source.parent, source.parent.name)
    elif tool in ("systemd-sysusers", "systemd-tmpfiles"):
        if tool == "systemd-sysusers":
            code, out = await run([args[0], f"--root={root.path}", "--dry-run", *args[1:]])
            assert code == 0 and "Creating user 'socbridge'" in out, f"{shown} --dry-run: {out}"
        args.insert(1, f"--root={root.path}")
    elif tool == "socbridge":
        code, out = await run(args, admin_env)
        assert code == 0, f"{shown} (as root) exited {code}:\n{out}"
        return f"ran as root: {shown}"
    else:
        raise AssertionError(
            f"the README's install gained a command this test cannot play: {shown}"
        )
    code, out = await run(args, stdin=stdin)
    assert code == 0, f"{shlex.join(args)} exited {code}:\n{out}"
    return f"ran: {shlex.join(args)}"


def unit_directives(unit: str, key: str) -> list[str]:
    return re.findall(rf"^{key}=(.*)$", unit, flags=re.M)


def deliver_credentials(root: Root, unit: str, uid: int, gid: int) -> Path:
    """What systemd does with the unit's ``LoadCredential=ID:PATH`` lines at start:
    each file copied to /run/credentials/UNIT/ID, read-only, owned by the service user."""
    folder = Path(root.moved("/run/credentials/socbridge.service/"))
    folder.mkdir(parents=True)
    for line in unit_directives(unit, "LoadCredential"):
        name, source = line.split(":", 1)
        target = folder / name
        shutil.copyfile(root.moved(source), target)
        os.chown(target, uid, gid)
        target.chmod(0o400)
    os.chown(folder, uid, gid)
    folder.chmod(0o500)
    return folder


def service_env(root: Root, credentials: Path | None) -> dict[str, str]:
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": "/nonexistent"}
    env["SOCBRIDGE_CREDENTIAL_STORE"] = root.moved(f"{CREDENTIAL_STORE}/")
    if credentials is not None:
        env["CREDENTIALS_DIRECTORY"] = str(credentials)
    return env


async def test_the_readme_install_works_as_written(root: Root) -> None:
    section = install_section()
    admin_env = {k: v for k, v in os.environ.items() if k != "CREDENTIALS_DIRECTORY"}
    # The credential store the admin commands read, moved under the scratch root like the rest.
    admin_env["SOCBRIDGE_CREDENTIAL_STORE"] = root.moved(f"{CREDENTIAL_STORE}/")
    async with SimServer() as cw:
        played = [
            await play(argv, root, cw.url, admin_env)
            for block in code_blocks(section, "sh")
            for argv in commands(block)
        ]
        text = "\n".join(played)
        for step in ("systemd-sysusers", "systemd-tmpfiles", "socbridge.toml", "socbridge.service"):
            assert step in text, f"the README's install has no {step} step:\n{text}"

        # What the steps left: the config readable by the service group, secrets root only.
        uid, gid = root.ids("passwd", "socbridge")
        config = Path(root.moved("/etc/socbridge/socbridge.toml"))
        st = config.stat()
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, gid, 0o640)
        store = Path(root.moved(f"{CREDENTIAL_STORE}/"))
        assert stat.S_IMODE(store.stat().st_mode) == 0o700
        for name in SECRETS:
            assert stat.S_IMODE((store / name).stat().st_mode) == 0o600

        # The service as the unit runs it: its user, its group, its credentials.
        unit = Path(root.moved("/etc/systemd/system/socbridge.service")).read_text()
        assert unit_directives(unit, "User") == ["socbridge"] == unit_directives(unit, "Group")
        refs = set(re.findall(r'"credential:(\w+)"', config.read_text()))
        loaded = {line.split(":", 1)[0] for line in unit_directives(unit, "LoadCredential")}
        assert refs == loaded == set(SECRETS), "config, unit and README name the same secrets"
        state = Path(root.moved("/var/lib/socbridge/"))  # StateDirectory=socbridge
        state.mkdir(mode=0o700, parents=True)
        os.chown(state, uid, gid)
        credentials = deliver_credentials(root, unit, uid, gid)
        as_service = ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups"]
        socbridge = root.moved("/opt/socbridge/venv/bin/socbridge")
        code, out = await run([*as_service, sys.executable, "-c", "pass"], service_env(root, None))
        if code != 0:
            pytest.skip(f"the service user cannot run this checkout's Python {sys.executable}")

        check = [socbridge, "config", "check", "--config", str(config)]
        code, out = await run([*as_service, *check], service_env(root, credentials))
        assert code == 0, out
        assert "tls      ok" in out and "secret   connectwise.private_key: ok" in out, out
        code, out = await run(
            [*as_service, socbridge, "validate", "--config", str(config)],
            service_env(root, credentials),
        )
        assert code == 0 and "PASS" in out and "FAIL" not in out, out

        # Without systemd's credentials, the service user cannot read the store: one line says so.
        code, out = await run([*as_service, *check], service_env(root, None))
        assert code == 1, out
        assert "$CREDENTIALS_DIRECTORY is not set" in out and f"{store}/cw_private_key" in out
        assert "run the command as root (sudo)" in out
        for value in SECRETS.values():
            assert value not in out

        # Behind a reverse proxy: the README's [server], no TLS files, the same unit.
        [proxy] = code_blocks(section, "toml")
        server = tomllib.loads(proxy)["server"]
        behind = config.with_name("proxy.toml")
        shutil.copy2(config, behind)
        os.chown(behind, 0, gid)
        behind.write_text(set_keys(config.read_text(), "server", server, ("tls_cert", "tls_key")))
        code, out = await run(
            [*as_service, socbridge, "config", "check", "--config", str(behind)],
            service_env(root, credentials),
        )
        assert code == 0 and "plain HTTP" in out, out
