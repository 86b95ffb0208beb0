"""Early warning and follow-up: product, batch and order on cases, surge detection's mark,
first-contact owner and the follow-up call; surge alerts, their cases and recall incidents.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 18:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('cases', schema=None) as batch_op:
        batch_op.add_column(sa.Column('product', sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column('batch', sa.String(length=100), nullable=True))
        batch_op.add_column(sa.Column('order_id', sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column('product_source', sa.String(length=8), nullable=True))
        batch_op.add_column(sa.Column('surveyed_at', TS, nullable=True))
        batch_op.add_column(sa.Column('owner', sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column('followup_due_at', TS, nullable=True))
        batch_op.add_column(sa.Column('followed_up_at', TS, nullable=True))
        batch_op.add_column(sa.Column('satisfaction', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('followup_warn_at', TS, nullable=True))
        batch_op.add_column(sa.Column('followup_warned', sa.Boolean(), nullable=False,
                                      server_default=sa.false()))
        batch_op.add_column(sa.Column('followup_breached', sa.Boolean(), nullable=False,
                                      server_default=sa.false()))
        batch_op.create_index(batch_op.f('ix_cases_product'), ['product'], unique=False)
        batch_op.create_index(batch_op.f('ix_cases_surveyed_at'), ['surveyed_at'], unique=False)
    with op.batch_alter_table('cases', schema=None) as batch_op:
        batch_op.alter_column('followup_warned', server_default=None)
        batch_op.alter_column('followup_breached', server_default=None)
    op.create_table('surge_alerts',
    sa.Column('id', ID, nullable=False),
    sa.Column('product', sa.String(length=200), nullable=False),
    sa.Column('dispute_type', sa.String(length=32), nullable=True),
    sa.Column('scopes', sa.JSON(), nullable=False),
    sa.Column('batch', sa.String(length=100), nullable=True),
    sa.Column('window_start', TS, nullable=False),
    sa.Column('window_end', TS, nullable=False),
    sa.Column('count', sa.Integer(), nullable=False),
    sa.Column('expected', sa.Float(), nullable=False),
    sa.Column('p_value', sa.Float(), nullable=False),
    sa.Column('alpha', sa.Float(), nullable=False),
    sa.Column('safety_count', sa.Integer(), nullable=False),
    sa.Column('first_case_at', TS, nullable=False),
    sa.Column('last_case_at', TS, nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('detected_at', TS, nullable=False),
    sa.Column('updated_at', TS, nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('surge_alerts', schema=None) as batch_op:
        batch_op.create_index('ix_surge_alerts_product_status', ['product', 'status'], unique=False)
        batch_op.create_index(batch_op.f('ix_surge_alerts_status'), ['status'], unique=False)
    op.create_table('surge_alert_cases',
    sa.Column('case_id', ID, nullable=False),
    sa.Column('alert_id', ID, nullable=False),
    sa.Column('joined_at', TS, nullable=False),
    sa.ForeignKeyConstraint(['alert_id'], ['surge_alerts.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['case_id'], ['cases.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('case_id')
    )
    with op.batch_alter_table('surge_alert_cases', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_surge_alert_cases_alert_id'), ['alert_id'], unique=False)
    op.create_table('recall_incidents',
    sa.Column('id', ID, nullable=False),
    sa.Column('alert_id', ID, nullable=False),
    sa.Column('product', sa.String(length=200), nullable=False),
    sa.Column('batch', sa.String(length=100), nullable=True),
    sa.Column('owner', sa.String(length=200), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('due_at', TS, nullable=False),
    sa.Column('note', sa.Text(), nullable=True),
    sa.Column('created_at', TS, nullable=False),
    sa.Column('updated_at', TS, nullable=False),
    sa.ForeignKeyConstraint(['alert_id'], ['surge_alerts.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('alert_id')
    )
    with op.batch_alter_table('recall_incidents', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_recall_incidents_status'), ['status'], unique=False)


def downgrade() -> None:
    op.drop_table('recall_incidents')
    op.drop_table('surge_alert_cases')
    op.drop_table('surge_alerts')
    with op.batch_alter_table('cases', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_cases_surveyed_at'))
        batch_op.drop_index(batch_op.f('ix_cases_product'))
        for column in ('followup_breached', 'followup_warned', 'followup_warn_at', 'satisfaction', 'followed_up_at', 'followup_due_at', 'owner',
                       'surveyed_at', 'product_source', 'order_id', 'batch', 'product'):
            batch_op.drop_column(column)
