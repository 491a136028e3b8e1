"""threads: thread and thread_ref tables, message.thread_id as the thread's UUID, the trigger
that keeps each thread's counts, dates, subject and participants

Revision ID: 0009
Revises: 0005
Create Date: 2026-11-26 12:30:00

Existing messages are threaded once here: a Nylas message by its Nylas thread id, any other
by its own Message-ID (replies stored before this revision are not linked to their parents;
messages stored from now on are, and a later reply that references both joins them). The
Nylas thread ids are replaced by thread UUIDs; downgrade does not restore them (a Nylas
sync writes them again).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0009"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The same rules as database.thread_refs: an id is the text between < and >, or the whole header
# when it has no brackets and no spaces; ids over 250 characters are replaced by a digest.
_OWN_REF = r"""
CASE WHEN length(raw) > 250 THEN '#' || encode(sha256(convert_to(raw, 'UTF8')), 'hex')
     ELSE raw END
"""
_RAW_REF = r"""
coalesce(substring(m.message_id_header from '<([^<>[:space:]]+)>'),
         CASE WHEN m.message_id_header ~ '^[^<>[:space:]]+$' THEN m.message_id_header END)
"""

# plpgsql, not SQL: an SQL function with subqueries is planned again on every call, which
# made each stored message cost ~1.5 ms more; this one costs ~0.15 ms. The thread's
# participants so far, then the sender, then the first 50 recipients: one entry per address
# (case-insensitive), first seen first, at most 20.
_PARTICIPANTS_FN = r"""
CREATE FUNCTION thread_participants(cur jsonb, from_name text, from_email text, others jsonb)
RETURNS jsonb LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
  result jsonb := coalesce(cur, '[]'::jsonb);
  seen text[];
  cand jsonb;
BEGIN
  IF jsonb_array_length(result) >= 20 THEN
    RETURN result;
  END IF;
  SELECT coalesce(array_agg(lower(e->>'email')), '{}') INTO seen
  FROM jsonb_array_elements(result) AS e;
  IF coalesce(from_email, '') <> '' AND NOT lower(from_email) = ANY(seen) THEN
    result := result || jsonb_build_array(jsonb_build_object('name', from_name, 'email', from_email));
    seen := seen || lower(from_email);
  END IF;
  IF jsonb_typeof(others) = 'array' THEN
    FOR cand IN SELECT e FROM jsonb_array_elements(others) AS e LIMIT 50 LOOP
      EXIT WHEN jsonb_array_length(result) >= 20;
      IF jsonb_typeof(cand) = 'object' AND coalesce(cand->>'email', '') <> ''
         AND NOT lower(cand->>'email') = ANY(seen) THEN
        result := result || jsonb_build_array(
          jsonb_build_object('name', cand->>'name', 'email', cand->>'email'));
        seen := seen || lower(cand->>'email');
      END IF;
    END LOOP;
  END IF;
  RETURN result;
END
$$
"""

_UUID_FN = r"""
CREATE FUNCTION thread_uuid(t text) RETURNS uuid LANGUAGE sql IMMUTABLE AS $$
  SELECT CASE WHEN t ~ '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
              THEN t::uuid END
$$
"""

# Every write to message passes here, whatever code path made it (sync, webhook, flag
# change, delete, merge of two threads), so a thread's numbers cannot drift from its
# messages. A message counts while it is not deleted.
_TRACK_FN = r"""
CREATE FUNCTION message_thread_track() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  old_tid uuid;
  new_tid uuid;
BEGIN
  IF TG_OP <> 'INSERT' AND OLD.deleted_at IS NULL THEN
    old_tid := thread_uuid(OLD.thread_id);
  END IF;
  IF TG_OP <> 'DELETE' AND NEW.deleted_at IS NULL THEN
    new_tid := thread_uuid(NEW.thread_id);
  END IF;
  IF old_tid IS NOT NULL AND old_tid = new_tid THEN
    IF OLD.unread IS DISTINCT FROM NEW.unread OR OLD.sort_at IS DISTINCT FROM NEW.sort_at THEN
      UPDATE thread SET
        unread_count = unread_count + NEW.unread::int - OLD.unread::int,
        last_message_at = (SELECT max(m.sort_at) FROM message m
                           WHERE m.thread_id = NEW.thread_id AND m.deleted_at IS NULL)
      WHERE id = new_tid;
    END IF;
    RETURN NULL;
  END IF;
  IF old_tid IS NOT NULL THEN
    UPDATE thread SET
      message_count = message_count - 1,
      unread_count = unread_count - OLD.unread::int,
      last_message_at = CASE
        WHEN OLD.sort_at < last_message_at THEN last_message_at
        ELSE (SELECT max(m.sort_at) FROM message m
              WHERE m.thread_id = OLD.thread_id AND m.deleted_at IS NULL)
      END
    WHERE id = old_tid;
  END IF;
  IF new_tid IS NOT NULL THEN
    UPDATE thread SET
      message_count = message_count + 1,
      unread_count = unread_count + NEW.unread::int,
      last_message_at = greatest(last_message_at, NEW.sort_at),
      subject = CASE WHEN first_message_at IS NULL OR NEW.sort_at < first_message_at
                     THEN NEW.subject ELSE subject END,
      first_message_at = least(first_message_at, NEW.sort_at),
      participants = CASE WHEN jsonb_array_length(participants) >= 20 THEN participants
        ELSE thread_participants(participants, NEW.from_name, NEW.from_email,
                                 NEW.to_addrs || NEW.cc_addrs) END
    WHERE id = new_tid;
  END IF;
  RETURN NULL;
END
$$
"""

# A safety net for any writer that does not thread (code that predates threads, a script):
# a live message stored without a thread UUID gets a thread of its own, so every message
# has one. The id is the one database.repositories.messages.threads.derived_id("msg", ...) computes.
_DEFAULT_FN = r"""
CREATE FUNCTION message_thread_default() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.deleted_at IS NULL AND thread_uuid(NEW.thread_id) IS NULL THEN
    NEW.thread_id := md5('msg:' || NEW.account_id::text || ':' || NEW.provider_id)::uuid::text;
    INSERT INTO thread (id, tenant_id, account_id, message_count, unread_count, participants)
    VALUES (NEW.thread_id::uuid, NEW.tenant_id, NEW.account_id, 0, 0, '[]'::jsonb)
    ON CONFLICT (id) DO NOTHING;
  END IF;
  RETURN NEW;
END
$$
"""

_TRIGGER = """
CREATE TRIGGER message_thread_track
AFTER INSERT OR DELETE OR UPDATE OF thread_id, deleted_at, unread, sort_at ON message
FOR EACH ROW EXECUTE FUNCTION message_thread_track()
"""
_DEFAULT_TRIGGER = """
CREATE TRIGGER message_thread_default BEFORE INSERT ON message
FOR EACH ROW EXECUTE FUNCTION message_thread_default()
"""


def _create_tables() -> None:
    op.create_table(
        "thread",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("account_id", sa.Uuid(), nullable=False),
        sa.Column("subject", sa.Text(), nullable=True),
        sa.Column("message_count", sa.Integer(), nullable=False),
        sa.Column("unread_count", sa.Integer(), nullable=False),
        sa.Column("participants", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("first_message_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_message_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["account.id"],
            name=op.f("fk_thread_account_id_account"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenant.id"], name=op.f("fk_thread_tenant_id_tenant"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_thread")),
    )
    for name, col in (("ix_thread_account_last", "account_id"), ("ix_thread_tenant_last", "tenant_id")):
        op.create_index(
            name,
            "thread",
            [col, sa.text("last_message_at DESC"), sa.text("id DESC")],
            unique=False,
            postgresql_where=sa.text("message_count > 0"),
        )
    op.create_table(
        "thread_ref",
        sa.Column("account_id", sa.Uuid(), nullable=False),
        sa.Column("ref", sa.String(length=300), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("thread_id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["account.id"],
            name=op.f("fk_thread_ref_account_id_account"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenant.id"],
            name=op.f("fk_thread_ref_tenant_id_tenant"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["thread_id"],
            ["thread.id"],
            name=op.f("fk_thread_ref_thread_id_thread"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("account_id", "ref", name=op.f("pk_thread_ref")),
    )
    op.create_index(op.f("ix_thread_ref_thread_id"), "thread_ref", ["thread_id"], unique=False)
    op.create_index(
        "ix_message_thread",
        "message",
        ["thread_id", sa.text("sort_at DESC"), sa.text("id DESC")],
        unique=False,
    )


def _backfill() -> None:
    # Nylas messages: their thread's UUID is derived from the Nylas thread id (as
    # database.repositories.messages.threads.provider_thread_id does); any other message gets the
    # thread of its own Message-ID, or one of its own.
    op.execute(
        f"""
        UPDATE message SET thread_id = s.thread_id
        FROM (
          SELECT m.id,
                 (CASE WHEN a.provider = 'nylas' AND m.thread_id IS NOT NULL
                       THEN md5('nylas:' || m.account_id::text || ':' || m.thread_id)
                       WHEN r.ref IS NOT NULL
                       THEN md5('ref:' || m.account_id::text || ':' || r.ref)
                       ELSE md5('msg:' || m.account_id::text || ':' || m.provider_id)
                  END)::uuid::text AS thread_id
          FROM message m
          JOIN account a ON a.id = m.account_id
          CROSS JOIN LATERAL (SELECT {_RAW_REF} AS raw) x
          CROSS JOIN LATERAL (SELECT {_OWN_REF} AS ref) r
        ) s
        WHERE message.id = s.id
        """
    )
    op.execute(
        """
        INSERT INTO thread (id, tenant_id, account_id, subject, message_count, unread_count,
                            participants, first_message_at, last_message_at)
        SELECT m.thread_id::uuid, min(m.tenant_id::text)::uuid, m.account_id,
               (array_agg(m.subject ORDER BY m.sort_at) FILTER (WHERE m.deleted_at IS NULL))[1],
               count(*) FILTER (WHERE m.deleted_at IS NULL),
               count(*) FILTER (WHERE m.deleted_at IS NULL AND m.unread),
               '[]'::jsonb,
               min(m.sort_at) FILTER (WHERE m.deleted_at IS NULL),
               max(m.sort_at) FILTER (WHERE m.deleted_at IS NULL)
        FROM message m GROUP BY m.thread_id, m.account_id
        """
    )
    op.execute(
        """
        UPDATE thread t SET participants = (
          SELECT coalesce(jsonb_agg(jsonb_build_object('name', p.from_name, 'email', p.from_email)
                                    ORDER BY p.sort_at), '[]'::jsonb)
          FROM (SELECT DISTINCT ON (lower(m.from_email)) m.from_name, m.from_email, m.sort_at
                FROM message m
                WHERE m.thread_id = t.id::text AND m.deleted_at IS NULL
                  AND coalesce(m.from_email, '') <> ''
                ORDER BY lower(m.from_email), m.sort_at
                LIMIT 20) p)
        """
    )
    op.execute(
        f"""
        INSERT INTO thread_ref (account_id, ref, tenant_id, thread_id)
        SELECT m.account_id, r.ref, m.tenant_id, m.thread_id::uuid
        FROM message m,
             LATERAL (SELECT {_RAW_REF} AS raw) x,
             LATERAL (SELECT {_OWN_REF} AS ref) r
        WHERE r.ref IS NOT NULL
        ON CONFLICT (account_id, ref) DO NOTHING
        """
    )


def upgrade() -> None:
    _create_tables()
    _backfill()
    op.execute(_UUID_FN)
    op.execute(_PARTICIPANTS_FN)
    op.execute(_TRACK_FN)
    op.execute(_TRIGGER)
    op.execute(_DEFAULT_FN)
    op.execute(_DEFAULT_TRIGGER)


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS message_thread_default ON message")
    op.execute("DROP FUNCTION IF EXISTS message_thread_default()")
    op.execute("DROP TRIGGER IF EXISTS message_thread_track ON message")
    op.execute("DROP FUNCTION IF EXISTS message_thread_track()")
    op.execute("DROP FUNCTION IF EXISTS thread_participants(jsonb, text, text, jsonb)")
    op.execute("DROP FUNCTION IF EXISTS thread_uuid(text)")
    op.drop_index("ix_message_thread", table_name="message")
    op.drop_index(op.f("ix_thread_ref_thread_id"), table_name="thread_ref")
    op.drop_table("thread_ref")
    op.drop_index("ix_thread_tenant_last", table_name="thread", postgresql_where=sa.text("message_count > 0"))
    op.drop_index("ix_thread_account_last", table_name="thread", postgresql_where=sa.text("message_count > 0"))
    op.drop_table("thread")
