"""`Outcome`: how one attempt of an event-backed task ended, as the engine records it.

The work returns it inside the engine's transaction (worker.execution); the engine writes the
event's next state from it in that same transaction and, only once that has committed,
publishes `publish`: the task messages of events the work inserted (a new message's
classify-message run, a sync's classify chain). A rollback (a lost claim, an error) publishes
nothing, since the rows those messages name were never committed.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from database.models import Account
    from services.events.unit_of_work import Job


# The Outcome status of one part of a job cut into bounded parts (bulk work: a sync that spent
# its POSTROOM_BULK_PART_S / _MESSAGES). Not an event status: the event stays `processing`,
# handed to the next part's task id (lifecycle.continue_with), which the engine publishes.
CONTINUED = "continued"


@dataclass
class Outcome:
    """How an event ended: `succeeded` with a result, or `ignored` with the reason."""

    status: str
    result: dict[str, Any] = field(default_factory=dict)
    reason: str | None = None
    tenant_id: uuid.UUID | None = None
    account_id: uuid.UUID | None = None
    # Ids of messages created or changed, for the classify chain.
    message_ids: list[uuid.UUID] = field(default_factory=list)
    # Task messages for events inserted by the work: published after the engine's commit.
    publish: list[Job] = field(default_factory=list)

    @classmethod
    def ignored(cls, reason: str, account: Account | None = None) -> Outcome:
        return cls(
            status="ignored",
            reason=reason,
            result={"status": "ignored", "reason": reason},
            tenant_id=account.tenant_id if account else None,
            account_id=account.id if account else None,
        )

    @classmethod
    def stored(cls, message_id: uuid.UUID, inserted: bool, account: Account) -> Outcome:
        """A message stored from a notification: new, or an update of the row we had."""
        return cls(
            status="succeeded",
            result={
                "status": "success",
                "message_id": str(message_id),
                "action": "created" if inserted else "updated",
            },
            tenant_id=account.tenant_id,
            account_id=account.id,
            message_ids=[message_id],
        )
