"""A subject's end of study: the day a subject left the trial or completed it, why, and in what words.

Three nullable columns on ``subjects`` (services/end_of_study.py writes them): existing subjects
are still in the trial, so nothing is back-filled. Written by hand like 0001; the migration test
checks the result equals ``cmvtrial.store.tables``. Plain ``ALTER TABLE … ADD/DROP COLUMN`` on both
engines (SQLite has dropped columns since 3.35): a batch operation would rebuild ``subjects`` on
SQLite, which the foreign keys of every table that points at it forbid once it holds rows.

Revision ID: 0002_end_of_study
Revises: 0001_initial
Create Date: 2025-06-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002_end_of_study"
down_revision: str | None = "0001_initial"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


COLUMNS = ("end_of_study_date", "end_of_study_reason", "end_of_study_details")


def upgrade() -> None:
    op.add_column("subjects", sa.Column("end_of_study_date", sa.Date(), nullable=True))
    op.add_column("subjects", sa.Column("end_of_study_reason", sa.String(32), nullable=True))
    op.add_column("subjects", sa.Column("end_of_study_details", sa.Text(), nullable=True))


def downgrade() -> None:
    for name in reversed(COLUMNS):
        op.drop_column("subjects", name)
