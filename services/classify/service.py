"""Classifying a stored message and learning from feedback: what tasks and routes call."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from database.models import Message
from database.repositories import classifier as repo
from database.task_names import TaskName
from services.classify import features, mail, tenant
from services.classify.model import (
    SpamModel,
    default_model,
    feature_groups,
    group_vector,
    indicator_logit,
    probability,
)
from services.errors import NotFound, PermissionDenied, ValidationFailed
from services.events.unit_of_work import Job
from services.tenant_events.emit import TenantEventType, emit_messages

LABELS = ("spam", "ham")


async def _load(session: AsyncSession, tenant_id: uuid.UUID, message_id: uuid.UUID) -> Message:
    message = await repo.get_message(session, tenant_id=tenant_id, message_id=message_id)
    if message is None:
        raise PermissionDenied(f"Message {message_id} was not found for this tenant.")
    return message


async def doc_for(session: AsyncSession, message: Message) -> mail.MailDoc:
    return mail.from_message(message, await repo.attachment_names(session, message.id))


def _verdict_of(
    found: features.Features, model: SpamModel, fitted: tenant.Fitted | None
) -> dict[str, Any]:
    groups = feature_groups(found, model.n_buckets)
    idx, values = group_vector(groups)
    base = model.vector_logit(idx, values) + indicator_logit(found.indicators)
    adjust = 0.0
    if fitted is not None:
        if fitted.nb is not None:  # the content buckets only when a naive Bayes counts them
            groups = [*groups, tenant.content_buckets(found, model.n_buckets)]
        adjust = fitted.adjustment(base, groups)
    score = probability(base + adjust)
    return {
        "status": "success",
        "is_spam": score >= model.threshold,
        "spam_score": round(score, 4),
        "indicators": found.indicators,
        "category": found.category,
    }


async def verdict(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    doc: mail.MailDoc,
    model: SpamModel | None = None,
) -> dict[str, Any]:
    """The verdict on a mail for one tenant (the shipped model plus the tenant's learning)."""
    model = model or default_model()
    found = features.extract(doc)
    fitted = await tenant.fitted_for(session, tenant_id=tenant_id, shipped=model)
    return _verdict_of(found, model, fitted)


async def verdicts(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    docs: list[mail.MailDoc],
    model: SpamModel | None = None,
) -> list[dict[str, Any]]:
    """verdict() for many mails of one tenant: the same figures, with the tenant's model
    looked up once for all of them (a batch of webhooks, services/nylas/batch.py)."""
    model = model or default_model()
    fitted = await tenant.fitted_for(session, tenant_id=tenant_id, shipped=model)
    return [_verdict_of(features.extract(d), model, fitted) for d in docs]


async def classify_message(
    session: AsyncSession, *, tenant_id: uuid.UUID, message_id: uuid.UUID
) -> dict[str, Any]:
    """Classify a stored message, store the verdict on it, and return it."""
    message = await _load(session, tenant_id, message_id)
    result = await verdict(session, tenant_id=tenant_id, doc=await doc_for(session, message))
    await repo.save_verdict(
        session,
        message_id=message.id,
        is_spam=result["is_spam"],
        spam_score=result["spam_score"],
        indicators=result["indicators"],
        category=result["category"],
    )
    await emit_messages(
        session,
        tenant_id=tenant_id,
        type=TenantEventType.message_classified,
        message_ids=[message.id],
    )
    return result


async def record_feedback(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    user_id: uuid.UUID | None,
    message_id: uuid.UUID,
    label: str,
) -> bool:
    """Teach the tenant's classifier that a message is spam or ham; False if already known."""
    if label not in LABELS:
        raise ValidationFailed("label must be 'spam' or 'ham'.")
    message = await repo.get_message(session, tenant_id=tenant_id, message_id=message_id)
    if message is None:
        raise NotFound("Message not found.")
    # Feature extraction is CPU work in proportion to the mail (up to features.MAX_SCAN_CHARS of
    # it): in a thread, so the API's event loop keeps answering while it runs.
    found = await asyncio.to_thread(features.extract, await doc_for(session, message))
    return await tenant.learn(
        session,
        tenant_id=tenant_id,
        user_id=user_id,
        message_id=message_id,
        label=label,
        found=found,
    )


def refit_job(tenant_id: uuid.UUID, *, request_id: str | None = None) -> Job:
    """The tenant's model refit (tenant.refit_when_due), to publish once a label committed.

    A task of its own, with no event: the fit never runs inside the label's transaction nor
    a verdict's. A lost publish leaves the model as it was until the tenant's next label."""
    return Job(
        TaskName.refit_tenant,
        None,
        f"refit.{tenant_id}.{uuid.uuid4().hex[:8]}",
        {"tenant_id": str(tenant_id)},
        request_id,
    )
