"""Alembic environment: migrations run only programmatically, on a connection the caller provides.

cmvtrial builds the Alembic configuration in code (``cmvtrial.store.schema``), so no alembic.ini
is needed at runtime and the migrations always run on exactly the engine cmvtrial configured
(SQLite pragmas, PostgreSQL search_path).
"""

from alembic import context

from cmvtrial.store.tables import Base

connection = context.config.attributes.get("connection")
if connection is None or context.is_offline_mode():
    raise RuntimeError("run cmvtrial migrations through cmvtrial.store.schema (e.g. `cmvtrial init`)")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
