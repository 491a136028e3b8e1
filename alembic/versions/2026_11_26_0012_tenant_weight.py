"""tenant.weight: how many lanes of each latency class a tenant's tasks are spread over

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-26 13:10:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0012'
down_revision: str | None = '0011'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        'tenant',
        sa.Column('weight', sa.SmallInteger(), server_default=sa.text('1'), nullable=False),
    )


def downgrade() -> None:
    op.drop_column('tenant', 'weight')
