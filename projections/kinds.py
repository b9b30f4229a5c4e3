"""The event vocabulary the projections fold: observation, decision and delivery types.

The names are plain strings so the log stays readable with any SQLite tool.
Observation types are written by the connectors' intake and pollers;
decision and command types by sync; outcome types by the outbox; admin
types by the operator commands.
"""

from __future__ import annotations

# Observed: what arrived from either side.
CW_TICKET_OBSERVED = "connectwise.ticket.observed"
CW_NOTE_OBSERVED = "connectwise.note.observed"
CW_TICKET_DELETED = "connectwise.ticket.deleted"
SOC_TICKET_OBSERVED = "soc.ticket.observed"
SOC_COMMENT_OBSERVED = "soc.comment.observed"
INTAKE_REJECTED = "intake.rejected"

OBSERVATIONS = frozenset(
    {
        CW_TICKET_OBSERVED,
        CW_NOTE_OBSERVED,
        CW_TICKET_DELETED,
        SOC_TICKET_OBSERVED,
        SOC_COMMENT_OBSERVED,
    }
)

# Decided: what sync concluded, each caused by the event it names.
LINK_REQUESTED = "sync.link.requested"
LINKED = "sync.tickets.linked"
UNLINKED = "sync.ticket.unlinked"
FIELD_DECIDED = "sync.field.decided"
NOTE_MIRROR_DECIDED = "sync.note.mirror.decided"
NOTE_SKIPPED = "sync.note.skipped"
ECHO_RECOGNISED = "sync.echo.recognised"
CONFLICT_RESOLVED = "sync.conflict.resolved"
OBSERVATION_IGNORED = "sync.observation.ignored"
REPAIR_DECIDED = "sync.repair.decided"

# Commands and their outcomes: what the outbox must do, and what happened.
COMMAND_ISSUED = "outbox.command.issued"
COMMAND_DELIVERED = "outbox.command.delivered"
COMMAND_FAILED = "outbox.command.failed"
COMMAND_ABANDONED = "outbox.command.abandoned"
#: A definitive refusal (validation, permission, not found): the command waits, and its
#: lane with it, until an operator retries (``admin.command.retried``) or skips it.
COMMAND_PARKED = "outbox.command.parked"
#: Never sent: a later pending command of its lane does all it would (a later write of the
#: same fields, a later read of the same ticket). Names that ``successor``.
COMMAND_SUPERSEDED = "outbox.command.superseded"

OUTCOMES = frozenset(
    {COMMAND_DELIVERED, COMMAND_FAILED, COMMAND_ABANDONED, COMMAND_PARKED, COMMAND_SUPERSEDED}
)

# Where a reconciliation poll of a desk stands (its watermark or cursor).
WATERMARK_ADVANCED = "poller.watermark.advanced"

# Admin facts.
CONFIG_APPLIED = "admin.config.applied"
TENANT_SYNC_ENABLED = "admin.tenant.sync_enabled"
TENANT_SYNC_DISABLED = "admin.tenant.sync_disabled"
INTEGRATION_REMOVED = "admin.integration.removed"
#: Parked commands sent again (``socbridge retry``, ``audit --fix``), or dropped (``skip``).
COMMAND_RETRIED = "admin.command.retried"
COMMAND_SKIPPED = "admin.command.skipped"
#: An operator asked (from the console) for both tickets of a link to be read again.
LINK_REREAD = "admin.link.reread"
#: ``socbridge run --accept-broken-chain`` started on a log that failed its check.
CHAIN_ACCEPTED = "admin.chain.accepted"
SYNC_TEST_STARTED = "admin.sync_test.started"
SYNC_TEST_STEP_PASSED = "admin.sync_test.step_passed"
SYNC_TEST_STEP_FAILED = "admin.sync_test.step_failed"
SYNC_TEST_FINISHED = "admin.sync_test.finished"

#: The source that marks events sync writes (decisions and commands).
SYNC_SOURCE = "socbridge.sync"
OUTBOX_SOURCE = "socbridge.outbox"
