"""Self-signed TLS for rehearsals: a throwaway CA, a server certificate, and trust in it.

``socbridge sim all --tls`` makes the daemon it configures serve TLS like in
production (R13), with a certificate from a CA generated on the spot by
``trustme`` (nothing is downloaded). :func:`write_rehearsal_tls` writes the CA
(``ca.pem``), the server certificate chain and its key (mode 0600) into a
folder and registers the CA with :func:`trust_ca`; the simulators' webhook and
callback senders open their sessions with :func:`client_session`, which
trusts the system CAs plus every CA registered in this process.
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass
from pathlib import Path

import aiohttp

_extra_cas: list[Path] = []


@dataclass(frozen=True)
class RehearsalTls:
    ca: Path
    cert: Path
    key: Path


def write_rehearsal_tls(folder: Path, host: str) -> RehearsalTls:
    """Generate a CA and a certificate for ``host`` (and localhost) into ``folder``."""
    import trustme  # only rehearsals need it

    folder.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    issued = ca.issue_cert(host, "localhost", "127.0.0.1", "::1")
    paths = RehearsalTls(folder / "ca.pem", folder / "server.pem", folder / "server.key")
    ca.cert_pem.write_to_path(str(paths.ca))
    issued.private_key_pem.write_to_path(str(paths.key))
    os.chmod(paths.key, 0o600)
    with paths.cert.open("wb") as out:
        for blob in issued.cert_chain_pems:
            out.write(blob.bytes())
    trust_ca(paths.ca)
    return paths


def trust_ca(ca: Path) -> None:
    """Trust ``ca`` in every session :func:`client_session` opens from now on."""
    if ca not in _extra_cas:
        _extra_cas.append(ca)


def client_session() -> aiohttp.ClientSession:
    """An aiohttp session that verifies servers against system CAs + registered ones."""
    if not _extra_cas:
        return aiohttp.ClientSession()
    ctx = ssl.create_default_context()
    for ca in _extra_cas:
        ctx.load_verify_locations(cafile=ca)
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx))
