"""Reconciliation polling: what webhooks missed is caught, the cursor is durable,
and nothing is written twice whichever path saw a change first."""

from __future__ import annotations

from datetime import UTC, datetime

from daemon.connectors.soc import install
from daemon.connectors.soc.client import SocClient
from daemon.connectors.soc.poller import WATERMARK_STREAM, SocPoller
from daemon.connectors.soc.settings import SocSettings
from daemon.service.secrets import Secret, load_secret
from daemon.simulators.soc import SocSimulator
from eventstore import EventStore
from projections import kinds
from tests.support.soc import TENANTS


def poller(store: EventStore, client: SocClient, settings: SocSettings) -> SocPoller:
    return SocPoller(store, client, settings, TENANTS, lambda: datetime.now(UTC))


async def test_poll_catches_dropped_webhooks(
    sim: SocSimulator, client: SocClient, settings: SocSettings, store: EventStore, daemon: str
) -> None:
    await install.install(client, settings)
    sim.faults.update({"webhook_drop_next": 3})
    t = await client.create_ticket(subject="Lost", body="first", organization_id=9001)
    await client.set_status(t["id"], "open")
    await client.add_comment(t["id"], "analyst reply")
    await sim.dispatcher.drain()
    assert [d.outcome for d in sim.dispatcher.deliveries] == ["dropped"] * 3
    assert await store.read_stream(f"soc:ticket:{t['id']}") == []

    report = await poller(store, client, settings).poll_once()
    assert (report.tickets_recorded, report.notes_recorded) == (1, 2)
    events = await store.read_stream(f"soc:ticket:{t['id']}")
    assert [e.type for e in events] == [
        "soc.ticket.observed", "soc.comment.observed", "soc.comment.observed",
    ]  # fmt: skip
    assert events[0].data["status"] == "open" and events[0].data["via"] == "poll"
    assert [e.data["body"] for e in events[1:]] == ["first", "analyst reply"]
    assert {e.tenant for e in events} == {"acme"}


async def test_cursor_is_durable_and_a_repeat_poll_writes_nothing(
    sim: SocSimulator, client: SocClient, settings: SocSettings, store: EventStore
) -> None:
    t = await client.create_ticket(subject="A", body="a", organization_id=9001)
    first = await poller(store, client, settings).poll_once()
    assert first.tickets_recorded == 1
    marks = await store.read_stream(WATERMARK_STREAM)
    assert [m.type for m in marks] == [kinds.WATERMARK_ADVANCED]
    assert marks[-1].data["cursor"] == first.watermark
    before = await store.last_position()

    # A new poller (as after a restart) resumes from the stored cursor.
    again = await poller(store, client, settings).poll_once()
    assert (again.pages, again.seen) == (1, 0)
    assert await store.last_position() == before

    await client.set_priority(t["id"], "urgent")
    later = await poller(store, client, settings).poll_once()
    assert (later.seen, later.tickets_recorded, later.notes_recorded) == (1, 1, 0)
    events = await store.read_stream(f"soc:ticket:{t['id']}")
    assert [e.data.get("priority") for e in events if e.type == "soc.ticket.observed"] == [
        None, "urgent",
    ]  # fmt: skip
    assert len(await store.read_stream(WATERMARK_STREAM)) == 2


async def test_first_poll_starts_from_the_lookback_not_the_beginning(
    sim: SocSimulator, client: SocClient, settings: SocSettings, store: EventStore
) -> None:
    old = await client.create_ticket(subject="Old", body="o", organization_id=9001)
    sim.state.tickets[old["id"]].changed_at = datetime(2020, 1, 1, tzinfo=UTC)
    new = await client.create_ticket(subject="New", body="n", organization_id=9001)
    report = await poller(store, client, settings).poll_once()
    assert report.seen == 1
    assert await store.read_stream(f"soc:ticket:{old['id']}") == []
    assert len(await store.read_stream(f"soc:ticket:{new['id']}")) == 2


async def test_tickets_of_other_organizations_are_skipped(
    sim: SocSimulator, client: SocClient, settings: SocSettings, store: EventStore
) -> None:
    await client.create_ticket(subject="Initech", body="x", organization_id=9003)
    report = await poller(store, client, settings).poll_once()
    assert (report.seen, report.ignored, report.tickets_recorded) == (1, 1, 0)
    assert [e.stream for e in await store.read_batch(0, 100)] == [WATERMARK_STREAM]


async def test_comment_seen_by_webhook_and_poll_is_observed_once(
    sim: SocSimulator, client: SocClient, settings: SocSettings, store: EventStore, daemon: str
) -> None:
    await install.install(client, settings)
    t = await client.create_ticket(subject="Both", body="desc", organization_id=9002)
    await client.add_comment(t["id"], "seen twice")
    await sim.dispatcher.drain()
    await poller(store, client, settings).poll_once()
    comments = [
        e
        for e in await store.read_stream(f"soc:ticket:{t['id']}")
        if e.type == "soc.comment.observed"
    ]
    # The description (first comment) only via poll; the reply once, via the webhook.
    assert [(e.data["body"], e.data["via"]) for e in comments] == [
        ("seen twice", "webhook"), ("desc", "poll"),
    ]  # fmt: skip
    assert isinstance(load_secret(settings.webhook.signing_secret), Secret)


async def test_poll_survives_a_rate_limited_desk(
    sim: SocSimulator, client: SocClient, settings: SocSettings, store: EventStore
) -> None:
    await client.create_ticket(subject="RL", body="x", organization_id=9001)
    sim.faults.update({"rate_limit_next": 3, "retry_after": 0})
    report = await poller(store, client, settings).poll_once()
    assert report.tickets_recorded == 1 and sim.faults.api_faults_injected == 3
