"""Past one machine: the database model store (model files and the current pointer) and
indexes that keep the review queue, case lists and dashboard independent of history.

Revision ID: 0007
Revises: 0003
Create Date: 2026-12-02 18:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

TS = sa.DateTime(timezone=True)

revision = '0007'
down_revision = '0003'
branch_labels = None
depends_on = None

# name -> (table, columns): composite indexes matching the ORDER BY and filters of normal requests
INDEXES: dict[str, tuple[str, list[str]]] = {}


def upgrade() -> None:
    op.create_table(
        'model_files',
        sa.Column('version', sa.String(length=64), nullable=False),
        sa.Column('path', sa.String(length=500), nullable=False),
        sa.Column('content', sa.LargeBinary(), nullable=False),
        sa.Column('stored_at', TS, nullable=False),
        sa.PrimaryKeyConstraint('version', 'path'),
    )
    op.create_table(
        'model_pointer',
        sa.Column('id', sa.Integer(), autoincrement=False, nullable=False),
        sa.Column('version', sa.String(length=64), nullable=False),
        sa.Column('changed_at', TS, nullable=False),
        sa.PrimaryKeyConstraint('id'),
    )
    for name, (table, columns) in INDEXES.items():
        op.create_index(name, table, columns, unique=False)


def downgrade() -> None:
    for name, (table, _columns) in reversed(list(INDEXES.items())):
        op.drop_index(name, table_name=table)
    op.drop_table('model_pointer')
    op.drop_table('model_files')
