"""What happens when a delivery report is stored: it is linked to the send it names, a hard
bounce or a complaint suppresses the address, and the tenant hears `message.bounced` or
`message.complained` (all in the storing transaction, once: only for a newly stored row).

A report is linked when its original Message-ID, its Original-Envelope-Id (our ledger id) or
a VERP return path it was delivered to names a send of the same tenant. Only a linked report
suppresses: anyone can mail a tenant's mailbox a forged DSN, but only a report about mail
postroom really sent, to that recipient, can take an address off the tenant's sends.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from database.repositories.reports import deliveries as deliveries_repo
from database.repositories.reports import suppressions as suppressions_repo
from services.reports import tokens
from services.reports.model import public_of
from services.tenant_events.emit import TenantEventType, emit_many
from services.tenant_events.payloads import message_payloads
from settings import Settings, get_settings

LINKED_KINDS = ("bounce", "delay", "complaint", "delivered", "auto_reply")


# The subject our List-Unsubscribe mailto link asks for (services/outbound/personal.py).
_UNSUBSCRIBE_SUBJECT = re.compile(
    r"^\s*unsubscribe\s+([A-Za-z0-9_-]{20,700}\.[A-Za-z0-9_-]{16,40})\s*$"
)


def wants_recording(values: dict[str, Any]) -> bool:
    """Whether a newly stored row needs record_stored: a report, or a mailto unsubscribe."""
    subject = values.get("subject")
    return bool(
        values.get("report")
        or (isinstance(subject, str) and subject[:20].lower().lstrip().startswith("unsubscribe"))
    )


def _envelope_ids(report: dict[str, Any]) -> list[uuid.UUID]:
    value = str(report.get("envelope_id") or "")
    try:
        return [uuid.UUID(value)] if value else []
    except ValueError:
        return []


def _verp(settings: Settings, report: dict[str, Any]) -> list[tuple[uuid.UUID, bytes]]:
    found = [tokens.read_verp(settings, a) for a in report.get("verp") or [] if isinstance(a, str)]
    return [f for f in found if f is not None]


async def record_stored(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    stored: Sequence[tuple[uuid.UUID, dict[str, Any]]],
    settings: Settings | None = None,
) -> None:
    """For each newly stored (message id, row values) that is a report: link, suppress, emit."""
    reports = [(mid, v, v["report"]) for mid, v in stored if isinstance(v.get("report"), dict)]
    unsubscribes = [
        m.group(1)
        for _, v in stored
        if isinstance(v.get("subject"), str)
        and (m := _UNSUBSCRIBE_SUBJECT.match(v["subject"][:800]))
    ]
    if not reports and not unsubscribes:
        return
    settings = settings or get_settings()
    for token in unsubscribes:
        await _unsubscribe_by_mail(session, settings, tenant_id, token)
    told = [mid for mid, _, report in reports if report.get("kind") in ("bounce", "complaint")]
    listed = {uuid.UUID(p["id"]): p for p in await message_payloads(session, tenant_id, told)}
    events: list[tuple[TenantEventType, dict[str, Any]]] = []
    for message_id, _values, report in reports:
        await _link_and_suppress(session, settings, tenant_id, message_id, report)
        kind = report.get("kind")
        if kind in ("bounce", "complaint") and message_id in listed:
            events.append(
                (
                    TenantEventType.message_bounced
                    if kind == "bounce"
                    else TenantEventType.message_complained,
                    {
                        "message": listed[message_id],
                        "report": public_of(report),
                    },
                )
            )
    if events:
        await emit_many(session, tenant_id=tenant_id, events=events)


async def _unsubscribe_by_mail(
    session: AsyncSession, settings: Settings, tenant_id: uuid.UUID, token: str
) -> None:
    """The List-Unsubscribe mailto link: a mail whose subject is `unsubscribe <token>`,
    arriving in a mailbox of the tenant the token was made for, suppresses its recipient."""
    found = tokens.read_unsubscribe(settings, token)
    if found is None or found[0] != tenant_id:
        return
    await suppressions_repo.add(
        session,
        tenant_id=tenant_id,
        rows=[{"email": found[1].strip().lower(), "reason": "unsubscribed", "report_id": None}],
    )


async def _link_and_suppress(
    session: AsyncSession,
    settings: Settings,
    tenant_id: uuid.UUID,
    message_id: uuid.UUID,
    report: dict[str, Any],
) -> None:
    kind = report.get("kind")
    if kind not in LINKED_KINDS:
        return
    verp = _verp(settings, report)
    original = report.get("original_message_id")
    sends = await deliveries_repo.sends_named(
        session,
        tenant_id=tenant_id,
        message_ids=[original] if isinstance(original, str) else [],
        outbound_ids=[*_envelope_ids(report), *(v[0] for v in verp)],
    )
    if not sends:
        return
    recipients = [r for r in report.get("recipients") or [] if isinstance(r, dict)]
    links: list[dict[str, Any]] = []
    suppress: list[dict[str, Any]] = []
    for send in sends:
        sent_to = [str(e).lower() for e in send.recipients or []]
        lines = recipients
        if not lines:
            # A complaint whose recipient was redacted, or a bounce through a VERP address
            # that names the recipient: the send says who it was.
            named = [
                e
                for e in sent_to
                for s, tag in verp
                if s == send.id and tokens.is_recipient(tag, e)
            ]
            if not named and len(sent_to) == 1:
                named = sent_to
            lines = [{"email": e, "status": None, "hard": False} for e in named]
        for line in lines:
            email = str(line.get("email") or "").lower()
            if email not in sent_to:
                continue  # a report about an address this send never had
            links.append(
                {
                    "tenant_id": tenant_id,
                    "outbound_id": send.id,
                    "report_message_id": message_id,
                    "email": email,
                    "kind": kind,
                    "status": line.get("status"),
                    "hard": bool(line.get("hard")),
                }
            )
            if (kind == "bounce" and line.get("hard")) or kind == "complaint":
                reason = "complaint" if kind == "complaint" else str(line.get("reason"))
                suppress.append({"email": email, "reason": reason, "report_id": message_id})
    await deliveries_repo.insert_links(session, links)
    unique = list({s["email"]: s for s in suppress}.values())
    await suppressions_repo.add(session, tenant_id=tenant_id, rows=unique)
