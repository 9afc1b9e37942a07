"""Hostile requests against a real hub (gunicorn on 127.0.0.1, the defaults of ``serve``).

Every attack of issue 12, at sizes CI can afford (``make bench-hostile``
runs them full size): each is refused with a 4xx problem, the workers'
memory stays within :data:`RSS_GROWTH` of where it started, other clients
are still answered, and the hub's log holds no 500 and no traceback.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator

import pytest

from server.api.bodies import MAX_JSON_BYTES, MAX_JSON_DEPTH
from server.errors import PROBLEM_CONTENT_TYPE, problem_type
from server.services.callers import Role
from server.worker import INTAKE_SECONDS, IO_IDLE_SECONDS, MAX_WAITING_STREAMS
from tests.hostile import (
    Answer,
    children,
    chunked,
    exchange,
    gzip_bomb,
    idle_connections,
    read_answer,
    repeated,
    request_head,
    resident_bytes,
    timed_answer,
)
from tests.hubserver import HubServer, StartHub
from tests.server.seeding import AgencyKeys, SetChain, add_agency, add_set, publish_body
from tests.synthetic import random_lines

MB = 1_000_000
# How much a worker may grow over all the attacks of one test: the bodies
# sent are tens of megabytes, so growing with them would break this.
RSS_GROWTH = 16 * MB
SLOW_CONNECTIONS = 200
HEALTH_SECONDS = 2.0


@pytest.fixture
def alpha(sqlite_database_url: str) -> AgencyKeys:
    """An agency with a set ``alpha/known`` and a token of every role."""
    agency = add_agency(sqlite_database_url, "alpha")
    add_set(sqlite_database_url, agency, "known")
    return agency


@pytest.fixture
def hub(start_hub: StartHub, sqlite_database_url: str, alpha: AgencyKeys) -> Iterator[HubServer]:
    """A real hub on the defaults; at the end its log must show no 500 and no traceback."""
    server = start_hub(sqlite_database_url)
    yield server
    log = server.log.read_text()
    assert "Traceback" not in log, log
    assert '" 500 ' not in log, log


def _address(server: HubServer) -> tuple[str, int]:
    host, _, port = server.base_url.removeprefix("http://").rpartition(":")
    return host, int(port)


def _json_head(token: str, *headers: tuple[str, str]) -> bytes:
    return request_head(
        "POST",
        "/v1/sets",
        [("Authorization", f"Bearer {token}"), ("Content-Type", "application/json"), *headers],
    )


def _is_problem(answer: Answer, status: int, slug: str) -> dict[str, object]:
    assert answer.status == status, answer
    assert answer.headers["content-type"] == PROBLEM_CONTENT_TYPE
    problem = answer.problem()
    assert problem["type"] == problem_type(slug), problem
    assert problem["status"] == status
    return problem


def _upload_head(alpha: AgencyKeys, length: int) -> bytes:
    """The head of a publish by ``alpha`` announcing a multipart body of ``length`` bytes."""
    return request_head(
        "POST",
        "/v1/sets/alpha/known/versions",
        [
            ("Authorization", f"Bearer {alpha.secrets[Role.PUBLISHER]}"),
            ("Content-Type", "multipart/form-data; boundary=b"),
            ("Content-Length", str(length)),
        ],
    )


def _largest_worker(server: HubServer) -> int:
    return max(resident_bytes(pid) for pid in children(server.process.pid))


def _assert_answered_quickly(server: HubServer) -> None:
    for _ in range(3):
        answer, took = timed_answer(_address(server), "/v1/health", timeout=30.0)
        assert answer.status == 200
        assert took < HEALTH_SECONDS, f"health took {took:.1f} s"


def test_half_sent_requests_hold_no_thread_and_are_cut_with_408(hub: HubServer) -> None:
    address = _address(hub)
    half_head = b"GET /v1/health HTTP/1.1\r\nHost: hub\r\n"
    half_body = _json_head("t", ("Content-Length", "1000")) + b'{"name": "'
    with (
        idle_connections(address, SLOW_CONNECTIONS // 2, half_head) as heads,
        idle_connections(address, SLOW_CONNECTIONS // 2, half_body) as bodies,
    ):
        time.sleep(0.5)
        _assert_answered_quickly(hub)
        for sock in (heads[0], bodies[0]):
            sock.settimeout(INTAKE_SECONDS + 10)
            problem = _is_problem(read_answer(sock), 408, "request-timeout")
            assert f"{INTAKE_SECONDS:g} seconds" in str(problem["detail"])


def test_idle_connections_are_closed_without_a_word(hub: HubServer) -> None:
    with idle_connections(_address(hub), 50, b"") as idle:
        _assert_answered_quickly(hub)
        idle[0].settimeout(INTAKE_SECONDS + 10)
        assert idle[0].recv(100) == b""


def test_stalled_uploads_leave_a_thread_free_and_are_cut(hub: HubServer, alpha: AgencyKeys) -> None:
    """More stalled publishes than threads: health is still answered, and the stalls end."""
    head = _upload_head(alpha, 10 * MB)
    with idle_connections(_address(hub), 12, head + b"--b\r\n") as stalled:
        time.sleep(0.5)
        _assert_answered_quickly(hub)
        stalled[0].settimeout(IO_IDLE_SECONDS + 15)
        answer = read_answer(stalled[0])
        assert answer.status in (None, 408), answer


def _announced(token: str, size: int) -> tuple[bytes, Iterator[bytes] | None]:
    return _json_head(token, ("Content-Length", str(size))), repeated(b"[", size)


def _chunked(token: str, size: int) -> tuple[bytes, Iterator[bytes] | None]:
    return _json_head(token, ("Transfer-Encoding", "chunked")), chunked(repeated(b" ", size))


def _gzipped(token: str, size: int) -> tuple[bytes, Iterator[bytes] | None]:
    bomb = gzip_bomb(size)
    headers = (("Content-Encoding", "gzip"), ("Content-Length", str(len(bomb))))
    return _json_head(token, *headers) + bomb, None


@pytest.mark.parametrize("attack", [_announced, _chunked, _gzipped])
def test_json_bodies_are_capped_while_read(
    hub: HubServer,
    alpha: AgencyKeys,
    attack: Callable[[str, int], tuple[bytes, Iterator[bytes] | None]],
) -> None:
    before = _largest_worker(hub)
    for _ in range(3):
        head, body = attack(alpha.secrets[Role.AGENCY_ADMIN], 30 * MB)
        problem = _is_problem(exchange(_address(hub), head, body), 413, "too-large")
        assert problem["limit"] == MAX_JSON_BYTES
    assert _largest_worker(hub) - before < RSS_GROWTH
    _assert_answered_quickly(hub)


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 60_000,
        b'{"readers": ' + b"[" * 5000 + b"]" * 5000 + b"}",
        b'{"name": "alpha/x", "title": ' + b"[" * (MAX_JSON_DEPTH + 1) + b"]" * 17 + b"}",
    ],
    ids=["open-brackets", "nested-readers", "one-too-deep"],
)
def test_deep_json_is_refused_before_it_is_parsed(
    hub: HubServer, alpha: AgencyKeys, body: bytes
) -> None:
    head = _json_head(alpha.secrets[Role.AGENCY_ADMIN], ("Content-Length", str(len(body))))
    problem = _is_problem(exchange(_address(hub), head + body), 400, "malformed-body")
    assert f"more than {MAX_JSON_DEPTH} levels" in str(problem["detail"])


def test_json_just_at_the_depth_limit_is_parsed(hub: HubServer, alpha: AgencyKeys) -> None:
    body = b'{"name": "alpha/x", "title": ' + b"[" * 15 + b"]" * 15 + b"}"
    head = _json_head(alpha.secrets[Role.AGENCY_ADMIN], ("Content-Length", str(len(body))))
    # Parsed, then refused by the schema: the title is no string.
    _is_problem(exchange(_address(hub), head + body), 422, "invalid-field")


@pytest.mark.parametrize(
    ("header", "status"),
    [
        (("X-Big", "a" * 65536), 431),
        (("X-Many", "b"), 431),
    ],
    ids=["one-huge-header", "too-many-headers"],
)
def test_oversized_headers_get_a_problem_not_html(
    hub: HubServer, header: tuple[str, str], status: int
) -> None:
    headers = [header] * (1 if header[0] == "X-Big" else 200)
    answer = exchange(_address(hub), request_head("GET", "/v1/health", headers))
    _is_problem(answer, status, "headers-too-large")


def test_an_overlong_request_line_and_a_malformed_one_get_problems(hub: HubServer) -> None:
    long_line = exchange(_address(hub), request_head("GET", "/v1/" + "a" * 10_000))
    _is_problem(long_line, 414, "uri-too-long")
    garbage = exchange(_address(hub), b"\x16\x03\x01 nonsense\r\n\r\n")
    assert (garbage.status, garbage.headers["content-type"]) == (400, PROBLEM_CONTENT_TYPE)


def test_a_version_has_one_spelling(hub: HubServer, alpha: AgencyKeys) -> None:
    candidate = SetChain(alpha, "known").build(random_lines(random.Random(9), 5))
    body, content_type = publish_body(candidate)
    with hub.http() as http:
        published = http.post(
            "/v1/sets/alpha/known/versions",
            content=body,
            headers={"Content-Type": content_type, **alpha.auth()},
        )
    assert published.status_code == 201, published.text
    auth = [("Authorization", f"Bearer {alpha.secrets[Role.READER]}")]
    one = exchange(_address(hub), request_head("GET", "/v1/sets/alpha/known/versions/1", auth))
    assert one.status == 200
    for spelling in ("01", "+1", "1.0", "0", "2147483648", "99999999999"):
        path = f"/v1/sets/alpha/known/versions/{spelling}"
        _is_problem(exchange(_address(hub), request_head("GET", path, auth)), 404, "not-found")


# -- what a hostile review found, kept from coming back -------------------------------------


def test_a_content_length_of_thousands_of_digits_is_refused_and_kills_no_worker(
    hub: HubServer,
) -> None:
    workers = hub.workers()
    for _ in range(4):
        head = request_head("GET", "/v1/health", [("Content-Length", "1" * 4301)])
        answer = exchange(_address(hub), head)
        assert answer.status is not None
        assert 400 <= answer.status < 500
        assert answer.headers["content-type"] == PROBLEM_CONTENT_TYPE
    assert hub.workers() == workers


def test_clients_that_never_close_do_not_stall_the_event_loop(hub: HubServer) -> None:
    """Gunicorn lingers up to 2 s on the loop for each closing connection; the hub does not."""
    head = b"GET /v1/health HTTP/1.1\r\nHost: hub\r\nConnection: close\r\n\r\n"
    with idle_connections(_address(hub), 20, head):
        time.sleep(0.2)
        _assert_answered_quickly(hub)


def test_a_pipelined_half_request_is_cut_like_any_other(hub: HubServer) -> None:
    opening = b"GET /v1/health HTTP/1.1\r\nHost: hub\r\n\r\nGET /v1/health HTTP/1.1\r\nX-Slow: "
    with idle_connections(_address(hub), 12, opening) as slow:
        started = time.monotonic()
        time.sleep(0.5)
        _assert_answered_quickly(hub)
        slow[0].settimeout(INTAKE_SECONDS + 10)
        assert read_answer(slow[0]).status == 200
        problem = _is_problem(read_answer(slow[0]), 408, "request-timeout")
        assert problem["status"] == 408
        assert time.monotonic() - started < INTAKE_SECONDS + 5


def test_clients_that_pipeline_without_reading_hold_no_thread(hub: HubServer) -> None:
    pipelined = request_head("GET", "/v1/openapi.json") * 300
    with idle_connections(_address(hub), 10, pipelined):
        time.sleep(1.0)
        _assert_answered_quickly(hub)


def test_a_large_first_burst_still_counts_as_a_streamed_upload(
    hub: HubServer, alpha: AgencyKeys
) -> None:
    head = _upload_head(alpha, 100 * MB)
    with idle_connections(_address(hub), 10, head + b"--b\r\n" + b"x" * (1300 * 1000)):
        time.sleep(1.0)
        _assert_answered_quickly(hub)


def test_a_malformed_chunked_body_is_a_bad_request(hub: HubServer, alpha: AgencyKeys) -> None:
    head = _json_head(alpha.secrets[Role.AGENCY_ADMIN], ("Transfer-Encoding", "chunked"))
    answer = exchange(_address(hub), head + b"zz\r\nabc\r\n0\r\n\r\n")
    problem = _is_problem(answer, 400, "bad-request")
    assert "chunked" in str(problem["detail"])


@pytest.mark.parametrize(
    ("header", "status", "slug"),
    [
        (("Transfer-Encoding", "xchunked"), 501, "not-implemented"),
        (("Expect", "the-impossible"), 417, "expectation-failed"),
    ],
)
def test_refusals_before_the_app_are_typed(
    hub: HubServer, header: tuple[str, str], status: int, slug: str
) -> None:
    answer = exchange(_address(hub), request_head("POST", "/v1/sets", [header]))
    problem = _is_problem(answer, status, slug)
    assert "failed to handle" not in str(problem["detail"])


def test_uploads_beyond_the_waiting_queue_are_turned_away_with_503(
    start_hub: StartHub, sqlite_database_url: str, alpha: AgencyKeys
) -> None:
    """One worker: its streaming threads stall, the queue fills, the next upload is 503 at once."""
    server = start_hub(sqlite_database_url, workers=1)
    head = _upload_head(alpha, 10 * MB)
    streaming_threads = 3
    with idle_connections(
        _address(server), streaming_threads + MAX_WAITING_STREAMS, head + b"--b\r\n"
    ):
        time.sleep(1.0)
        answer, took = timed_answer(_address(server), "/v1/health", timeout=30.0)
        assert answer.status == 200
        assert took < HEALTH_SECONDS
        turned_away = exchange(_address(server), head + b"--b\r\n", timeout=10.0)
        problem = _is_problem(turned_away, 503, "unavailable")
        assert "busy with uploads" in str(problem["detail"])
