"""``GET /metrics`` and the access log: what moves for a request, who may read it, and a real hub.

The series are the process's own (prometheus_client keeps one set per
process), shared by every app a test makes, so each test reads a scrape
before and after what it does and checks the difference.  The last test runs
``hashex-server serve`` with two workers and checks the series add up across
them, and that its access log is JSON on stderr with no token in it.
"""

from __future__ import annotations

import json
import os
import random
import secrets
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from flask.testing import FlaskClient
from gunicorn.config import Config
from prometheus_client.parser import text_string_to_metric_families

from server import metrics
from server.access_log import JsonAccessLogger, access_line, access_record
from server.errors import PROBLEM_CONTENT_TYPE, problem_type
from server.services.callers import Role
from tests.environment import BIN, process_env
from tests.hubserver import HubServer, free_port
from tests.server.seeding import Hub, add_set, bearer, publish_body, seed_agencies
from tests.synthetic import random_lines

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
REQUESTS = "hashex_http_requests_total"


def _parse(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _scrape(client: FlaskClient | httpx.Client, hub: Hub) -> Samples:
    answer = client.get("/metrics", headers=hub.auth("alpha", Role.ADMIN))
    assert answer.status_code == 200
    assert answer.headers["Content-Type"] == metrics.CONTENT_TYPE
    assert answer.headers["Cache-Control"] == "no-store"
    return _parse(answer.text)


def _value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def _moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return _value(after, name, **labels) - _value(before, name, **labels)


@pytest.fixture
def hub(database_url: str) -> Hub:
    """Agency alpha with a token of every role (admin included)."""
    return seed_agencies(database_url)


# -- what the series count ------------------------------------------------------------------


def test_a_request_is_counted_and_timed_by_endpoint(client: FlaskClient, hub: Hub) -> None:
    before = _scrape(client, hub)
    assert client.get("/v1/health").status_code == 200
    assert client.get("/v1/sets").status_code == 401
    after = _scrape(client, hub)
    health = {"endpoint": "health.health"}
    assert _moved(before, after, REQUESTS, method="GET", status="200", **health) == 1
    assert (
        _moved(before, after, REQUESTS, endpoint="sets.list_sets", method="GET", status="401") == 1
    )
    count = "hashex_http_request_duration_seconds_count"
    assert _moved(before, after, count, **health) == 1
    # The first scrape is counted too, once its answer was ready.
    assert _moved(before, after, REQUESTS, endpoint="metrics.scrape", method="GET", status="200")
    assert _value(after, "hashex_http_request_duration_seconds_bucket", le="+Inf", **health) >= 1


def test_polls_are_counted_by_answer(client: FlaskClient, hub: Hub) -> None:
    before = _scrape(client, hub)
    reader = hub.auth("alpha", Role.READER)
    first = client.get("/v1/sets", headers=reader)
    assert first.status_code == 200
    again = client.get("/v1/sets", headers=reader | {"If-None-Match": first.headers["ETag"]})
    assert again.status_code == 304
    after = _scrape(client, hub)
    assert _moved(before, after, "hashex_polls_total", answer="200") == 1
    assert _moved(before, after, "hashex_polls_total", answer="304") == 1


def test_publishes_are_counted_accepted_and_refused_by_problem(
    database_url: str, client: FlaskClient, hub: Hub
) -> None:
    alpha = hub.agencies["alpha"]
    chain = add_set(database_url, alpha, "own")
    candidate = chain.build(random_lines(random.Random(14), 5))
    body, content_type = publish_body(candidate)
    before = _scrape(client, hub)
    publish = {"data": body, "content_type": content_type}
    assert client.post(chain.url, **publish, headers=alpha.auth()).status_code == 201
    assert client.post(chain.url, **publish, headers=alpha.auth()).status_code == 409
    assert client.post(chain.url, **publish).status_code == 401
    after = _scrape(client, hub)
    name = "hashex_publishes_total"
    assert _moved(before, after, name, outcome="accepted", problem="") == 1
    assert _moved(before, after, name, outcome="refused", problem="version-conflict") == 1
    assert _moved(before, after, name, outcome="refused", problem="unauthorized") == 1


def test_unknown_paths_and_methods_add_no_series_of_their_own(
    client: FlaskClient, hub: Hub
) -> None:
    before = _scrape(client, hub)
    rng = random.Random(7)
    spelled: list[str] = []
    for _ in range(100):
        word = "".join(rng.choices("abcdefghijklmnopqrstuvwxyz0123456789", k=16))
        spelled.append(word)
        assert client.get(f"/{word}/{rng.randrange(10**9)}").status_code == 404
    for method in ("PROPFIND", "BREW", "X" + secrets.token_hex(4).upper()):
        spelled.append(method)
        assert client.open("/v1/health", method=method).status_code == 405
    after = _scrape(client, hub)
    # At most the two series of unmatched GET 404 and other 405 are new (none
    # if an earlier test made them), and only unmatched ones moved, beside the
    # first scrape's own.
    assert len(after.keys() - before.keys()) <= 2 * (2 + len(metrics.BUCKETS) + 1 + 2)
    moved = {
        (name, labels)
        for (name, labels), value in after.items()
        if value != before.get((name, labels)) and ("endpoint", "metrics.scrape") not in labels
    }
    assert moved
    assert all(("endpoint", "unmatched") in labels for (_, labels) in moved), moved
    assert len({labels for (name, labels) in moved if name == REQUESTS}) == 2
    unmatched = {"endpoint": "unmatched"}
    assert _moved(before, after, REQUESTS, method="GET", status="404", **unmatched) == 100
    assert _moved(before, after, REQUESTS, method="other", status="405", **unmatched) == 3
    values = {value for (_, labels) in after for (_, value) in labels}
    assert not values & set(spelled)


# -- who may read them ------------------------------------------------------------------------


def test_only_the_hub_operator_reads_the_metrics(client: FlaskClient, hub: Hub) -> None:
    refusals = {
        None: (401, "unauthorized"),
        "hx_" + "A" * 43: (401, "unauthorized"),
        hub.secret("alpha", Role.READER): (403, "forbidden"),
        hub.secret("alpha", Role.PUBLISHER): (403, "forbidden"),
        hub.secret("alpha", Role.AGENCY_ADMIN): (403, "forbidden"),
    }
    for secret, (status, slug) in refusals.items():
        headers = {} if secret is None else bearer(secret)
        answer = client.get("/metrics", headers=headers)
        assert answer.status_code == status, secret
        assert answer.mimetype == PROBLEM_CONTENT_TYPE
        assert answer.get_json()["type"] == problem_type(slug)
        assert b"hashex_" not in answer.get_data()
    answer = client.get("/metrics", headers=hub.auth("alpha", Role.ADMIN))
    assert answer.status_code == 200
    assert answer.mimetype == "text/plain"
    assert b"# TYPE hashex_http_requests_total counter" in answer.get_data()


def test_scraped_families_follow_the_recorded_ones() -> None:
    # The log gauges are not exposed yet; the exposition already takes them.
    text = metrics.exposition(
        scraped=[metrics.log_size_gauge(12), metrics.checkpoint_age_gauge(3.5)]
    ).decode()
    samples = _parse(text)
    assert _value(samples, "hashex_log_size") == 12
    assert _value(samples, "hashex_log_checkpoint_age_seconds") == 3.5
    assert "hashex_log_size" not in metrics.exposition().decode()


# -- the shared directory of gunicorn's workers -------------------------------------------------


@contextmanager
def _no_multiproc_dir(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # Set, then unset: monkeypatch then restores "unset" whatever the code sets.
    monkeypatch.setenv(metrics.MULTIPROC_DIR_VAR, "unset")
    monkeypatch.delenv(metrics.MULTIPROC_DIR_VAR)
    yield


def test_without_a_directory_the_master_makes_a_private_one_and_only_it_removes_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    exits: list[tuple[Any, ...]] = []
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    monkeypatch.setattr("atexit.register", lambda *call: exits.append(call))
    with _no_multiproc_dir(monkeypatch):
        made = metrics.prepare_multiprocess_directory()
        assert os.environ[metrics.MULTIPROC_DIR_VAR] == str(made)
    assert made.parent == tmp_path
    assert stat.S_IMODE(made.stat().st_mode) == 0o700
    [(remove, directory, owner)] = exits
    assert owner == os.getpid()
    remove(directory, owner + 1)  # a worker that exits leaves it
    assert made.is_dir()
    remove(directory, owner)
    assert not made.exists()


def test_an_operators_directory_loses_only_the_values_of_a_previous_run(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    stale = ["counter_12.db", "histogram_12.db", "gauge_livesum_7.db"]
    kept = ["notes.txt", "counter.db", "counter_12.db.bak"]
    for name in stale + kept:
        (tmp_path / name).write_bytes(b"x")
    monkeypatch.setenv(metrics.MULTIPROC_DIR_VAR, str(tmp_path))
    assert metrics.prepare_multiprocess_directory() == tmp_path
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(kept)
    monkeypatch.setenv(metrics.MULTIPROC_DIR_VAR, str(tmp_path / "notes.txt"))
    with pytest.raises(RuntimeError, match="not a directory"):
        metrics.prepare_multiprocess_directory()


# -- the access log -----------------------------------------------------------------------------


def test_an_access_line_is_one_json_object_whatever_the_path_holds() -> None:
    secret = "hx_" + secrets.token_urlsafe(32)
    path = '/v1/\n{"status":200,"forged":true}\r\x1b[2J\u2028'
    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": path.encode().decode("latin-1"),  # as WSGI carries it
        "QUERY_STRING": "after=1",
        "REMOTE_ADDR": "192.0.2.7",
        "HTTP_AUTHORIZATION": f"Bearer {secret}",
        "HTTP_USER_AGENT": "hashex/0.1",
        metrics.ENDPOINT_KEY: None,
        metrics.AGENCY_KEY: "alpha",
        metrics.TOKEN_ID_KEY: 3,
    }
    line = access_line(access_record(environ, 404, 120, timedelta(milliseconds=2.5)))
    assert line.isascii()
    assert all(character.isprintable() for character in line)
    assert secret not in line
    assert "Bearer" not in line
    record = json.loads(line)
    assert record["path"] == path
    assert record == record | {
        "method": "GET",
        "query": "after=1",
        "endpoint": "unmatched",
        "status": 404,
        "bytes": 120,
        "duration_ms": 2.5,
        "remote_addr": "192.0.2.7",
        "agency": "alpha",
        "token_id": 3,
        "user_agent": "hashex/0.1",
        "pid": os.getpid(),
    }


def test_the_access_log_goes_to_stderr() -> None:
    config = Config()
    config.set("accesslog", "-")
    logger = JsonAccessLogger(config)
    handlers = list(logger.access_log.handlers)
    try:
        assert handlers
        assert all(getattr(handler, "stream", None) is sys.stderr for handler in handlers)
    finally:
        for log in (logger.access_log, logger.error_log):
            for handler in list(log.handlers):
                log.removeHandler(handler)


# -- a real hub with two workers ----------------------------------------------------------------


def _signal_all(pids: list[int], signum: int) -> None:
    for pid in pids:
        os.kill(pid, signum)


def _health(hub: HubServer, count: int) -> None:
    with hub.http(timeout=10.0) as http:
        for _ in range(count):
            assert http.get("/v1/health").status_code == 200


def _wait_for(check: Any, what: str, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {seconds} s: {what}")
        time.sleep(0.1)


def test_a_hub_of_two_workers_adds_up_their_series_and_logs_json_on_stderr(
    sqlite_database_url: str, tmp_path: Path
) -> None:
    hub_seed = seed_agencies(sqlite_database_url, {"alpha": [Role.ADMIN, Role.READER]})
    temp = tmp_path / "tmp"
    temp.mkdir()
    bind = f"127.0.0.1:{free_port()}"
    env = process_env(TMPDIR=str(temp)) | {"HASHEX_DATABASE_URL": sqlite_database_url}
    env.pop(metrics.MULTIPROC_DIR_VAR, None)
    stdout, stderr = tmp_path / "stdout.log", tmp_path / "stderr.log"
    command = [str(BIN / "hashex-server"), "serve", "--bind", bind, "--workers", "2"]
    with stdout.open("wb") as out, stderr.open("wb") as err:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=err)
    hub = HubServer(f"http://{bind}", process, stderr)
    try:
        hub.wait_until_up(2)
        [directory] = list(temp.iterdir())
        assert directory.name.startswith("hashex-metrics-")
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700
        first, second = hub.workers()
        with hub.http() as http:
            before = _scrape(http, hub_seed)
        # Each worker alone answers some requests: the other one is stopped.
        _signal_all([second], signal.SIGSTOP)
        _health(hub, 3)
        _signal_all([second], signal.SIGCONT)
        _signal_all([first], signal.SIGSTOP)
        _health(hub, 5)
        _signal_all([first], signal.SIGCONT)
        with hub.http() as http:
            after = _scrape(http, hub_seed)
            answer = http.get("/v1/sets", headers=hub_seed.auth("alpha", Role.READER))
            assert answer.status_code == 200
        # Neither worker answered 8 requests: the scrape added up both.
        health = {"endpoint": "health.health", "method": "GET", "status": "200"}
        assert _moved(before, after, REQUESTS, **health) == 8

        # A worker that stops is replaced; the directory stays for the new one.
        os.kill(first, signal.SIGTERM)
        _wait_for(lambda: len(hub.workers()) == 2 and first not in hub.workers(), "a new worker")
        assert directory.is_dir()
        with hub.http() as http:
            later = _scrape(http, hub_seed)
        assert _moved(before, later, REQUESTS, **health) >= 8
    finally:
        _signal_all([pid for pid in hub.workers()], signal.SIGCONT)
        code = hub.stop()
    assert code == 0, stderr.read_text()
    assert list(temp.iterdir()) == [], "the private metrics directory outlived the hub"

    errors, output = stderr.read_text(), stdout.read_text()
    access = [json.loads(line) for line in errors.splitlines() if line.startswith("{")]
    assert not [line for line in output.splitlines() if line.startswith("{")], output
    for secret in hub_seed.secrets():
        assert secret not in errors
        assert secret not in output
    by_path: dict[str, list[dict[str, Any]]] = {}
    for record in access:
        by_path.setdefault(record["path"], []).append(record)
    assert len(by_path["/v1/health"]) >= 8
    assert {record["pid"] for record in by_path["/v1/health"]} >= {first, second}
    scrapes = by_path["/metrics"]
    assert {(r["endpoint"], r["status"], r["agency"]) for r in scrapes} == {
        ("metrics.scrape", 200, "alpha")
    }
    assert {r["token_id"] for r in scrapes} == {hub_seed.token_id("alpha", Role.ADMIN)}
    [poll] = by_path["/v1/sets"]
    assert poll["endpoint"] == "sets.list_sets"
    assert poll["bytes"] > 0
    assert poll["duration_ms"] > 0
