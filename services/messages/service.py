"""Messages for the API: listing with signed cursors, detail, attachment bytes, and the
send/delete/classify jobs (validated and authorised here; the work runs on the workers)."""

from __future__ import annotations

import base64
import binascii
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from database.models import EventSource
from database.repositories.events import rows as events_repo
from database.repositories.messages import query as repo
from database.repositories.outbound import attachments as outbound_attachments
from database.repositories.outbound import drafts as outbound_drafts
from database.repositories.outbound import templates as templates_repo
from database.task_names import TaskName
from services import cursors
from services.accounts.admin import get_account
from services.accounts.quotas import ensure_storage_room
from services.errors import NotFound, ValidationFailed
from services.events import jobs
from services.events.unit_of_work import UnitOfWork
from services.outbound import template_pool
from services.outbound import templates as templates_svc
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


# API.md "Sending": `send_at` at most 30 days ahead. A time a little in the past (a client's
# clock, a slow request) sends now; one well in the past is more likely a mistake.
MAX_SCHEDULE_AHEAD = timedelta(days=30)
PAST_GRACE = timedelta(minutes=1)


def send_time(value: str | None, now: datetime) -> datetime | None:
    """When a send with this `send_at` is released: None for now, else the time (UTC)."""
    if value is None:
        return None
    try:
        at = datetime.fromisoformat(value).astimezone(UTC)
    except (ValueError, OverflowError):  # e.g. year 1 at +14:00 has no UTC equivalent
        raise ValidationFailed("send_at is not a time that can be used.") from None
    if at > now + MAX_SCHEDULE_AHEAD:
        raise ValidationFailed("send_at is more than 30 days ahead.")
    if at < now - PAST_GRACE:
        raise ValidationFailed("send_at is in the past; leave it out to send now.")
    return at if at > now else None


async def _render_template(
    uow: UnitOfWork, tenant_id: uuid.UUID, body: dict[str, Any]
) -> dict[str, Any]:
    """The request with the named template rendered into subject, text and html."""
    found = await templates_repo.get(uow.session, tenant_id=tenant_id, name=body["template"])
    if found is None:
        raise NotFound(f"No template named {body['template']!r}.")
    # In a worker process with hard limits: a hostile template never holds this event loop.
    parts = await template_pool.render(
        templates_svc.Parts(subject=found.subject, text=found.text, html=found.html),
        body.get("variables") or {},
    )
    return {**body, "subject": parts.subject, "text": parts.text, "html": parts.html}


async def _is_repeat(uow: UnitOfWork, tenant_id: uuid.UUID, key: str | None) -> bool:
    """Whether this Idempotency-Key already made a job (queue_job then answers with it)."""
    if key is None:
        return False
    found = await events_repo.id_by_external_id(uow.session, EventSource.api, f"{tenant_id}:{key}")
    return found is not None


async def queue_send(
    uow: UnitOfWork,
    *,
    settings: Settings,
    caller: jobs.Caller,
    body: dict[str, Any],
    idempotency_key: str | None,
    public_url: str | None = None,
) -> jobs.JobRef:
    """Validate and authorise a send, store its uploads, queue postroom.mail.send.

    A template is rendered here and the result stored in the draft: the task sends what the
    request was answered for, and a missing variable is 422 now. With `send_at` the event
    waits as `scheduled`. A repeated Idempotency-Key gets its first job back even when the
    time has passed or the template changed since.
    """
    account_id = uuid.UUID(str(body["account_id"]))
    await get_account(uow.session, caller.tenant_id, account_id)
    not_before = None
    mail = body
    if not await _is_repeat(uow, caller.tenant_id, idempotency_key):
        not_before = send_time(body.get("send_at"), datetime.now(UTC))
        if body.get("template") is not None:
            mail = await _render_template(uow, caller.tenant_id, body)
    reply_to = body.get("reply_to_message_id")
    if reply_to is not None:
        await _require_messages(uow.session, caller.tenant_id, [uuid.UUID(str(reply_to))])
    files = _decode_files(body.get("attachments") or [])
    job, created = await jobs.queue_job(
        uow,
        caller=caller,
        kind="message.send",
        task_name=TaskName.send,
        # Ids only: the event row and the task message never hold the mail (docs/sending.md).
        task_kwargs={"account_id": str(account_id)},
        body=body,
        idempotency_key=idempotency_key,
        stale_after_s=settings.outbox_stale_after_s,
        account_id=account_id,
        not_before=not_before,
    )
    if created:
        draft = outbound_drafts.values_from_request(
            mail, [str(f["id"]) for f in files], public_url=public_url
        )
        draft["size"] = draft_size(draft)
        await ensure_storage_room(
            uow.session,
            tenant_id=caller.tenant_id,
            adding=draft["size"] + sum(len(f["content"]) for f in files),
            quota=settings.tenant_storage_bytes,
        )
        await outbound_drafts.add(
            uow.session, tenant_id=caller.tenant_id, event_id=job.event_id, draft=draft
        )
        await outbound_attachments.add_many(
            uow.session, tenant_id=caller.tenant_id, event_id=job.event_id, files=files
        )
    return job


def draft_size(draft: dict[str, Any]) -> int:
    """The bytes a draft's text holds (what its row costs, give or take the overhead)."""
    text = (draft.get("subject") or "", draft.get("text") or "", draft.get("html") or "")
    addresses = (draft.get("to_addrs"), draft.get("cc_addrs"), draft.get("bcc_addrs"))
    return sum(len(t.encode("utf-8", "replace")) for t in text) + len(orjson.dumps(addresses))


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
        task_name=TaskName.delete,
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
        task_name=TaskName.classify,
        task_kwargs={"message_id": str(message_id)},
        body={"message_id": str(message_id)},
        idempotency_key=idempotency_key,
        stale_after_s=settings.outbox_stale_after_s,
        account_id=account_id,
    )
    return job
