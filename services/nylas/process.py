"""What `postroom.events.process` does with one claimed Nylas notification.

A `message.created` that came with its body goes with its grant's other waiting ones in a
batch (services.nylas.batch). Otherwise: a truncated message is fetched from Nylas before the
engine's transaction is first used; waiting `message.updated` siblings are coalesced
(services.nylas.coalesce); the notification is applied (services.nylas.notifications); and a
new message's classify-message run is done inline when every matching rule is local
(services.classify.inline), or started through the step tasks, published after the commit.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from database.models import Account, Event
from services import metrics
from services.classify.inline import classify_and_apply
from services.deps import Deps
from services.events.outcome import Outcome
from services.events.workflows import start_message_chains
from services.nylas import coalesce
from services.nylas.batch import batchable, process_batch
from services.nylas.notifications import fetch_truncated, process_notification


async def process_event(
    session: AsyncSession, event: Event, *, rt: Deps, task_id: str
) -> tuple[Outcome, list[str]]:
    """Apply one claimed notification in the engine's transaction `session`: (its outcome,
    the task ids of the messages of other events done in its batch, to revoke after the
    commit). The chains of new messages that need the step tasks go in Outcome.publish."""
    if batchable(event):  # with the grant's other waiting message.created (services.nylas.batch)
        done = await process_batch(
            session, leader=event, task_id=task_id, settings=rt.settings, db=rt.db
        )
        if done is not None:
            outcome, jobs, batched = done
            outcome.publish = jobs  # after the engine's commit, never after a rollback
            return outcome, batched
    # A truncated message is fetched from Nylas before `session` is first used, so no
    # transaction is open while Nylas answers; everything else commits with the event.
    fetched = await fetch_truncated(rt.db, event=event, nylas=rt.nylas)
    # Waiting message.updated siblings: apply the newest state once, for all of them.
    group = await coalesce.take_group(rt.db, event, lease_s=rt.settings.claim_lease_s)
    applied = group.applied
    if fetched is None and applied.id != event.id:
        # Rare: a newer sibling left its body out where this one did not. Fetched by the
        # message's id, Nylas answers its current state, newer than every sibling; the
        # siblings are absorbed (no lock held), and `session` is still unused here.
        fetched = await fetch_truncated(rt.db, event=applied, nylas=rt.nylas)
    try:
        outcome = await process_notification(
            session, event=applied, nylas_configured=rt.nylas is not None, fetched=fetched
        )
    finally:  # the tenant is known even when the work fails (its dead letter is theirs)
        event.tenant_id = applied.tenant_id or event.tenant_id
        event.account_id = applied.account_id or event.account_id
    await coalesce.finish_group(
        session, group, event=event, tenant_id=outcome.tenant_id, account_id=outcome.account_id
    )
    outcome.result = coalesce.annotate(outcome.result, group)
    if group.coalesced:
        metrics.EVENTS_COALESCED.inc(len(group.coalesced))
    # A new message gets classify -> apply_rules, committed with it. Not an update: a user
    # who moved a message out of Junk must not see a rule move it straight back.
    new = outcome.message_ids if outcome.result.get("action") == "created" else []
    if new and outcome.tenant_id is not None and outcome.account_id is not None:
        # Classified and ruled in this transaction when every matching rule is local
        # (services.classify.inline): one task a message instead of three. The rest start the
        # classify-message run through the step tasks, as before.
        account = await session.get(Account, outcome.account_id)
        if account is not None and account.tenant_id == outcome.tenant_id:
            new = [
                m
                for m in new
                if not await classify_and_apply(
                    session, parent=event, account=account, message_id=m
                )
            ]
    outcome.publish = await start_message_chains(
        session,
        parent=event,
        tenant_id=outcome.tenant_id,
        account_id=outcome.account_id,
        message_ids=new,
        stale_after_s=rt.settings.outbox_stale_after_s,
    )
    return outcome, []
