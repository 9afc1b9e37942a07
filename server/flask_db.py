"""The database, bound to a Flask app: one engine per app, one session per request.

:func:`init_app` gives the app its engine; :func:`get_session` opens the
request's session on first use, and the app context's teardown closes it,
rolling back whatever the request did not commit.  Views hand that session
to the services, which know nothing of Flask.
"""

from __future__ import annotations

from dataclasses import dataclass

from flask import Flask, current_app, g
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from server.engine import make_engine, make_hot_engine, make_session_factory

_EXTENSION = "hashex.db"


@dataclass(frozen=True)
class Database:
    """An app's engine, the factory of its sessions, and the engine of its hot read."""

    engine: Engine
    sessions: sessionmaker[Session]
    hot: Engine


def init_app(app: Flask, database_url: str) -> None:
    """Give ``app`` an engine on ``database_url`` and close sessions at teardown.

    The engine connects lazily, so making an app never touches the database;
    gunicorn workers each build their own app, so no pool crosses a fork.
    """
    engine = make_engine(database_url)
    app.extensions[_EXTENSION] = Database(
        engine, make_session_factory(engine), make_hot_engine(engine)
    )
    app.teardown_appcontext(_close_session)


def database(app: Flask) -> Database:
    """The database :func:`init_app` bound to ``app``."""
    bound = app.extensions.get(_EXTENSION)
    if not isinstance(bound, Database):
        raise RuntimeError("server.flask_db.init_app() was not called for this app")
    return bound


def get_session() -> Session:
    """The current app context's session, opened on first use."""
    if "db_session" not in g:
        g.db_session = database(current_app).sessions()
    session: Session = g.db_session
    return session


def dispose(app: Flask) -> None:
    """Close every pooled connection of ``app`` (tests, before dropping a database)."""
    database(app).engine.dispose()
    database(app).hot.dispose()


def _close_session(_error: BaseException | None) -> None:
    session: Session | None = g.pop("db_session", None)
    if session is not None:
        session.close()
