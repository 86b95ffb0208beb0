"""Helpdesk connectors: where each connector message came from (connector_refs), and
write-back calls in the webhook outbox (webhook_deliveries.connector and .method).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 17:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('connector_refs',
    sa.Column('id', ID, nullable=False),
    sa.Column('source', sa.String(length=64), nullable=False),
    sa.Column('external_id', sa.String(length=200), nullable=False),
    sa.Column('thread', sa.String(length=200), nullable=True),
    sa.Column('refs', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('source', 'external_id', name='uq_connector_refs_source_external_id')
    )
    with op.batch_alter_table('connector_refs', schema=None) as batch_op:
        batch_op.create_index('ix_connector_refs_thread', ['source', 'thread'], unique=False)
    with op.batch_alter_table('webhook_deliveries', schema=None) as batch_op:
        batch_op.add_column(sa.Column('connector', sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column('method', sa.String(length=8), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('webhook_deliveries', schema=None) as batch_op:
        batch_op.drop_column('method')
        batch_op.drop_column('connector')
    with op.batch_alter_table('connector_refs', schema=None) as batch_op:
        batch_op.drop_index('ix_connector_refs_thread')
    op.drop_table('connector_refs')
