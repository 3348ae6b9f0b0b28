"""Persistence: SQLAlchemy models, repositories, Alembic migrations and the hash-chained audit log."""
