"""A subject's row version: how many write transactions locked the subject.

``SubjectRepository.locked`` raises it by one in the transaction that locks the subject, so a use
case that read a subject's data before it took the write lock can tell, once it has the lock,
whether anything of the subject changed in between (services/data_entry.py). Existing subjects
start at 0. Written by hand like 0001 and 0002 (plain ``ADD COLUMN`` on both engines; see 0002 for
why not a batch operation); the migration test checks the result equals ``cmvtrial.store.tables``.

Revision ID: 0003_subject_row_version
Revises: 0002_end_of_study
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_subject_row_version"
down_revision: str | None = "0002_end_of_study"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("subjects", sa.Column("row_version", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    op.drop_column("subjects", "row_version")
