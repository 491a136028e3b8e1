"""The send service: compose, hand to SMTP (or Nylas) at most once per event, keep a Sent copy.

At-most-once comes from the `outbound_message` ledger, written in its own committed
transactions around DATA (see docs/sending.md):
- `pending`: nothing has been handed over; a retry may send.
- `sending`: committed just before DATA; found by a later attempt it means the outcome is
  unknown, so that attempt refuses to send again and ends in a dead letter for a person.
- `sent`: committed right after the server's final 250; a later attempt only finishes the
  bookkeeping (Sent copy, message row) and returns the same result.
- `failed`: the server refused the message (5xx); a replay by a person may try again.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from database.engine import Database
from database.models import Account, Event, OutboundMessage, Provider
from database.repositories.accounts import access as accounts_repo
from database.repositories.messages import rows as messages_repo
from database.repositories.outbound import drafts as drafts_repo
from database.repositories.outbound import ledger as outbound_repo
from services.accounts.credentials import decrypted
from services.errors import BadCredentials, Conflict, PostroomError, ValidationFailed
from services.events.outcome import Outcome
from services.nylas.gateway import NylasGateway
from services.outbound import nylas_delivery as nylas_send
from services.outbound import send_events
from services.outbound.compose import AttachmentFile, Composed, Person, ReplyTarget, compose, people
from services.outbound.personal import Envelope
from services.outbound.personal import envelopes as personal_envelopes
from services.outbound.personal import wanted as wants_personal
from services.outbound.request import Prepared, SendRequest
from services.outbound.sent_record import append_copy, record_sent
from services.outbound.smtp import (
    Delivery,
    DeliveryUnknown,
    SmtpConfig,
    SmtpConnection,
    SmtpRejected,
)
from services.reports.suppressions import AllRecipientsSuppressed, suppressed_among
from settings import Settings

log = structlog.get_logger(__name__)


async def load_request(
    session: AsyncSession, *, tenant_id: uuid.UUID, event_id: uuid.UUID
) -> SendRequest:
    """The send request of an event, read from its draft (tasks carry only ids)."""
    draft = await drafts_repo.get(session, tenant_id=tenant_id, event_id=event_id)
    if draft is None:
        raise ValidationFailed("This send job has no draft (it was removed); nothing was sent.")
    return SendRequest.from_draft(draft)


class SendFailed(PostroomError):
    """A send failed; the original error quoted the mail and is not shown."""

    code = "send_failed"

    def __init__(self, message: str, *, transient: bool, retry_after: float | None = None) -> None:
        super().__init__(message, retry_after=retry_after)
        self.transient = transient


REDACTED = "[redacted]"


def _redact_text(text: str, private: list[str]) -> str:
    lowered = text.lower()
    for value in private:
        if value.lower() in lowered:
            text = re.sub(re.escape(value), REDACTED, text, flags=re.IGNORECASE)
            lowered = text.lower()
    return text


def _chained(exc: BaseException) -> list[BaseException]:
    """The causes and contexts behind `exc` (the traceback prints each of them)."""
    found: list[BaseException] = []
    todo = [exc.__cause__, exc.__context__]
    while todo:
        item = todo.pop()
        if item is not None and item is not exc and item not in found:
            found.append(item)
            todo += [item.__cause__, item.__context__]
    return found


def _quotes(exc: BaseException, private: list[str]) -> bool:
    text = str(exc).lower()
    return any(v.lower() in text for v in private)


def redact_error(exc: BaseException, private: list[str], *, transient: bool) -> BaseException:
    """The same exception (type, transient or not) with the send's addresses, names, subject
    and bodies cut out of its message, so neither the event, the dead letter, the logs nor the
    result backend can quote them (an SMTP server's "550 <bob@x>: unknown user" does).

    A chained cause or context quoting them is dropped; a foreign exception whose text cannot
    be rewritten (a database error listing its parameters) is replaced by a `SendFailed` that
    keeps `transient` (the worker's verdict on the original) and its Retry-After.
    """
    if isinstance(exc, PostroomError):
        exc.message = _redact_text(exc.message, private)
        if isinstance(exc, SmtpRejected):
            exc.reply = _redact_text(exc.reply, private)
    exc.args = tuple(_redact_text(a, private) if isinstance(a, str) else a for a in exc.args)
    if any(_quotes(c, private) for c in _chained(exc)):
        exc.__cause__ = None
        exc.__suppress_context__ = True
        exc.__context__ = None
    if _quotes(exc, private):
        retry_after = getattr(exc, "retry_after", None)
        return SendFailed(
            f"The send failed with {type(exc).__name__} (details withheld: they quoted the mail).",
            transient=transient,
            retry_after=retry_after if isinstance(retry_after, (int, float)) else None,
        )
    return exc


def _uuid(value: str, what: str) -> uuid.UUID:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise ValidationFailed(f"{what} {value!r} is not an id.") from None


async def prepare(session: AsyncSession, *, account: Account, request: SendRequest) -> Prepared:
    """Validate addresses, and load attachments and the replied message within the tenant."""
    ids = [_uuid(a, "Attachment") for a in request.attachment_ids or []]
    rows = await outbound_repo.get_attachments(
        session, tenant_id=account.tenant_id, attachment_ids=ids
    )
    if len(rows) != len(set(ids)):
        raise ValidationFailed("An attachment does not exist.")
    attachments = [
        AttachmentFile(
            filename=a.filename or "attachment",
            content_type=a.content_type,
            content=a.content or b"",
        )
        for a in rows
    ]
    reply, reply_provider_id = None, None
    if request.reply_to_message_id:
        parent = await outbound_repo.get_message(
            session,
            tenant_id=account.tenant_id,
            message_id=_uuid(request.reply_to_message_id, "Message"),
        )
        if parent is None:
            raise ValidationFailed("The message being replied to does not exist.")
        reply = ReplyTarget(parent.message_id_header, list(parent.references or []))
        if parent.account_id == account.id:
            reply_provider_id = parent.provider_id
    return Prepared(
        to=people(request.to, "recipient"),
        cc=people(request.cc, "cc address"),
        bcc=people(request.bcc, "bcc address"),
        attachments=attachments,
        reply=reply,
        reply_provider_id=reply_provider_id,
    )


def sender_of(account: Account) -> Person:
    name = (account.settings or {}).get("display_name")
    return Person(email=account.email, name=name if isinstance(name, str) and name else None)


async def _ledger(
    db: Database, *, account: Account, event: Event, composed_id: str, recipients: list[str]
) -> OutboundMessage:
    async with db.transaction() as s:
        return await outbound_repo.get_or_create(
            s,
            tenant_id=account.tenant_id,
            account_id=account.id,
            event_id=event.id,
            message_id_header=composed_id,
            recipients=recipients,
        )


async def _committed(db: Database, work: Callable[[AsyncSession], Awaitable[bool]]) -> bool:
    """A ledger step in its own committed transaction (a few tries: it must land)."""
    for attempt in range(3):
        try:
            async with db.transaction() as s:
                return await work(s)
        except Exception:
            if attempt == 2:
                raise
            await asyncio.sleep(0.2 * (attempt + 1))
    return False


async def _move(
    db: Database, row: OutboundMessage, frm: tuple[str, ...], to: str, **values: Any
) -> bool:
    """A ledger transition in its own committed transaction."""
    return await _committed(
        db,
        lambda s: outbound_repo.transition(
            s, outbound_id=row.id, from_status=frm, to_status=to, **values
        ),
    )


async def send_message(
    db: Database,
    *,
    settings: Settings,
    account: Account,
    event: Event,
    request: SendRequest,
    nylas: NylasGateway | None,
) -> Outcome:
    """Send one message for an event, at most once; the result the task returns.

    Owns its transactions (it takes the database, not a session): what the send needs is read
    and committed first, the ledger moves in its own commits, and the SMTP (or Nylas) and
    IMAP conversations run with no transaction open; the message row is written afterwards.
    """
    async with db.transaction() as s:
        prepared = await prepare(s, account=account, request=request)
        if not request.options.get("ignore_suppression"):
            prepared = await leave_out_suppressed(s, tenant_id=account.tenant_id, prepared=prepared)
        if account.provider == Provider.nylas:
            ciphertext, sent_folder = None, None
        else:
            ciphertext = await accounts_repo.credential_ciphertext(
                s, tenant_id=account.tenant_id, account_id=account.id
            )
            sent_folder = await messages_repo.folder_by_role(
                s, tenant_id=account.tenant_id, account_id=account.id, role="sent"
            )
    if account.provider == Provider.nylas:
        outcome = await nylas_send.send_via_nylas(
            db,
            account=account,
            event=event,
            prepared=prepared,
            request=request,
            nylas=nylas,
            sender=sender_of(account),
        )
        if outcome.result is not None:
            outcome.result["suppressed"] = prepared.suppressed
        return outcome
    if ciphertext is None:
        raise BadCredentials("The account has no stored credentials.")
    secrets = decrypted(db, settings, account, ciphertext)
    smtp = SmtpConfig.from_credential(secrets.get("smtp"))

    def build(message_id_header: str | None) -> Composed:
        return compose(
            sender=sender_of(account),
            to=prepared.to,
            cc=prepared.cc,
            bcc=prepared.bcc,
            subject=request.subject,
            body_text=request.body_text,
            body_html=request.body_html,
            attachments=prepared.attachments,
            reply_to_message=prepared.reply,
            message_id_header=message_id_header,
        )

    first = build(None)  # validates before anything is recorded
    row = await _ledger(
        db,
        account=account,
        event=event,
        composed_id=first.message_id_header,
        recipients=first.recipients,
    )
    composed = (
        first if row.message_id_header == first.message_id_header else build(row.message_id_header)
    )
    if row.status == "sending":
        raise DeliveryUnknown(
            f"An earlier attempt handed message {row.message_id_header} to the SMTP server and "
            "stopped before its answer was recorded; it is not sent again. Check the recipient "
            "side or the server log for that Message-ID."
        )
    accepted = list(row.recipients or [])
    if row.status in ("pending", "failed"):
        if row.status == "failed":
            await _move(db, row, ("failed",), "pending")
        personal = (
            personal_envelopes(
                settings,
                composed=composed,
                options=request.options,
                tenant_id=account.tenant_id,
                outbound_id=row.id,
            )
            if wants_personal(request.options)
            else None
        )
        accepted = await _deliver(db, row=row, smtp=smtp, composed=composed, personal=personal)
    appended, copy = await append_copy(
        settings,
        account=account,
        imap=secrets.get("imap"),
        sent_folder=sent_folder,
        data=composed.data,
    )
    async with db.transaction() as s:
        message_row_id = await record_sent(
            s,
            account=account,
            sent_folder=sent_folder,
            appended=appended,
            composed=composed,
            bcc=prepared.bcc,
            body_text=request.body_text,
            body_html=request.body_html,
            attachments=prepared.attachments,
            outbound_id=row.id,
        )
        await send_events.tell_sent(
            s, row=row, message_id=message_row_id, recipients_sent=len(accepted)
        )
    return Outcome(
        status="succeeded",
        result={
            "status": "success",
            "message_id": str(message_row_id),
            "message_id_header": composed.message_id_header,
            # A count (API.md): the addresses stay in the ledger row, out of the result backend.
            "recipients_sent": len(accepted),
            "sent_copy": copy,
            # Left out as the tenant suppresses them (API.md "Delivery reports").
            "suppressed": prepared.suppressed,
        },
        tenant_id=account.tenant_id,
        account_id=account.id,
        message_ids=[message_row_id],
    )


async def leave_out_suppressed(
    session: AsyncSession, *, tenant_id: uuid.UUID, prepared: Prepared
) -> Prepared:
    """The request without the recipients the tenant suppresses; none left is a permanent
    failure (`all_recipients_suppressed`)."""
    everyone = [p.email for p in (*prepared.to, *prepared.cc, *prepared.bcc)]
    suppressed = await suppressed_among(session, tenant_id=tenant_id, emails=everyone)
    if not suppressed:
        return prepared
    if all(e.lower() in suppressed for e in everyone):
        raise AllRecipientsSuppressed(
            "all_recipients_suppressed: every recipient of this send is on the suppression "
            "list; nothing was sent."
        )
    return replace(
        prepared,
        to=[p for p in prepared.to if p.email.lower() not in suppressed],
        cc=[p for p in prepared.cc if p.email.lower() not in suppressed],
        bcc=[p for p in prepared.bcc if p.email.lower() not in suppressed],
        suppressed=sorted(suppressed),
    )


async def _deliver(
    db: Database,
    *,
    row: OutboundMessage,
    smtp: SmtpConfig,
    composed: Composed,
    personal: list[Envelope] | None = None,
) -> list[str]:
    marked = False

    async def mark_sending() -> None:
        nonlocal marked
        if not await _move(db, row, ("pending",), "sending"):
            raise Conflict("Another attempt is already sending this message.")
        marked = True

    try:
        async with SmtpConnection(smtp) as conn:
            if personal is None:
                delivery = await conn.send(
                    sender=composed.envelope_from,
                    recipients=composed.recipients,
                    data=composed.data,
                    before_data=mark_sending,
                    envelope_id=str(row.id),
                )
            else:
                delivery = await _deliver_each(
                    conn, personal, mark_sending, lambda: marked, envelope_id=str(row.id)
                )
    except DeliveryUnknown as exc:
        # Stays `sending`: the truth is on the server; the dead letter tells a person so.
        await _move(db, row, ("sending",), "sending", server_reply=exc.message[:1000])
        raise
    except SmtpRejected as exc:
        # For good (5xx): message.send_failed, with the ledger's move to `failed` when DATA
        # was reached, in the same commit.
        refused = exc
        await _committed(
            db,
            lambda s: send_events.fail(
                s,
                row=row,
                server_reply=refused.reply,
                error_code=refused.code,
                smtp_code=refused.smtp_code,
                in_ledger=marked,
            ),
        )
        raise
    except PostroomError:
        # A definite non-delivery (4xx, refused DATA, broken session before DATA): free to retry.
        if marked:
            await _move(db, row, ("sending",), "pending")
        raise
    await _move(
        db,
        row,
        ("sending",),
        "sent",
        server_reply=delivery.reply[:1000],
        recipients=delivery.accepted,
    )
    log.info(
        "smtp_sent",
        message_id_header=composed.message_id_header,
        recipients=len(delivery.accepted),
        refused=len(delivery.refused),
    )
    return delivery.accepted


async def _deliver_each(
    conn: SmtpConnection,
    envelopes: list[Envelope],
    mark_sending: Callable[[], Awaitable[None]],
    is_marked: Callable[[], bool],
    *,
    envelope_id: str,
) -> Delivery:
    """One transaction per recipient (its own return path or headers). Once one recipient has
    the message, a later recipient's refusal or temporary failure only leaves that recipient
    out: retrying the whole send would deliver twice to those who have it."""
    accepted: list[str] = []
    refused: dict[str, str] = {}
    reply = ""
    last_error: PostroomError | None = None
    for envelope in envelopes:
        try:
            got = await conn.send(
                sender=envelope.sender,
                recipients=[envelope.recipient],
                data=envelope.data,
                before_data=None if is_marked() else mark_sending,
                envelope_id=envelope_id,
            )
        except DeliveryUnknown:
            raise
        except PostroomError as exc:
            if not is_marked() and exc.transient:
                raise  # nothing handed over yet: the whole send may be retried
            refused[envelope.recipient] = exc.message[:300]
            last_error = exc
            continue
        accepted += got.accepted
        refused.update(got.refused)
        reply = got.reply
    if not accepted:
        assert last_error is not None
        raise last_error
    return Delivery(accepted=accepted, refused=refused, reply=reply)
