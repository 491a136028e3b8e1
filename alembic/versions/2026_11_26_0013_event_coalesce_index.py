"""event: index of waiting Nylas notifications by the object they name (coalescing)

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-26 15:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Partial: only notifications not yet taken by a worker, so the index stays as small as
    # the backlog, whatever the size of the event ledger.
    op.create_index(
        "ix_event_nylas_object_waiting",
        "event",
        [sa.text("(payload #>> '{data,object,id}')")],
        unique=False,
        postgresql_where=sa.text(
            "source = 'nylas' AND status IN ('received', 'queued', 'retrying')"
        ),
    )


def downgrade() -> None:
    op.drop_index("ix_event_nylas_object_waiting", table_name="event")
