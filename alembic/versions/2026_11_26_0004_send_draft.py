"""send_draft: a send's recipients, subject and bodies move out of the task kwargs

Existing send events get their draft copied out of `task_kwargs`, and the mail is then removed
from their `task_kwargs`, `payload` and dead letters, so a replay reads the draft like a new
send. (Exception messages of old dead letters are left as they were.)

Revision ID: 0004
Revises: 0001
Create Date: 2026-11-26 12:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from alembic import op

revision: str = "0004"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SEND_TASK = "postroom.mail.send"
# The task kwargs that used to carry the mail.
MAIL_KEYS = (
    "ARRAY['to', 'cc', 'bcc', 'subject', 'body_text', 'body_html', "
    "'attachment_ids', 'reply_to_message_id']"
)


def upgrade() -> None:
    op.create_table(
        "send_draft",
        sa.Column("event_id", sa.Uuid(), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("to_addrs", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("cc_addrs", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("bcc_addrs", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("html", sa.Text(), nullable=True),
        sa.Column("reply_to_message_id", sa.Uuid(), nullable=True),
        sa.Column("attachment_ids", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["event_id"],
            ["event.id"],
            name=op.f("fk_send_draft_event_id_event"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenant.id"],
            name=op.f("fk_send_draft_tenant_id_tenant"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("event_id", name=op.f("pk_send_draft")),
    )
    op.execute(
        f"""
        INSERT INTO send_draft (event_id, tenant_id, to_addrs, cc_addrs, bcc_addrs, subject,
                                text, html, reply_to_message_id, attachment_ids, created_at)
        SELECT id, tenant_id,
               coalesce(task_kwargs->'to', '[]'::jsonb),
               coalesce(task_kwargs->'cc', '[]'::jsonb),
               coalesce(task_kwargs->'bcc', '[]'::jsonb),
               coalesce(task_kwargs->>'subject', ''),
               coalesce(task_kwargs->>'body_text', ''),
               task_kwargs->>'body_html',
               CASE WHEN task_kwargs->>'reply_to_message_id' ~* '^[0-9a-f-]{{36}}$'
                    THEN (task_kwargs->>'reply_to_message_id')::uuid END,
               coalesce(task_kwargs->'attachment_ids', '[]'::jsonb),
               received_at
        FROM event
        WHERE task_name = '{SEND_TASK}' AND tenant_id IS NOT NULL AND task_kwargs ? 'to'
        ON CONFLICT (event_id) DO NOTHING
        """
    )
    op.execute(
        f"""
        UPDATE event
        SET task_kwargs = task_kwargs - {MAIL_KEYS},
            payload = (payload - {MAIL_KEYS})
                || CASE WHEN jsonb_typeof(payload->'kwargs') = 'object'
                        THEN jsonb_build_object('kwargs', (payload->'kwargs') - {MAIL_KEYS})
                        ELSE '{{}}'::jsonb END
        WHERE task_name = '{SEND_TASK}'
        """
    )
    op.execute(
        f"UPDATE dead_letter SET kwargs = kwargs - {MAIL_KEYS} WHERE task_name = '{SEND_TASK}'"
    )


def downgrade() -> None:
    # The previous code reads the mail from the task kwargs: put it back there first.
    op.execute(
        f"""
        UPDATE event e
        SET task_kwargs = e.task_kwargs || jsonb_build_object(
                'to', d.to_addrs, 'cc', d.cc_addrs, 'bcc', d.bcc_addrs,
                'subject', d.subject, 'body_text', d.text, 'body_html', d.html,
                'attachment_ids', d.attachment_ids,
                'reply_to_message_id', d.reply_to_message_id::text)
        FROM send_draft d
        WHERE d.event_id = e.id AND e.task_name = '{SEND_TASK}'
        """
    )
    op.drop_table("send_draft")
