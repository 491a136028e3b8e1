"""The whole data model of postroom as SQLModel tables (ARCHITECTURE.md "Data")."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB, TSVECTOR
from sqlmodel import Field, SQLModel

from database.base import fk_field, id_field, jsonb_field, ts_field


class Provider(enum.StrEnum):
    imap = "imap"
    nylas = "nylas"
    pop3 = "pop3"


class AccountStatus(enum.StrEnum):
    active = "active"
    reauth_required = "reauth_required"
    disabled = "disabled"


class EventSource(enum.StrEnum):
    nylas = "nylas"
    api = "api"
    schedule = "schedule"
    push = "push"  # the IMAP push listener saw a mailbox change (services/imap/push.py)


class EventStatus(enum.StrEnum):
    # Waiting for its `send_at` time.
    scheduled = "scheduled"
    received = "received"
    queued = "queued"
    processing = "processing"
    retrying = "retrying"
    succeeded = "succeeded"
    ignored = "ignored"
    dead = "dead"
    # Cancelled through the API before a worker took it: its effect never happens.
    cancelled = "cancelled"

    @classmethod
    def finished(cls) -> tuple[EventStatus, ...]:
        return (cls.succeeded, cls.ignored, cls.dead, cls.cancelled)

    @classmethod
    def cancellable(cls) -> tuple[EventStatus, ...]:
        """Not yet taken by a worker (API.md "Events": cancel)."""
        return (cls.scheduled, cls.received, cls.queued, cls.retrying)


def _enum_str(max_length: int = 32) -> Any:
    return sa.String(max_length)


class Tenant(SQLModel, table=True):
    __tablename__ = "tenant"
    id: uuid.UUID = id_field()
    name: str = Field(sa_type=sa.String(200), unique=True)
    # Lanes per latency class the tenant's tasks are spread over (worker.config.lanes_for),
    # plus one overflow lane (worker.config.lane_choices): 1 to LANES; set with
    # `postroom admin set-weight`.
    weight: int = Field(
        default=1, sa_type=sa.SmallInteger, sa_column_kwargs={"server_default": "1"}
    )
    created_at: datetime = ts_field()


class User(SQLModel, table=True):
    __tablename__ = "user"
    __table_args__ = (sa.UniqueConstraint("tenant_id", "email"),)
    id: uuid.UUID = id_field()
    tenant_id: uuid.UUID = fk_field("tenant.id")
    email: str = Field(sa_type=sa.String(320))
    created_at: datetime = ts_field()


class ApiKey(SQLModel, table=True):
    __tablename__ = "api_key"
    id: uuid.UUID = id_field()
    tenant_id: uuid.UUID = fk_field("tenant.id")
    user_id: uuid.UUID = fk_field("user.id")
    # sha256 of the whole key; the key itself is shown once and never stored.
    key_hash: str = Field(sa_type=sa.String(64), unique=True)
    prefix: str = Field(sa_type=sa.String(16))
    created_at: datetime = ts_field()
    last_used_at: datetime | None = ts_field(nullable=True)
    revoked_at: datetime | None = ts_field(nullable=True)


class Account(SQLModel, table=True):
    __tablename__ = "account"
    __table_args__ = (
        # One live account per Nylas grant: webhooks are routed by grant id.
        sa.Index(
            "uq_account_grant_id_live",
            "grant_id",
            unique=True,
            postgresql_where=sa.text("grant_id IS NOT NULL AND deleted_at IS NULL"),
        ),
    )
    id: uuid.UUID = id_field()
    tenant_id: uuid.UUID = fk_field("tenant.id")
    user_id: uuid.UUID = fk_field("user.id")
    provider: str = Field(sa_type=_enum_str())
    email: str = Field(sa_type=sa.String(320))
    status: str = Field(default=AccountStatus.active, sa_type=_enum_str())
    status_reason: str | None = Field(default=None, sa_type=sa.Text)
    # The Nylas grant id is an identifier, not a secret (the API key is): kept plain for routing.
    grant_id: str | None = Field(default=None, sa_type=sa.String(200))
    sync_interval_s: int = Field(default=300)
    last_sync_at: datetime | None = ts_field(nullable=True)
    sync_cursor: str | None = Field(default=None, sa_type=sa.Text)
    settings: dict[str, Any] = jsonb_field()
    created_at: datetime = ts_field()
    updated_at: datetime = ts_field()
    deleted_at: datetime | None = ts_field(nullable=True)


class Credential(SQLModel, table=True):
    __tablename__ = "credential"
    id: uuid.UUID = id_field()
    tenant_id: uuid.UUID = fk_field("tenant.id")
    account_id: uuid.UUID = Field(
        sa_type=sa.Uuid, foreign_key="account.id", ondelete="CASCADE", unique=True
    )
    # Fernet token of the JSON secrets (IMAP/SMTP passwords, Nylas grant).
    ciphertext: str = Field(sa_type=sa.Text)
    created_at: datetime = ts_field()
    updated_at: datetime = ts_field()


class Folder(SQLModel, table=True):
    __tablename__ = "folder"
    __table_args__ = (sa.UniqueConstraint("account_id", "name"),)
    id: uuid.UUID = id_field()
    tenant_id: uuid.UUID = fk_field("tenant.id")
    account_id: uuid.UUID = fk_field("account.id")
    name: str = Field(sa_type=sa.String(500))
    provider_id: str | None = Field(default=None, sa_type=sa.String(500))
    role: str | None = Field(default=None, sa_type=_enum_str())
    delimiter: str | None = Field(default=None, sa_type=sa.String(4))
    uidvalidity: int | None = Field(default=None, sa_type=sa.BigInteger)
    uidnext: int | None = Field(default=None, sa_type=sa.BigInteger)
    highest_modseq: int | None = Field(default=None, sa_type=sa.BigInteger)
    sync_cursor: str | None = Field(default=None, sa_type=sa.Text)
    last_synced_at: datetime | None = ts_field(nullable=True)
    created_at: datetime = ts_field()


class Message(SQLModel, table=True):
    __tablename__ = "message"
    __table_args__ = (
        sa.UniqueConstraint("account_id", "provider_id"),
        # Listing is newest first with a (sort_at, id) keyset cursor: these indexes serve it
        # without sorting the table.
        sa.Index(
            "ix_message_tenant_sort", "tenant_id", sa.text("sort_at DESC"), sa.text("id DESC")
        ),
        sa.Index(
            "ix_message_account_sort", "account_id", sa.text("sort_at DESC"), sa.text("id DESC")
        ),
        sa.Index("ix_message_search", "search", postgresql_using="gin"),
        sa.Index("ix_message_folder_uid", "folder_id", "imap_uid"),
        sa.Index("ix_message_message_id_header", "account_id", "message_id_header"),
    )
    id: uuid.UUID = id_field()
    tenant_id: uuid.UUID = fk_field("tenant.id", index=False)
    account_id: uuid.UUID = fk_field("account.id", index=False)
    folder_id: uuid.UUID | None = fk_field(
        "folder.id", nullable=True, index=False, ondelete="SET NULL"
    )
    # Nylas message id, or "<folder>:<uidvalidity>:<uid>" for IMAP.
    provider_id: str = Field(sa_type=sa.String(500))
    imap_uid: int | None = Field(default=None, sa_type=sa.BigInteger)
    uidvalidity: int | None = Field(default=None, sa_type=sa.BigInteger)
    modseq: int | None = Field(default=None, sa_type=sa.BigInteger)
    # Time of the newest notification applied (Nylas envelope `time`): an older one arriving
    # late must not overwrite a newer state.
    provider_version: int | None = Field(default=None, sa_type=sa.BigInteger)
    message_id_header: str | None = Field(default=None, sa_type=sa.Text)
    in_reply_to: str | None = Field(default=None, sa_type=sa.Text)
    references: list[str] = jsonb_field(list)
    thread_id: str | None = Field(default=None, sa_type=sa.String(500))
    from_name: str | None = Field(default=None, sa_type=sa.Text)
    from_email: str | None = Field(default=None, sa_type=sa.String(320))
    to_addrs: list[dict[str, Any]] = jsonb_field(list)
    cc_addrs: list[dict[str, Any]] = jsonb_field(list)
    bcc_addrs: list[dict[str, Any]] = jsonb_field(list)
    reply_to: list[dict[str, Any]] = jsonb_field(list)
    subject: str | None = Field(default=None, sa_type=sa.Text)
    date: datetime | None = ts_field(nullable=True)
    sort_at: datetime = ts_field()
    snippet: str | None = Field(default=None, sa_type=sa.Text)
    text: str | None = Field(default=None, sa_type=sa.Text)
    html: str | None = Field(default=None, sa_type=sa.Text)
    headers: list[list[str]] = jsonb_field(list)
    unread: bool = Field(default=True)
    starred: bool = Field(default=False)
    flags: list[str] = jsonb_field(list)
    labels: list[str] = jsonb_field(list)
    size: int | None = Field(default=None)
    has_attachments: bool = Field(default=False)
    is_spam: bool | None = Field(default=None)
    spam_score: float | None = Field(default=None)
    spam_indicators: list[str] | None = jsonb_field(nullable=True)
    category: str | None = Field(default=None, sa_type=_enum_str())
    parse_warnings: list[str] = jsonb_field(list)
    # Over POSTROOM_MAX_MESSAGE_BYTES: only the header was downloaded and stored.
    too_large: bool = Field(default=False, sa_column_kwargs={"server_default": sa.false()})
    # Why this message is incomplete (too large, too many parts, unreadable answer): one
    # sentence written by us, never the mail's contents. The folder's sync moved on past it.
    problem: str | None = Field(default=None, sa_type=sa.Text)
    # A delivery report this message is (services/reports): bounce, delay, complaint,
    # auto-reply or delivered; null for ordinary mail. Computed when the message is stored.
    report: dict[str, Any] | None = jsonb_field(nullable=True)
    deleted_at: datetime | None = ts_field(nullable=True)
    created_at: datetime = ts_field()
    updated_at: datetime = ts_field()
    search: Any = Field(
        default=None,
        sa_column=sa.Column(
            TSVECTOR,
            sa.Computed(
                "setweight(to_tsvector('simple', coalesce(subject, '')), 'A') || "
                "setweight(to_tsvector('simple', coalesce(from_name, '') || ' ' || "
                "coalesce(from_email, '')), 'B') || "
                "setweight(to_tsvector('english', left(coalesce(text, ''), 100000)), 'C')",
                persisted=True,
            ),
        ),
    )


class Attachment(SQLModel, table=True):
    __tablename__ = "attachment"
    __table_args__ = (
        # The thumbnail task finds a sync's new images by tenant and time, from images alone.
        sa.Index(
            "ix_attachment_image_created",
            "tenant_id",
            "created_at",
            postgresql_where=sa.text(
                "content_type IN ('image/jpeg', 'image/png', 'image/gif', 'image/webp', "
                "'image/heic')"
            ),
        ),
    )
    id: uuid.UUID = id_field()
    tenant_id: uuid.UUID = fk_field("tenant.id", index=False)
    message_id: uuid.UUID = fk_field("message.id")
    provider_id: str | None = Field(default=None, sa_type=sa.String(500))
    filename: str | None = Field(default=None, sa_type=sa.Text)
    content_type: str = Field(default="application/octet-stream", sa_type=sa.String(255))
    size: int = Field(default=0)
    sha256: str | None = Field(default=None, sa_type=sa.String(64))
    content_id: str | None = Field(default=None, sa_type=sa.Text)
    is_inline: bool = Field(default=False)
    content: bytes | None = Field(default=None, sa_type=sa.LargeBinary)
    created_at: datetime = ts_field()


# Attachment types that get a thumbnail (services/messages/thumbnails.py).
THUMBNAIL_SOURCE_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp", "image/heic")


class AttachmentThumbnail(SQLModel, table=True):
    """The preview of an image attachment, or why it can never have one (`failed`).

    Made by `postroom.mail.generate_thumbnail` after a sync; goes with its attachment, and
    with its message's soft delete through the cleanup beat task.
    """

    __tablename__ = "attachment_thumbnail"
    attachment_id: uuid.UUID = Field(
        sa_type=sa.Uuid, foreign_key="attachment.id", ondelete="CASCADE", primary_key=True
    )
    tenant_id: uuid.UUID = fk_field("tenant.id", index=False)
    message_id: uuid.UUID = fk_field("message.id")
    status: str = Field(sa_type=sa.String(16))  # ready | failed
    content_type: str | None = Field(default=None, sa_type=sa.String(32))
    content: bytes | None = Field(default=None, sa_type=sa.LargeBinary)
    width: int | None = Field(default=None)
    height: int | None = Field(default=None)
    reason: str | None = Field(default=None, sa_type=sa.String(64))
    created_at: datetime = ts_field()


class OutboundAttachment(SQLModel, table=True):
    """A file uploaded with POST /v1/messages/send, kept until the send task attaches it."""

    __tablename__ = "outbound_attachment"
    # The tenant's storage quota sums `size` by tenant from this index alone.
    __table_args__ = (sa.Index("ix_outbound_attachment_tenant_size", "tenant_id", "size"),)
    id: uuid.UUID = id_field()
    tenant_id: uuid.UUID = fk_field("tenant.id", index=False)
    # The send job's event; retention of events removes their uploads with them.
    event_id: uuid.UUID = fk_field("event.id")
    filename: str = Field(sa_type=sa.Text)
    content_type: str = Field(default="application/octet-stream", sa_type=sa.String(255))
    size: int = Field(default=0)
    content: bytes = Field(sa_type=sa.LargeBinary)
    created_at: datetime = ts_field()


class SendDraft(SQLModel, table=True):
    """What a send job sends: recipients, subject, bodies and attachment ids, by its event.

    Kept out of the task message so the broker, Flower and the result backend carry ids only;
    the send task (and every retry or replay of it) reads it here. Removed with its event.
    """

    __tablename__ = "send_draft"
    __table_args__ = (sa.Index("ix_send_draft_tenant_size", "tenant_id", "size"),)
    event_id: uuid.UUID = Field(
        sa_type=sa.Uuid, foreign_key="event.id", ondelete="CASCADE", primary_key=True
    )
    tenant_id: uuid.UUID = fk_field("tenant.id", index=False)
    # Addresses as the caller gave them: "a@b" or {"email", "name"?}; checked again on send.
    to_addrs: list[Any] = jsonb_field(list)
    cc_addrs: list[Any] = jsonb_field(list)
    bcc_addrs: list[Any] = jsonb_field(list)
    subject: str = Field(default="", sa_type=sa.Text)
    text: str = Field(default="", sa_type=sa.Text)
    html: str | None = Field(default=None, sa_type=sa.Text)
    reply_to_message_id: uuid.UUID | None = Field(default=None, sa_type=sa.Uuid)
    # Ids of `outbound_attachment` uploads (or stored attachments), in the order given.
    attachment_ids: list[str] = jsonb_field(list)
    # Bytes of its text (subject, bodies, addresses) counted against the tenant's storage quota.
    size: int = Field(default=0, sa_type=sa.BigInteger, sa_column_kwargs={"server_default": "0"})
    # Send options besides the content: verp, unsubscribe, ignore_suppression, and the
    # public_url unsubscribe links start with (recorded from the request that made the send).
    options: dict[str, Any] = Field(
        default_factory=dict, sa_type=JSONB, sa_column_kwargs={"server_default": "{}"}
    )
    created_at: datetime = ts_field()


class Event(SQLModel, table=True):
    __tablename__ = "event"
    __table_args__ = (
        sa.UniqueConstraint("source", "external_id"),
        # The outbox sweeper's scan: unfinished events whose lease ran out.
        sa.Index(
            "ix_event_due_unfinished",
            "due_at",
            postgresql_where=sa.text("status IN ('received', 'queued', 'processing', 'retrying')"),
        ),
        sa.Index("ix_event_status", "status"),
        # The release of scheduled sends (services/events/outbox.py): those whose time has come.
        sa.Index(
            "ix_event_scheduled_not_before",
            "not_before",
            postgresql_where=sa.text("status = 'scheduled'"),
        ),
        sa.Index(
            "ix_event_tenant_received", "tenant_id", sa.text("received_at DESC"), sa.text("id DESC")
        ),
        # Coalescing (services/nylas/coalesce.py): the waiting notifications about one message.
        sa.Index(
            "ix_event_nylas_object_waiting",
            sa.text("(payload #>> '{data,object,id}')"),
            postgresql_where=sa.text(
                "source = 'nylas' AND status IN ('received', 'queued', 'retrying')"
            ),
        ),
        # At most one unfinished push sync per (account, folder): the listener's INSERT ... ON
        # CONFLICT DO NOTHING (services/imap/push.py) makes a NOTIFY flood cost one row.
        sa.Index(
            "ux_event_push_unfinished",
            "account_id",
            sa.text("(coalesce(task_kwargs ->> 'folder', ''))"),
            unique=True,
            postgresql_where=sa.text(
                "source = 'push' AND status IN ('received', 'queued', 'processing', 'retrying')"
            ),
        ),
        # Batched drain (services/nylas/batch.py): a grant's waiting message.created, newest first.
        sa.Index(
            "ix_event_nylas_created_waiting",
            sa.text(
                "(coalesce(payload #>> '{data,grant_id}', payload #>> '{data,object,grant_id}'))"
            ),
            "received_at",
            postgresql_where=sa.text(
                "source = 'nylas' AND type = 'message.created' AND status IN ('received', 'queued')"
            ),
        ),
    )
    id: uuid.UUID = id_field()
    tenant_id: uuid.UUID | None = fk_field("tenant.id", nullable=True, index=False)
    user_id: uuid.UUID | None = fk_field("user.id", nullable=True, index=False, ondelete="SET NULL")
    account_id: uuid.UUID | None = fk_field(
        "account.id", nullable=True, index=False, ondelete="SET NULL"
    )
    source: str = Field(sa_type=_enum_str())
    type: str = Field(sa_type=sa.String(200))
    # Nylas notification id, or "<tenant id>:<Idempotency-Key>" for API jobs.
    external_id: str | None = Field(default=None, sa_type=sa.String(500))
    request_hash: str | None = Field(default=None, sa_type=sa.String(64))
    task_name: str = Field(sa_type=sa.String(200))
    # Keyword arguments the task is published with (event_id is always added): ids, never secrets.
    task_kwargs: dict[str, Any] = jsonb_field()
    payload: dict[str, Any] = jsonb_field()
    status: str = Field(default=EventStatus.received, sa_type=_enum_str())
    attempts: int = Field(default=0)
    task_ids: list[str] = jsonb_field(list)
    # The task id allowed to work on the event now; a stale copy with another id does nothing.
    current_task_id: str | None = Field(default=None, sa_type=sa.String(64))
    # Every attempt: {task_id, started_at, finished_at, outcome, error}.
    history: list[dict[str, Any]] = jsonb_field(list)
    # Per-step state of a workflow chain.
    steps: list[dict[str, Any]] = jsonb_field(list)
    progress: dict[str, Any] | None = jsonb_field(nullable=True)
    result: dict[str, Any] | None = jsonb_field(nullable=True)
    last_error: str | None = Field(default=None, sa_type=sa.Text)
    request_id: str | None = Field(default=None, sa_type=sa.String(64))
    publish_count: int = Field(default=0)
    received_at: datetime = ts_field()
    started_at: datetime | None = ts_field(nullable=True)
    # When the outbox sweeper may consider this event lost and publish it again.
    due_at: datetime | None = ts_field(nullable=True)
    # A scheduled job (`send_at`): beat's outbox releases it at this time, not before.
    not_before: datetime | None = ts_field(nullable=True)
    finished_at: datetime | None = ts_field(nullable=True)
    updated_at: datetime = ts_field()


class DeadLetter(SQLModel, table=True):  # type: ignore[no-redef]  # field `kwargs` vs the plugin's __init__
    __tablename__ = "dead_letter"
    __table_args__ = (
        sa.Index(
            "ix_dead_letter_tenant_created",
            "tenant_id",
            sa.text("created_at DESC"),
            sa.text("id DESC"),
        ),
    )
    id: uuid.UUID = id_field()
    tenant_id: uuid.UUID | None = fk_field("tenant.id", nullable=True, index=False)
    event_id: uuid.UUID | None = fk_field("event.id", nullable=True, ondelete="SET NULL")
    task_name: str = Field(sa_type=sa.String(200))
    task_id: str | None = Field(default=None, sa_type=sa.String(64))
    step: str | None = Field(default=None, sa_type=sa.String(200))
    args: list[Any] = jsonb_field(list)
    kwargs: dict[str, Any] = jsonb_field()
    exception_type: str = Field(sa_type=sa.String(200))
    exception_message: str = Field(sa_type=sa.Text)
    traceback: str | None = Field(default=None, sa_type=sa.Text)
    attempts: int = Field(default=0)
    first_failed_at: datetime = ts_field()
    last_failed_at: datetime = ts_field()
    replayed_at: datetime | None = ts_field(nullable=True)
    replay_count: int = Field(default=0)
    created_at: datetime = ts_field()


class ClassifierFeedback(SQLModel, table=True):
    __tablename__ = "classifier_feedback"
    __table_args__ = (sa.UniqueConstraint("tenant_id", "message_id"),)
    id: uuid.UUID = id_field()
    tenant_id: uuid.UUID = fk_field("tenant.id", index=False)
    user_id: uuid.UUID | None = fk_field("user.id", nullable=True, index=False, ondelete="SET NULL")
    message_id: uuid.UUID = fk_field("message.id")
    label: str = Field(sa_type=_enum_str())
    # {"indicators": [...]}: the names of the indicators the mail showed (ours, not its text).
    tokens: dict[str, Any] = Field(default_factory=dict, sa_type=JSONB)
    # The mail's hashed feature buckets (services/classify/tenant.pack_example): never its text.
    features: bytes | None = Field(default=None, sa_type=sa.LargeBinary)
    created_at: datetime = ts_field()


class Rule(SQLModel, table=True):
    """A per-account rule: when `condition` matches a classified message, do `action`."""

    __tablename__ = "rule"
    id: uuid.UUID = id_field()
    tenant_id: uuid.UUID = fk_field("tenant.id", index=False)
    account_id: uuid.UUID = fk_field("account.id")
    name: str = Field(sa_type=sa.String(200))
    # e.g. {"is_spam": true} | {"category": "promotions"} | {"from_domain": "example.com"}
    condition: dict[str, Any] = jsonb_field()
    # e.g. {"type": "move", "folder_role": "junk"} | {"type": "label", "label": "promos"}
    action: dict[str, Any] = jsonb_field()
    position: int = Field(default=0)
    enabled: bool = Field(default=True)
    created_at: datetime = ts_field()
    updated_at: datetime = ts_field()


class TenantSpamModel(SQLModel, table=True):
    """A tenant's correction to the shipped spam model, fitted on its own labels only.

    `changes` counts label changes; a fit records the count it saw in `fitted_changes` and
    bumps `generation` (what a worker's cache of the model is keyed on). `model` is an `.npz`
    of plain arrays (services/classify/tenant.py), read without pickle.
    """

    __tablename__ = "tenant_spam_model"
    tenant_id: uuid.UUID = Field(
        sa_type=sa.Uuid, foreign_key="tenant.id", ondelete="CASCADE", primary_key=True
    )
    changes: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    fitted_changes: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    generation: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    n_spam: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    n_ham: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    fitted_at: datetime | None = ts_field(nullable=True)
    model: bytes | None = Field(default=None, sa_type=sa.LargeBinary)


class OutboundMessage(SQLModel, table=True):
    """The send ledger: written before and after SMTP DATA so a send happens at most once."""

    __tablename__ = "outbound_message"
    __table_args__ = (
        sa.UniqueConstraint("event_id"),
        # A delivery report names what bounced by its Message-ID (services/reports/link.py).
        sa.Index("ix_outbound_message_tenant_msgid", "tenant_id", "message_id_header"),
    )
    id: uuid.UUID = id_field()
    tenant_id: uuid.UUID = fk_field("tenant.id", index=False)
    account_id: uuid.UUID = fk_field("account.id")
    event_id: uuid.UUID | None = fk_field(
        "event.id", nullable=True, index=False, ondelete="SET NULL"
    )
    message_id_header: str = Field(sa_type=sa.Text)
    # pending -> sending -> sent | failed; "sending" found on a retry means the outcome is unknown.
    status: str = Field(default="pending", sa_type=_enum_str())
    recipients: list[str] = jsonb_field(list)
    server_reply: str | None = Field(default=None, sa_type=sa.Text)
    size: int = Field(default=0)
    created_at: datetime = ts_field()
    sending_at: datetime | None = ts_field(nullable=True)
    sent_at: datetime | None = ts_field(nullable=True)


class Thread(SQLModel, table=True):
    """A conversation of one account. Its counts, dates, subject and participants are kept by
    the `message_thread_track` trigger (migration 0009) on every change of a message, so no
    code path that writes messages can leave them stale; listing reads them without a scan."""

    __tablename__ = "thread"
    __table_args__ = (
        # Listing newest first with a (last_message_at, id) keyset cursor; threads whose
        # messages are all deleted stay out of the index.
        sa.Index(
            "ix_thread_account_last",
            "account_id",
            sa.text("last_message_at DESC"),
            sa.text("id DESC"),
            postgresql_where=sa.text("message_count > 0"),
        ),
        sa.Index(
            "ix_thread_tenant_last",
            "tenant_id",
            sa.text("last_message_at DESC"),
            sa.text("id DESC"),
            postgresql_where=sa.text("message_count > 0"),
        ),
    )
    id: uuid.UUID = id_field()
    tenant_id: uuid.UUID = fk_field("tenant.id", index=False)
    account_id: uuid.UUID = fk_field("account.id", index=False)
    subject: str | None = Field(default=None, sa_type=sa.Text)
    message_count: int = Field(default=0)
    unread_count: int = Field(default=0)
    participants: list[dict[str, Any]] = jsonb_field(list)
    first_message_at: datetime | None = ts_field(nullable=True)
    last_message_at: datetime | None = ts_field(nullable=True)
    created_at: datetime = ts_field()


class ThreadRef(SQLModel, table=True):
    """Every Message-ID an account has seen, its own or referenced (In-Reply-To, References,
    possibly not received yet), and the thread it belongs to: a reply joins its thread in
    whatever order the messages arrive."""

    __tablename__ = "thread_ref"
    __table_args__ = (sa.PrimaryKeyConstraint("account_id", "ref"),)
    account_id: uuid.UUID = Field(sa_type=sa.Uuid, foreign_key="account.id", ondelete="CASCADE")
    # The normalized id (database.thread_refs.normalize_ids).
    ref: str = Field(sa_type=sa.String(300))
    tenant_id: uuid.UUID = fk_field("tenant.id", index=False)
    thread_id: uuid.UUID = fk_field("thread.id")


# A thread's messages, newest first (GET /v1/messages?thread_id=, and the trigger's
# recomputation of last_message_at when a message leaves a thread).
sa.Index(
    "ix_message_thread",
    Message.__table__.c.thread_id,  # type: ignore[attr-defined]
    Message.__table__.c.sort_at.desc(),  # type: ignore[attr-defined]
    Message.__table__.c.id.desc(),  # type: ignore[attr-defined]
)


class Template(SQLModel, table=True):
    """A tenant's named mail template (Jinja2 syntax, rendered in a sandbox at send time)."""

    __tablename__ = "template"
    __table_args__ = (
        sa.UniqueConstraint("tenant_id", "name"),
        # Listing newest first with a (created_at, id) keyset cursor.
        sa.Index(
            "ix_template_tenant_created",
            "tenant_id",
            sa.text("created_at DESC"),
            sa.text("id DESC"),
        ),
    )
    id: uuid.UUID = id_field()
    tenant_id: uuid.UUID = fk_field("tenant.id", index=False)
    name: str = Field(sa_type=sa.String(100))
    subject: str = Field(sa_type=sa.Text)
    text: str = Field(sa_type=sa.Text)
    html: str | None = Field(default=None, sa_type=sa.Text)
    created_at: datetime = ts_field()
    updated_at: datetime = ts_field()


class PushLease(SQLModel, table=True):
    """Which push listener holds IDLE for an account, until when (services/imap/push.py).

    A listener renews its rows well before `expires_at`; a row past it belongs to a listener
    that died, and another one takes the account over.
    """

    __tablename__ = "push_lease"
    account_id: uuid.UUID = Field(
        sa_type=sa.Uuid, foreign_key="account.id", ondelete="CASCADE", primary_key=True
    )
    holder: str = Field(sa_type=sa.String(200), index=True)
    expires_at: datetime = ts_field()
    claimed_at: datetime = ts_field()


class TenantEvent(SQLModel, table=True):
    """An event told to the tenant's application (API.md "Outbound events"): written in the
    same transaction as the effect it reports (services/tenant_events/emit.py), then numbered
    per tenant (`seq`) and delivered to the tenant's endpoints and the feed."""

    __tablename__ = "tenant_event"
    __table_args__ = (
        sa.UniqueConstraint("tenant_id", "seq"),
        # The sequencer's scan (database/repositories/tenant_events/sequence.py).
        sa.Index(
            "ix_tenant_event_unnumbered", "created_at", postgresql_where=sa.text("seq IS NULL")
        ),
    )
    id: uuid.UUID = id_field()
    tenant_id: uuid.UUID = fk_field("tenant.id")
    type: str = Field(sa_type=sa.String(64))
    data: dict[str, Any] = jsonb_field()
    # Null until the sequencer numbers it; the feed and deliveries only see numbered rows.
    seq: int | None = Field(default=None, sa_type=sa.BigInteger, nullable=True)
    created_at: datetime = ts_field()


class OAuthApp(SQLModel, table=True):
    """A tenant's OAuth2 client at Google, Microsoft or another provider (docs/oauth.md).

    `config` holds the endpoints, scopes, mail hosts and allowed redirect origins (presets
    filled in at create); the client secret is only in `secret_ciphertext`.
    """

    __tablename__ = "oauth_app"
    id: uuid.UUID = id_field()
    tenant_id: uuid.UUID = fk_field("tenant.id")
    provider: str = Field(sa_type=_enum_str())
    client_id: str = Field(sa_type=sa.String(500))
    secret_ciphertext: str = Field(sa_type=sa.Text)
    config: dict[str, Any] = jsonb_field()
    created_at: datetime = ts_field()
    deleted_at: datetime | None = ts_field(nullable=True)


class OAuthToken(SQLModel, table=True):
    """An account's OAuth2 grant: tokens (encrypted), their expiry and the refresh lease.

    `generation` counts refreshes: a login that failed with generation n asks for a token of
    a later one. `lease_owner`/`lease_until` make one refresher per account across hosts
    (services/oauth/refresh.py), taken and released in short transactions.
    """

    __tablename__ = "oauth_token"
    id: uuid.UUID = id_field()
    tenant_id: uuid.UUID = fk_field("tenant.id")
    account_id: uuid.UUID = Field(
        sa_type=sa.Uuid, foreign_key="account.id", ondelete="CASCADE", unique=True
    )
    app_id: uuid.UUID = fk_field("oauth_app.id")
    ciphertext: str = Field(sa_type=sa.Text)
    expires_at: datetime | None = ts_field(nullable=True)
    generation: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    lease_owner: uuid.UUID | None = Field(default=None, sa_type=sa.Uuid, nullable=True)
    lease_until: datetime | None = ts_field(nullable=True)
    refreshed_at: datetime | None = ts_field(nullable=True)
    created_at: datetime = ts_field()
    updated_at: datetime = ts_field()


class WebhookEndpointStatus(enum.StrEnum):
    active = "active"
    disabled = "disabled"


class WebhookDeliveryStatus(enum.StrEnum):
    pending = "pending"
    retrying = "retrying"
    succeeded = "succeeded"
    failed = "failed"


class WebhookEndpoint(SQLModel, table=True):
    """A tenant's own webhook endpoint (API.md "Outbound events"); deliveries go to it from
    the delivery process (worker/deliverer.py)."""

    __tablename__ = "webhook_endpoint"
    id: uuid.UUID = id_field()
    tenant_id: uuid.UUID = fk_field("tenant.id")
    url: str = Field(sa_type=sa.String(2048))
    # Null: every type.
    event_types: list[str] | None = jsonb_field(nullable=True)
    description: str | None = Field(default=None, sa_type=sa.String(500), nullable=True)
    status: str = Field(default=WebhookEndpointStatus.active, sa_type=_enum_str(16))
    # Why it was disabled: "gone" (410), "failing" (POSTROOM_WEBHOOK_DISABLE_AFTER_S), "api".
    disabled_reason: str | None = Field(default=None, sa_type=sa.String(32), nullable=True)
    # The signing secret, encrypted like mail credentials (services/crypto.py).
    secret: str = Field(sa_type=sa.Text)
    # After a rotation the old secret signs too, until this time.
    previous_secret: str | None = Field(default=None, sa_type=sa.Text, nullable=True)
    previous_secret_expires_at: datetime | None = ts_field(nullable=True)
    # Set by the first failed attempt after a success; cleared by the next success.
    failing_since: datetime | None = ts_field(nullable=True)
    created_at: datetime = ts_field()
    updated_at: datetime = ts_field()


class OAuthState(SQLModel, table=True):
    """One hosted-flow authorization: its nonce is in the signed `state`; used once."""

    __tablename__ = "oauth_state"
    id: uuid.UUID = id_field()
    tenant_id: uuid.UUID = fk_field("tenant.id")
    app_id: uuid.UUID = fk_field("oauth_app.id")
    user_id: uuid.UUID = fk_field("user.id", index=False)
    redirect_to: str = Field(sa_type=sa.Text)
    login_hint: str | None = Field(default=None, sa_type=sa.String(320))
    expires_at: datetime = ts_field()
    used_at: datetime | None = ts_field(nullable=True)
    created_at: datetime = ts_field()


class DeliveryReport(SQLModel, table=True):
    """One recipient's line of a delivery report, linked to what postroom sent: the sent
    message's `delivery` (API.md "Delivery reports")."""

    __tablename__ = "delivery_report"
    __table_args__ = (
        sa.UniqueConstraint("outbound_id", "report_message_id", "email"),
        sa.Index("ix_delivery_report_report_message_id", "report_message_id"),
    )
    id: uuid.UUID = id_field()
    tenant_id: uuid.UUID = fk_field("tenant.id", index=False)
    outbound_id: uuid.UUID = fk_field("outbound_message.id", index=False)
    # The stored report message (its id is the `report_id` the API shows).
    report_message_id: uuid.UUID = fk_field("message.id", index=False)
    email: str = Field(sa_type=sa.String(320))
    kind: str = Field(sa_type=_enum_str())
    status: str | None = Field(default=None, sa_type=sa.String(16))
    hard: bool = Field(default=False)
    created_at: datetime = ts_field()


class Suppression(SQLModel, table=True):
    """An address a tenant's sends leave out: a hard bounce, a complaint, an unsubscribe or
    the tenant's own entry (API.md "Delivery reports")."""

    __tablename__ = "suppression"
    __table_args__ = (
        sa.PrimaryKeyConstraint("tenant_id", "email"),
        # Listing newest first with a (created_at, email) keyset cursor.
        sa.Index(
            "ix_suppression_tenant_created",
            "tenant_id",
            sa.text("created_at DESC"),
            sa.text("email DESC"),
        ),
    )
    tenant_id: uuid.UUID = Field(sa_type=sa.Uuid, foreign_key="tenant.id", ondelete="CASCADE")
    # Lowercased: one entry per address whatever case a send or a report writes it in.
    email: str = Field(sa_type=sa.String(320))
    reason: str = Field(sa_type=sa.String(64))
    # The report message that caused it; null for the API, unsubscribes, or a report since removed.
    report_id: uuid.UUID | None = fk_field(
        "message.id", nullable=True, index=False, ondelete="SET NULL"
    )
    created_at: datetime = ts_field()


class WebhookDelivery(SQLModel, table=True):
    """One tenant event owed to one endpoint, with its attempts (the attempt log).

    The process that claims a due row moves `next_attempt_at` past the request's deadline
    (its lease): a process that dies mid-request leaves the row due again once that passes.
    """

    __tablename__ = "webhook_delivery"
    __table_args__ = (
        sa.UniqueConstraint("endpoint_id", "event_id"),
        # The claim's scan: due rows only.
        sa.Index(
            "ix_webhook_delivery_due",
            "next_attempt_at",
            postgresql_where=sa.text("status IN ('pending', 'retrying')"),
        ),
        # The attempt log, newest first with a (created_at, id) keyset cursor.
        sa.Index(
            "ix_webhook_delivery_endpoint_created",
            "endpoint_id",
            sa.text("created_at DESC"),
            sa.text("id DESC"),
        ),
    )
    id: uuid.UUID = id_field()
    tenant_id: uuid.UUID = fk_field("tenant.id", index=False)
    endpoint_id: uuid.UUID = fk_field("webhook_endpoint.id", index=False)
    event_id: uuid.UUID = fk_field("tenant_event.id")
    status: str = Field(default=WebhookDeliveryStatus.pending, sa_type=_enum_str(16))
    attempts: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    last_status_code: int | None = Field(default=None, sa_type=sa.SmallInteger, nullable=True)
    # What went wrong, in words ("timed out", "status 503"): never the receiver's text.
    last_error: str | None = Field(default=None, sa_type=sa.String(200), nullable=True)
    next_attempt_at: datetime | None = ts_field(nullable=True)
    # The retry schedule counts from here.
    first_attempt_at: datetime | None = ts_field(nullable=True)
    last_attempt_at: datetime | None = ts_field(nullable=True)
    created_at: datetime = ts_field()
    updated_at: datetime = ts_field()


class WebhookFanout(SQLModel, table=True):
    """How far a tenant's numbered events have been turned into deliveries: every seq up to
    `last_seq` has its rows, nothing above it has (services/tenant_events/fanout.py)."""

    __tablename__ = "webhook_fanout"
    tenant_id: uuid.UUID = Field(
        sa_type=sa.Uuid, foreign_key="tenant.id", ondelete="CASCADE", primary_key=True
    )
    last_seq: int = Field(default=0, sa_type=sa.BigInteger)
