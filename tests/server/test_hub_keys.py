"""The hub's log key service: made once, whoever asks and however often."""

from __future__ import annotations

import threading

from sqlalchemy import Engine, func, select

from client.protocol.keys import key_id, load_public_key_pem
from server.engine import make_session_factory
from server.models import HubKey
from server.services import hub_keys


def test_no_key_before_one_is_made(engine: Engine) -> None:
    with make_session_factory(engine)() as session:
        assert hub_keys.current_hub_key(session) is None


def test_ensure_makes_one_key_and_then_finds_it(engine: Engine) -> None:
    sessions = make_session_factory(engine)
    with sessions() as session:
        made, created = hub_keys.ensure_hub_key(session)
    with sessions() as session:
        found, created_again = hub_keys.ensure_hub_key(session)
        current = hub_keys.current_hub_key(session)
    assert created
    assert not created_again
    assert found.keyid == made.keyid
    assert current is not None
    assert current.keyid == made.keyid


def test_the_public_pem_is_the_key(engine: Engine) -> None:
    with make_session_factory(engine)() as session:
        key, _ = hub_keys.ensure_hub_key(session)
    public = load_public_key_pem(hub_keys.public_key_pem(key).encode("ascii"))
    assert key_id(public) == key.keyid


def test_racing_inits_make_exactly_one_key(engine: Engine) -> None:
    sessions = make_session_factory(engine)
    start = threading.Barrier(4)
    made: list[str] = []
    failures: list[BaseException] = []

    def init() -> None:
        try:
            start.wait(timeout=10)
            with sessions() as session:
                key, _ = hub_keys.ensure_hub_key(session)
            made.append(key.keyid)
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=init) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert failures == []
    assert len(made) == 4
    assert len(set(made)) == 1
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(HubKey)) == 1
