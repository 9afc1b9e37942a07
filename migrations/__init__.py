"""Alembic environment and revisions: the only way the hub's schema changes.

Run them with :func:`server.migrate.upgrade` (``hashex-server init``).
"""
