"""Early warning 2: a case's follow-up call can warn and breach again after a reopening, so
an SLA event is unique per case, kind, deadline and due time (each follow-up round has its
own due time) instead of per case, kind and deadline.

Revision ID: 0006
Revises: 0008
Create Date: 2026-12-02 18:30:00
"""

from __future__ import annotations

from alembic import op

revision = '0006'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('sla_events', schema=None) as batch_op:
        batch_op.drop_constraint('uq_sla_events_once', type_='unique')
        batch_op.create_unique_constraint('uq_sla_events_once_per_due', ['case_id', 'kind', 'deadline', 'due_at'])


def downgrade() -> None:
    with op.batch_alter_table('sla_events', schema=None) as batch_op:
        batch_op.drop_constraint('uq_sla_events_once_per_due', type_='unique')
        batch_op.create_unique_constraint('uq_sla_events_once', ['case_id', 'kind', 'deadline'])
