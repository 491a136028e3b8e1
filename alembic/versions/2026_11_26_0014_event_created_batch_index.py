"""event: index of waiting Nylas message.created notifications by grant (batched drain)

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-26 18:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Partial, like ix_event_nylas_object_waiting: only message.created notifications no worker
    # has taken, so it is as small as the backlog. A process task takes its grant's newest
    # ones from it to store, classify and rule them with its own (worker/batch.py).
    op.create_index(
        "ix_event_nylas_created_waiting",
        "event",
        [
            sa.text(
                "(coalesce(payload #>> '{data,grant_id}', payload #>> '{data,object,grant_id}'))"
            ),
            "received_at",
        ],
        unique=False,
        postgresql_where=sa.text(
            "source = 'nylas' AND type = 'message.created' AND status IN ('received', 'queued')"
        ),
    )


def downgrade() -> None:
    op.drop_index("ix_event_nylas_created_waiting", table_name="event")
