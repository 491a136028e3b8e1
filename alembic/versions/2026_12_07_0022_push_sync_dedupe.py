"""event: at most one unfinished push sync per (account, folder)

Revision ID: 0022
Revises: 0018
Create Date: 2026-12-07 23:50:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0022"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_UNFINISHED = "status IN ('received', 'queued', 'processing', 'retrying')"


def upgrade() -> None:
    # Duplicates a flood left behind (waiting ones only; the newest of each pair stays) would
    # stop the unique index from being built.
    op.execute(
        sa.text(
            "UPDATE event SET status = 'ignored', finished_at = now(), updated_at = now() "
            "WHERE id IN (SELECT id FROM (SELECT id, row_number() OVER (PARTITION BY account_id, "
            "coalesce(task_kwargs ->> 'folder', '') ORDER BY (status = 'processing') DESC, "
            "received_at DESC) AS n FROM event WHERE source = 'push' AND " + _UNFINISHED + ") d "
            "WHERE n > 1)"
        )
    )
    # A push sync the listener queues while another of the same folder has not finished is
    # not inserted (INSERT ... ON CONFLICT DO NOTHING): an IMAP server naming a folder a
    # thousand times costs one row, not a thousand. `processing` is included so that the one
    # row's own moves (processing -> retrying -> queued) never conflict.
    op.create_index(
        "ux_event_push_unfinished",
        "event",
        ["account_id", sa.text("(coalesce(task_kwargs ->> 'folder', ''))")],
        unique=True,
        postgresql_where=sa.text("source = 'push' AND " + _UNFINISHED),
    )


def downgrade() -> None:
    op.drop_index("ux_event_push_unfinished", table_name="event")
