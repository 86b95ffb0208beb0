"""Background work on a task queue: backfill jobs and their chunks (``triage backfill``).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 17:50:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'backfill_jobs',
        sa.Column('id', ID, primary_key=True),
        sa.Column('name', sa.String(length=500), nullable=False),
        sa.Column('fingerprint', sa.String(length=100), nullable=False),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('chunk_size', sa.Integer(), nullable=False),
        sa.Column('total_chunks', sa.Integer(), nullable=False),
        sa.Column('total_messages', sa.Integer(), nullable=False),
        sa.Column('actor', sa.String(length=200), nullable=False),
        sa.Column('created_at', TS, nullable=False),
        sa.Column('finished_at', TS, nullable=True),
        sa.UniqueConstraint('fingerprint', name='uq_backfill_jobs_fingerprint'),
    )
    op.create_table(
        'backfill_chunks',
        sa.Column('id', ID, primary_key=True),
        sa.Column('job_id', ID, sa.ForeignKey('backfill_jobs.id', ondelete='CASCADE'), nullable=False),
        sa.Column('seq', sa.Integer(), nullable=False),
        sa.Column('messages', sa.JSON(), nullable=False),
        sa.Column('queued_until', TS, nullable=True),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.Column('created', sa.Integer(), nullable=False),
        sa.Column('existing', sa.Integer(), nullable=False),
        sa.Column('failed', sa.Integer(), nullable=False),
        sa.Column('errors', sa.JSON(), nullable=True),
        sa.Column('done_at', TS, nullable=True),
        sa.UniqueConstraint('job_id', 'seq', name='uq_backfill_chunks_job_seq'),
    )
    op.create_index('ix_backfill_chunks_todo', 'backfill_chunks', ['job_id', 'done_at'])


def downgrade() -> None:
    op.drop_index('ix_backfill_chunks_todo', table_name='backfill_chunks')
    op.drop_table('backfill_chunks')
    op.drop_table('backfill_jobs')
