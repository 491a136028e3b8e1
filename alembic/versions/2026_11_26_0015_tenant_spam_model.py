"""classifier: a tenant's fitted correction model; feedback keeps hashed buckets, not words

Revision ID: 0015
Revises: 0013
Create Date: 2026-11-26 18:15:00.000000

The per-tenant naive-Bayes counts (`token_stat`, keyed by the mail's own words) give way to a
small logistic model fitted on the tenant's labelled mails (services/classify/tenant.py).
Each label keeps the mail's hashed feature buckets (`classifier_feedback.features`); the word
lists in `classifier_feedback.tokens` are cleared and `token_stat` dropped, so nothing stored
for the classifier holds a mail's text. Labels given before this revision have no buckets and
no longer count; they stay as rows (what was labelled, and by whom).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("classifier_feedback", sa.Column("features", sa.LargeBinary(), nullable=True))
    op.execute("UPDATE classifier_feedback SET tokens = '{}'::jsonb")
    op.create_table(
        "tenant_spam_model",
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("changes", sa.Integer(), server_default="0", nullable=False),
        sa.Column("fitted_changes", sa.Integer(), server_default="0", nullable=False),
        sa.Column("generation", sa.Integer(), server_default="0", nullable=False),
        sa.Column("n_spam", sa.Integer(), server_default="0", nullable=False),
        sa.Column("n_ham", sa.Integer(), server_default="0", nullable=False),
        sa.Column("fitted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("model", sa.LargeBinary(), nullable=True),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenant.id"],
            name=op.f("fk_tenant_spam_model_tenant_id_tenant"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("tenant_id", name=op.f("pk_tenant_spam_model")),
    )
    op.drop_table("token_stat")


def downgrade() -> None:
    op.create_table(
        "token_stat",
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("token", sa.String(length=100), nullable=False),
        sa.Column("spam", sa.Integer(), nullable=False),
        sa.Column("ham", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenant.id"],
            name=op.f("fk_token_stat_tenant_id_tenant"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("tenant_id", "token", name=op.f("pk_token_stat")),
    )
    op.drop_table("tenant_spam_model")
    op.drop_column("classifier_feedback", "features")
