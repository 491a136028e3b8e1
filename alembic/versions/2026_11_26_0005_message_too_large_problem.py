"""message.too_large and message.problem: a bad mail is flagged, the sync moves on

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26 12:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0005'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        'message',
        sa.Column('too_large', sa.Boolean(), server_default=sa.false(), nullable=False),
    )
    op.add_column('message', sa.Column('problem', sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column('message', 'problem')
    op.drop_column('message', 'too_large')
