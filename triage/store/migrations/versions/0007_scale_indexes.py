"""Past one machine: the database model store (model files and the current pointer) and
indexes that keep the review queue, case lists and dashboard independent of history.

Revision ID: 0007
Revises: 0004
Create Date: 2026-12-02 18:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

TS = sa.DateTime(timezone=True)

revision = '0007'
down_revision = '0004'
branch_labels = None
depends_on = None

# name -> (table, columns): composite indexes matching the ORDER BY and filters of normal requests
INDEXES: dict[str, tuple[str, list[str]]] = {
    'ix_cases_status_id': ('cases', ['status', 'id']),
    'ix_sla_events_kind_id': ('sla_events', ['kind', 'id']),
    'ix_sla_events_kind_occurred': ('sla_events', ['kind', 'occurred_at']),
    'ix_sla_events_detected_at': ('sla_events', ['detected_at']),
}
# The review queue's partial indexes (triage/store/tables.py: QUEUE_WHERE, RUNNING_DEADLINE),
# written out here so this migration stays what it was when the constants change.
QUEUE_WHERE = "labels_source = 'model' AND status IN ('open', 'pending')"
RUNNING_DEADLINE = "CASE WHEN first_response_at IS NULL THEN respond_due_at ELSE resolve_due_at END"
QUEUE_INDEXES = {
    'ix_cases_queue_deadline': [f"(({RUNNING_DEADLINE}) IS NULL)", f"({RUNNING_DEADLINE})", "priority_grade",
                                "(confidence IS NULL)", "confidence", "id"],
    'ix_cases_queue_uncertainty': ["(confidence IS NULL)", "confidence", "id"],
}


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
    with op.batch_alter_table('cases', schema=None) as batch_op:
        batch_op.add_column(sa.Column('confidence', sa.Float(), nullable=True))
    op.execute("UPDATE cases SET confidence = (SELECT predictions.confidence FROM predictions "
               "WHERE predictions.id = cases.prediction_id)")
    for name, (table, columns) in INDEXES.items():
        op.create_index(name, table, columns, unique=False)
    where = sa.text(QUEUE_WHERE)
    for name, expressions in QUEUE_INDEXES.items():
        op.create_index(name, 'cases', [sa.text(e) for e in expressions], unique=False,
                        sqlite_where=where, postgresql_where=where)


def downgrade() -> None:
    for name in QUEUE_INDEXES:
        op.drop_index(name, table_name='cases')
    for name, (table, _columns) in reversed(list(INDEXES.items())):
        op.drop_index(name, table_name=table)
    with op.batch_alter_table('cases', schema=None) as batch_op:
        batch_op.drop_column('confidence')
    op.drop_table('model_pointer')
    op.drop_table('model_files')
