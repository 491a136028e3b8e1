"""Storing Nylas Message objects, n at a time with set-based statements (n = 1 included).

One folder upsert, one thread insert, one multi-row message upsert per key set and one
attachment replace, whatever n is: a webhook's message (store_message), a batch of them
(services.nylas.batch), a sync page's message and a Nylas send's copy all store through here,
and in the same transaction tell the tenant (`message.created` / `.updated`, one read and one
INSERT per kind) and record the new delivery reports (services.reports.ingest).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from database.models import Account
from database.repositories.messages import rows as messages_repo
from database.repositories.messages import threads as threads_repo
from services.nylas.values import attachment_values, folder_role, message_values
from services.reports.ingest import record_stored, wants_recording
from services.tenant_events.emit import emit_stored


@dataclass
class Incoming:
    """A Nylas Message object as message columns and attachment rows (CPU only)."""

    values: dict[str, Any]
    attachments: list[dict[str, Any]]


def incoming(obj: dict[str, Any], *, account: Account, version: int | None) -> Incoming:
    return Incoming(message_values(obj, account=account, version=version), attachment_values(obj))


async def store_messages(
    session: AsyncSession,
    *,
    account: Account,
    messages: list[Incoming],
    before: dict[uuid.UUID, dict[str, Any]] | None = None,
) -> list[tuple[uuid.UUID, bool] | None]:
    """Upsert the messages with their folders, threads and attachment metadata: per message,
    (id, inserted), or None when it is deleted here or a newer state is stored.

    Tells the tenant what was stored (emit_stored; with `before`, a sync's snapshot, an update
    that changed nothing listed tells nothing) and records the newly stored delivery reports
    and unsubscribe mails (record_stored)."""
    names = sorted({n for m in messages for n in m.values["labels"]})
    folder_ids = await messages_repo.ensure_folders(
        session,
        tenant_id=account.tenant_id,
        account_id=account.id,
        folders=[{"name": n, "provider_id": n, "role": folder_role(n)} for n in names],
    )
    for m in messages:
        if m.values["labels"]:
            m.values["folder_id"] = folder_ids[m.values["labels"][0]]
    threads = await threads_repo.provider_threads(session, [m.values for m in messages])
    for m, thread in zip(messages, threads, strict=True):
        m.values["thread_id"] = thread
    # upsert_many wants one key set per call (a key left out is a column an update keeps);
    # rows in provider id order, so two transactions lock shared rows in the same order.
    saved: dict[str, tuple[uuid.UUID, bool]] = {}
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for m in messages:
        groups.setdefault(tuple(sorted(m.values)), []).append(m.values)
    for rows in groups.values():
        saved.update(
            await messages_repo.upsert_many(session, sorted(rows, key=lambda r: r["provider_id"]))
        )
    stored = [(m, saved[p]) for m in messages if (p := m.values["provider_id"]) in saved]
    if stored:
        await messages_repo.replace_attachments(
            session,
            tenant_id=account.tenant_id,
            message_ids=[mid for _, (mid, _) in stored],
            rows=[{**a, "message_id": mid} for m, (mid, _) in stored for a in m.attachments],
        )
        await emit_stored(
            session, tenant_id=account.tenant_id, stored=[s for _, s in stored], before=before
        )
        reports = [(mid, m.values) for m, (mid, new) in stored if new and wants_recording(m.values)]
        if reports:
            await record_stored(session, tenant_id=account.tenant_id, stored=reports)
    return [saved.get(m.values["provider_id"]) for m in messages]
