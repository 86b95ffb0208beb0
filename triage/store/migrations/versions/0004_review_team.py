"""Review by a team: claims on cases, double review and its stage, and each review
decision's stage, finality and claim time.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 18:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('review_decisions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('stage', sa.String(length=16), nullable=False, server_default='single'))
        batch_op.add_column(sa.Column('final', sa.Boolean(), nullable=False, server_default=sa.true()))
        batch_op.add_column(sa.Column('claimed_at', TS, nullable=True))
    with op.batch_alter_table('review_decisions', schema=None) as batch_op:
        batch_op.alter_column('stage', server_default=None)
        batch_op.alter_column('final', server_default=None)
    op.create_table('review_claims',
    sa.Column('case_id', ID, nullable=False),
    sa.Column('reviewer', sa.String(length=200), nullable=False),
    sa.Column('stage', sa.String(length=16), nullable=False),
    sa.Column('claimed_at', TS, nullable=False),
    sa.Column('expires_at', TS, nullable=False),
    sa.ForeignKeyConstraint(['case_id'], ['cases.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('case_id')
    )
    with op.batch_alter_table('review_claims', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_review_claims_expires_at'), ['expires_at'], unique=False)
    op.create_table('double_reviews',
    sa.Column('case_id', ID, nullable=False),
    sa.Column('stage', sa.String(length=16), nullable=False),
    sa.Column('reason', sa.String(length=16), nullable=False),
    sa.Column('first_reviewer', sa.String(length=200), nullable=False),
    sa.Column('second_reviewer', sa.String(length=200), nullable=True),
    sa.Column('adjudicator', sa.String(length=200), nullable=True),
    sa.Column('created_at', TS, nullable=False),
    sa.Column('finalised_at', TS, nullable=True),
    sa.ForeignKeyConstraint(['case_id'], ['cases.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('case_id')
    )
    with op.batch_alter_table('double_reviews', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_double_reviews_stage'), ['stage'], unique=False)


def downgrade() -> None:
    op.drop_table('double_reviews')
    op.drop_table('review_claims')
    with op.batch_alter_table('review_decisions', schema=None) as batch_op:
        for column in ('claimed_at', 'final', 'stage'):
            batch_op.drop_column(column)
