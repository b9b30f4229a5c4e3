"""A tenant's sync switched on or off by an operator (R9): the one event both
``socbridge tenants enable|disable`` and the console append.

Appended with the stream's expected version, so two operators switching the same tenant at
once cannot both win: the second append is refused and nothing is written twice.
"""

from __future__ import annotations

from eventstore import EventStore, NewEvent
from projections import kinds


def switch_stream(tenant: str) -> str:
    return f"admin:tenant:{tenant}"


async def append_switch(
    store: EventStore,
    tenant: str,
    enable: bool,
    *,
    operator: str,
    reason: str | None,
    was: bool,
    was_set_by: str | None,
    source: str,
) -> None:
    """Append ``admin.tenant.sync_enabled`` (or ``sync_disabled``) for ``tenant``."""
    stream = switch_stream(tenant)
    last = await store.last_in_stream(stream)
    await store.append(
        [
            NewEvent(
                stream=stream,
                type=kinds.TENANT_SYNC_ENABLED if enable else kinds.TENANT_SYNC_DISABLED,
                tenant=tenant,
                source=source,
                data={
                    "tenant": tenant,
                    "operator": operator,
                    "reason": reason,
                    "was": was,
                    "was_set_by": was_set_by,
                },
            )
        ],
        expected_version=last.stream_version if last is not None else 0,
    )
