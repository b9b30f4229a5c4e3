"""Webhook installation on the SOC desk: install, remove, status.

``install`` is idempotent: it finds socbridge's webhook by its configured name,
creates it if missing, or brings its endpoint, subscriptions and status back to
what socbridge needs; then it fetches the webhook's signing secret
(../shared/reference/zendesk/NOTES.md §3.1, cited below as NOTES §x) and stores
it in the configured secret file (mode 0600, written atomically), where the
intake reads it. ``remove`` deletes the webhook(s) of that name and the secret
file; the event log is untouched (R16). ``status`` reports whether the webhook
exists, matches, and whether the stored secret is the desk's current one,
without printing it.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from daemon.connectors.soc.client import SocClient
from daemon.connectors.soc.errors import SocInstallError
from daemon.connectors.soc.settings import SocSettings
from daemon.service.secrets import Secret, SecretError, load_secret

# The ticket events socbridge turns into observations (NOTES §3.3).
SUBSCRIPTIONS = (
    "zen:event-type:ticket.created",
    "zen:event-type:ticket.status_changed",
    "zen:event-type:ticket.priority_changed",
    "zen:event-type:ticket.comment_added",
    "zen:event-type:ticket.subject_changed",
    "zen:event-type:ticket.external_id_changed",
    "zen:event-type:ticket.organization_changed",
)


@dataclass
class WebhookStatus:
    """What ``status`` (and ``install``) found or did."""

    installed: bool
    webhook_id: str | None = None
    endpoint: str | None = None
    active: bool = False
    subscriptions_ok: bool = False
    endpoint_ok: bool = False
    secret_stored: bool = False
    secret_matches: bool = False
    action: str = "none"  # created | updated | unchanged | removed | none
    problems: list[str] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return (
            self.installed
            and self.active
            and self.subscriptions_ok
            and self.endpoint_ok
            and self.secret_matches
        )


def desired_spec(settings: SocSettings) -> dict[str, Any]:
    return {
        "name": settings.webhook.name,
        "description": "socbridge: SOC ticket events for ConnectWise sync",
        "endpoint": settings.webhook.public_url,
        "http_method": "POST",
        "request_format": "json",
        "status": "active",
        "subscriptions": list(SUBSCRIPTIONS),
    }


async def _find(client: SocClient, name: str) -> list[dict[str, Any]]:
    return [h for h in await client.list_webhooks() if h.get("name") == name]


def _matches(hook: dict[str, Any], spec: dict[str, Any]) -> tuple[bool, bool, bool]:
    endpoint_ok = hook.get("endpoint") == spec["endpoint"]
    subs_ok = set(hook.get("subscriptions") or []) >= set(spec["subscriptions"])
    active = hook.get("status") == "active"
    return endpoint_ok, subs_ok, active


def write_secret_file(path: Path, secret: Secret) -> None:
    """Write ``secret`` to ``path`` with mode 0600, atomically (temp file + rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".socbridge-secret-", dir=path.parent)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(secret.reveal() + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def delete_secret_file(path: Path) -> None:
    """Remove the stored signing secret (nothing to do when it is absent)."""
    path.unlink(missing_ok=True)


async def install(client: SocClient, settings: SocSettings) -> WebhookStatus:
    """Create or repair socbridge's webhook and store its signing secret."""
    spec = desired_spec(settings)
    found = await _find(client, settings.webhook.name)
    if len(found) > 1:
        # Left-overs from a half-finished earlier install: keep one.
        for extra in found[1:]:
            await client.delete_webhook(str(extra["id"]))
    if not found:
        hook = await client.create_webhook(spec)
        action = "created"
    else:
        hook = found[0]
        if all(_matches(hook, spec)):
            action = "unchanged"
        else:
            await client.update_webhook(str(hook["id"]), spec)
            hook = await client.get_webhook(str(hook["id"]))
            action = "updated"
    secret = await client.signing_secret(str(hook["id"]))
    path = Path(settings.webhook.signing_secret)
    try:
        write_secret_file(path, secret)
    except OSError as exc:
        raise SocInstallError(
            f"webhook {hook['id']} is installed but its signing secret could not be written "
            f"to {path} ({type(exc).__name__}); fix the path or permissions and run install again"
        ) from None
    result = await status(client, settings)
    result.action = action
    return result


async def remove(client: SocClient, settings: SocSettings) -> WebhookStatus:
    """Delete socbridge's webhook(s) and the stored secret; idempotent."""
    found = await _find(client, settings.webhook.name)
    for hook in found:
        await client.delete_webhook(str(hook["id"]))
    delete_secret_file(Path(settings.webhook.signing_secret))
    return WebhookStatus(installed=False, action="removed" if found else "none")


async def status(client: SocClient, settings: SocSettings) -> WebhookStatus:
    """Whether the webhook exists and matches, and whether the stored secret is current."""
    spec = desired_spec(settings)
    found = await _find(client, settings.webhook.name)
    if not found:
        return WebhookStatus(installed=False, problems=["webhook is not installed"])
    hook = found[0]
    endpoint_ok, subs_ok, active = _matches(hook, spec)
    result = WebhookStatus(
        installed=True,
        webhook_id=str(hook["id"]),
        endpoint=hook.get("endpoint"),
        active=active,
        subscriptions_ok=subs_ok,
        endpoint_ok=endpoint_ok,
    )
    if len(found) > 1:
        result.problems.append(f"{len(found)} webhooks are named {settings.webhook.name!r}")
    if not endpoint_ok:
        result.problems.append(f"endpoint is {hook.get('endpoint')}, not {spec['endpoint']}")
    if not subs_ok:
        result.problems.append("subscriptions lack some ticket events socbridge needs")
    if not active:
        result.problems.append("webhook is not active")
    try:
        stored = load_secret(settings.webhook.signing_secret)
        result.secret_stored = True
    except SecretError as exc:
        result.problems.append(f"signing secret: {exc}")
        return result
    result.secret_matches = stored == await client.signing_secret(str(hook["id"]))
    if not result.secret_matches:
        result.problems.append("stored signing secret is not the webhook's current one")
    return result
