"""Messages for the API: listing with signed cursors, detail, attachment bytes, and the
send/delete/classify jobs (validated and authorised here; the work runs on the workers)."""

from __future__ import annotations

import base64
import binascii
import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from api.deps import UnitOfWork
from database.repositories import messages_query as repo
from database.repositories import outbound_attachments, outbound_drafts
from services import cursors, jobs
from services.accounts import get_account
from services.errors import NotFound, ValidationFailed
from settings import Settings


def _scope(f: repo.MessageFilter) -> dict[str, Any]:
    return {
        "kind": "messages",
        "tenant": str(f.tenant_id),
        "account": str(f.account_id or ""),
        "folder": f.folder,
        "is_spam": f.is_spam,
        "unread": f.unread,
        "q": f.q,
        # Only when set: cursors of queries without it stay valid.
        **({"thread": str(f.thread_id)} if f.thread_id else {}),
    }


async def list_messages(
    session: AsyncSession,
    *,
    settings: Settings,
    f: repo.MessageFilter,
    limit: int,
    cursor: str | None,
) -> tuple[list[sa.RowMapping], str | None]:
    """One page newest first and the cursor of the next one (None on the last page)."""
    key = cursors.signing_key(settings)
    after = cursors.decode(key, _scope(f), cursor) if cursor else None
    if f.account_id is not None:
        await get_account(session, f.tenant_id, f.account_id)
    rows = await repo.list_page(session, f, after=after, limit=limit + 1)
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = cursors.encode(key, _scope(f), rows[-1]["sort_at"], rows[-1]["id"])
    return rows, next_cursor


async def get_message(
    session: AsyncSession, tenant_id: uuid.UUID, message_id: uuid.UUID
) -> tuple[sa.RowMapping, list[sa.RowMapping]]:
    row = await repo.get_detail(session, tenant_id, message_id)
    if row is None:
        raise NotFound("No such message.")
    return row, await repo.attachments_of(session, message_id)


async def get_attachment(
    session: AsyncSession, tenant_id: uuid.UUID, message_id: uuid.UUID, attachment_id: uuid.UUID
) -> sa.RowMapping:
    if await repo.get_detail(session, tenant_id, message_id) is None:
        raise NotFound("No such message.")
    found = await repo.attachment_content(session, tenant_id, message_id, attachment_id)
    if found is None or found["content"] is None:
        raise NotFound("No such attachment.")
    return found


async def _require_messages(
    session: AsyncSession, tenant_id: uuid.UUID, ids: list[uuid.UUID]
) -> list[tuple[uuid.UUID, uuid.UUID]]:
    found = await repo.live_ids(session, tenant_id, ids)
    if len({m for m, _ in found}) != len(set(ids)):
        raise NotFound("One or more messages do not exist.")
    return found


def _decode_files(attachments: list[dict[str, Any]]) -> list[dict[str, Any]]:
    files = []
    for i, a in enumerate(attachments):
        try:
            content = base64.b64decode(a["content_base64"], validate=True)
        except (binascii.Error, ValueError):
            raise ValidationFailed(
                f"attachments[{i}].content_base64 is not valid base64."
            ) from None
        files.append(
            {
                "id": uuid.uuid4(),
                "filename": a["filename"],
                "content_type": a["content_type"],
                "content": content,
            }
        )
    return files


async def queue_send(
    uow: UnitOfWork,
    *,
    settings: Settings,
    caller: jobs.Caller,
    body: dict[str, Any],
    idempotency_key: str | None,
) -> jobs.JobRef:
    """Validate and authorise a send, store its uploads, queue postroom.mail.send."""
    account_id = uuid.UUID(str(body["account_id"]))
    await get_account(uow.session, caller.tenant_id, account_id)
    reply_to = body.get("reply_to_message_id")
    if reply_to is not None:
        await _require_messages(uow.session, caller.tenant_id, [uuid.UUID(str(reply_to))])
    files = _decode_files(body.get("attachments") or [])
    job, created = await jobs.queue_job(
        uow,
        caller=caller,
        kind="message.send",
        task_name=jobs.SEND_TASK,
        # Ids only: the event row and the task message never hold the mail (docs/sending.md).
        task_kwargs={"account_id": str(account_id)},
        body=body,
        idempotency_key=idempotency_key,
        stale_after_s=settings.outbox_stale_after_s,
        account_id=account_id,
    )
    if created:
        await outbound_drafts.add(
            uow.session,
            tenant_id=caller.tenant_id,
            event_id=job.event_id,
            draft=outbound_drafts.values_from_request(body, [str(f["id"]) for f in files]),
        )
        await outbound_attachments.add_many(
            uow.session, tenant_id=caller.tenant_id, event_id=job.event_id, files=files
        )
    return job


async def queue_delete(
    uow: UnitOfWork,
    *,
    settings: Settings,
    caller: jobs.Caller,
    body: dict[str, Any],
    idempotency_key: str | None,
) -> jobs.JobRef:
    ids = [uuid.UUID(str(i)) for i in body["message_ids"]]
    found = await _require_messages(uow.session, caller.tenant_id, ids)
    accounts = {a for _, a in found}
    kwargs = {
        "message_ids": [str(i) for i in dict.fromkeys(ids)],
        "permanent": bool(body.get("permanent")),
    }
    job, _ = await jobs.queue_job(
        uow,
        caller=caller,
        kind="message.delete",
        task_name=jobs.DELETE_TASK,
        task_kwargs=kwargs,
        body=body,
        idempotency_key=idempotency_key,
        stale_after_s=settings.outbox_stale_after_s,
        account_id=next(iter(accounts)) if len(accounts) == 1 else None,
    )
    return job


async def queue_classify(
    uow: UnitOfWork,
    *,
    settings: Settings,
    caller: jobs.Caller,
    message_id: uuid.UUID,
    idempotency_key: str | None,
) -> jobs.JobRef:
    [(_, account_id)] = await _require_messages(uow.session, caller.tenant_id, [message_id])
    job, _ = await jobs.queue_job(
        uow,
        caller=caller,
        kind="message.classify",
        task_name=jobs.CLASSIFY_TASK,
        task_kwargs={"message_id": str(message_id)},
        body={"message_id": str(message_id)},
        idempotency_key=idempotency_key,
        stale_after_s=settings.outbox_stale_after_s,
        account_id=account_id,
    )
    return job
