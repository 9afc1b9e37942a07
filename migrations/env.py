"""Alembic environment: runs the revisions on the connection server.migrate opens.

That connection already holds the migration lock and its transaction, and on
SQLite it runs with foreign keys off; see :mod:`server.migrate`.
"""

from alembic import context

from server.models import Base


def run_migrations() -> None:
    """Run the pending revisions on the connection handed over by server.migrate."""
    if context.is_offline_mode():
        raise RuntimeError("Hashex migrations run online only (hashex-server init)")
    connection = context.config.attributes.get("connection")
    if connection is None:
        raise RuntimeError(
            "Hashex migrations need the connection server.migrate provides; "
            "run them with hashex-server init or server.migrate.migration_config()"
        )
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        # SQLite alters tables by rebuilding them; batch mode does that for us.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


run_migrations()
