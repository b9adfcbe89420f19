"""person keys (crypto-shredding of one person's data)

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-26 15:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import minigate.store.tables

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('person_keys',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('app_id', sa.String(length=40), nullable=False),
    sa.Column('mode', sa.String(length=8), nullable=False),
    sa.Column('subject_hash', sa.String(length=64), nullable=False),
    sa.Column('wrapped', sa.Text(), nullable=False),
    sa.Column('created_at', minigate.store.tables.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_person_keys')),
    sa.UniqueConstraint('app_id', 'mode', 'subject_hash', name=op.f('uq_person_keys_app_id_mode_subject_hash'))
    )


def downgrade() -> None:
    op.drop_table('person_keys')
