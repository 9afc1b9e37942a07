"""HubClient against a hostile hub: every bad answer typed, every read bounded.

Most cases play the hub with ``httpx.MockTransport``; bodies are generators so
they stream as from a socket.  Timeouts and deadlines are tested against a
real socket on 127.0.0.1, since only a real read can block.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import itertools
import json
import socket
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from client.errors import HubRefusedError, HubUnreachableError, ResponseError
from client.limits import Limits
from client.settings import ClientSettings
from client.transport import ERROR_BODY_CAP, HubClient, user_agent

TOKEN = "hxt_" + "s3cr3t-t0ken-" * 3
HUB = "https://hub.test"
MAX_JSON = 4096
LIMITS = Limits(connect_timeout=1.0, read_timeout=1.0, max_json_bytes=MAX_JSON)
TEXT = "text/plain; charset=us-ascii"
PROBLEM = "application/problem+json"
# A gzip member header with no name, time or comment: deflate data follows.
GZIP_HEADER = bytes.fromhex("1f8b0800000000000003")

Handler = Callable[[httpx.Request], httpx.Response]


def settings(server: str = HUB, token: str | None = TOKEN) -> ClientSettings:
    """Settings for a hub at ``server``, with no TLS material of their own."""
    return ClientSettings.resolve(server=server, token=token, environ={"HOME": "/nonexistent"})


def mock_hub(handler: Handler, *, token: str | None = TOKEN) -> HubClient:
    """A HubClient whose every request is answered by ``handler``."""
    return HubClient(settings(token=token), LIMITS, transport=httpx.MockTransport(handler))


def answer(
    status: int, body: Iterable[bytes] | bytes, content_type: str | None, **headers: str
) -> Handler:
    """A handler giving every request the same answer; bytes are streamed in one chunk."""

    def handle(_request: httpx.Request) -> httpx.Response:
        chunks = [body] if isinstance(body, bytes) else body
        fields = dict(headers)
        if content_type is not None:
            fields["Content-Type"] = content_type
        return httpx.Response(status, headers=fields, content=iter(chunks))

    return handle


def endless(chunk: bytes) -> Iterator[bytes]:
    """A body that never ends."""
    while True:
        yield chunk


def gzipped(data: bytes, pieces: int = 1) -> list[bytes]:
    """``data`` gzip-compressed, split into ``pieces`` chunks."""
    packed = gzip.compress(data, mtime=0)
    step = -(-len(packed) // pieces)
    return [packed[i : i + step] for i in range(0, len(packed), step)]


# -- requests as sent -------------------------------------------------------------


def test_requests_carry_the_token_agent_and_encoding() -> None:
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"status": "ok"})

    with mock_hub(handle) as hub:
        value, headers = hub.get_json("/v1/sets", {"after": 3})
    assert value == {"status": "ok"}
    assert headers["content-type"] == "application/json"
    request = seen[0]
    assert str(request.url) == "https://hub.test/v1/sets?after=3"
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert request.headers["user-agent"] == user_agent()
    assert user_agent().startswith("hashex/")
    assert request.headers["accept-encoding"] == "gzip"


def test_a_prefix_in_the_hub_url_is_kept() -> None:
    seen: list[str] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(200, json={})

    client = HubClient(
        settings("https://hub.test/hashex/"), LIMITS, transport=httpx.MockTransport(handle)
    )
    with client as hub:
        hub.get_json("/v1/health")
    assert seen == ["https://hub.test/hashex/v1/health"]


def test_no_token_sends_no_authorization() -> None:
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={})

    with mock_hub(handle, token=None) as hub:
        hub.get_json("/v1/health")
    assert "authorization" not in seen[0].headers


def test_etag_asks_if_none_match_and_304_is_none() -> None:
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.headers.get("if-none-match") == '"v7"':
            return httpx.Response(304, headers={"ETag": '"v7"'})
        return httpx.Response(200, json={"v": 8}, headers={"ETag": '"v8"'})

    with mock_hub(handle) as hub:
        assert hub.get_json("/v1/sets", etag='"v7"') is None
        changed = hub.get_json("/v1/sets", etag='"v6"')
    assert changed is not None
    assert changed[0] == {"v": 8}
    assert changed[1]["etag"] == '"v8"'


def test_a_json_body_may_come_gzipped() -> None:
    body = json.dumps({"versions": list(range(100))}).encode()
    handler = answer(
        200, gzipped(body, pieces=3), "application/json", **{"Content-Encoding": "gzip"}
    )
    with mock_hub(handler) as hub:
        assert hub.get_json("/v1/x")[0] == {"versions": list(range(100))}


# -- JSON answers that contradict the request ---------------------------------------


def test_oversized_json_is_refused() -> None:
    body = json.dumps({"pad": "x" * MAX_JSON}).encode()
    with (
        mock_hub(answer(200, body, "application/json")) as hub,
        pytest.raises(ResponseError, match=f"more than the {MAX_JSON} bytes allowed"),
    ):
        hub.get_json("/v1/sets")


def test_endless_json_is_refused_whatever_content_length_says() -> None:
    handler = answer(200, endless(b"[" * 1000), "application/json", **{"Content-Length": "2"})
    with mock_hub(handler) as hub, pytest.raises(ResponseError, match="bytes allowed"):
        hub.get_json("/v1/sets")


def test_a_gzip_bomb_of_json_is_refused() -> None:
    handler = answer(
        200, gzipped(b" " * (10 * MAX_JSON)), "application/json", **{"Content-Encoding": "gzip"}
    )
    with mock_hub(handler) as hub, pytest.raises(ResponseError, match="bytes allowed"):
        hub.get_json("/v1/sets")


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "text/html",
        "text/plain",
        "application/problem+json",
        "application/json; charset=latin-1",
    ],
)
def test_wrong_content_type_on_200_is_refused(content_type: str | None) -> None:
    with (
        mock_hub(answer(200, b"{}", content_type)) as hub,
        pytest.raises(
            ResponseError, match=r"expected application/json \(GET https://hub.test/v1/sets\)"
        ),
    ):
        hub.get_json("/v1/sets")


@pytest.mark.parametrize(
    "body",
    [b"", b"{", b'{"a": 1} x', b"NaN", b'{"a": Infinity}', b"\xff\xfe{}", b"[" * 3000],
    ids=["empty", "unclosed", "trailing", "nan", "infinity", "not-utf8", "deep"],
)
def test_invalid_json_is_refused(body: bytes) -> None:
    with (
        mock_hub(answer(200, body, "application/json")) as hub,
        pytest.raises(ResponseError, match="not valid JSON"),
    ):
        hub.get_json("/v1/sets")


@pytest.mark.parametrize("status", [201, 202, 204, 206, 304])
def test_another_success_status_is_refused(status: int) -> None:
    with (
        mock_hub(answer(status, b"{}", "application/json")) as hub,
        pytest.raises(ResponseError, match=f"answered {status}, expected 200"),
    ):
        hub.get_json("/v1/sets")


@pytest.mark.parametrize("encoding", ["br", "deflate", "zstd", "gzip, gzip"])
def test_an_encoding_not_asked_for_is_refused(encoding: str) -> None:
    handler = answer(200, b"{}", "application/json", **{"Content-Encoding": encoding})
    with mock_hub(handler) as hub, pytest.raises(ResponseError, match="Content-Encoding"):
        hub.get_json("/v1/sets")


@pytest.mark.parametrize(
    ("chunks", "why"),
    [
        ([GZIP_HEADER + b"\xff" * 8], "broken gzip"),
        ([gzip.compress(b"{}")[:-4]], "ends before its end marker"),
        ([gzip.compress(b"{}"), b"more"], "after the end"),
        ([gzip.compress(b"{}") + gzip.compress(b"{}")], "after the end"),
    ],
    ids=["garbage", "truncated", "trailing-chunk", "second-member"],
)
def test_bad_gzip_is_refused(chunks: list[bytes], why: str) -> None:
    handler = answer(200, chunks, "application/json", **{"Content-Encoding": "gzip"})
    with mock_hub(handler) as hub, pytest.raises(ResponseError, match=why):
        hub.get_json("/v1/sets")


# -- refusals -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "slug"),
    [
        (401, "unauthorized"),
        (403, "forbidden"),
        (404, "not-found"),
        (409, "version-conflict"),
        (412, "precondition-failed"),
        (422, "bad-signature"),
    ],
)
def test_problem_answers_are_refusals_with_their_type(status: int, slug: str) -> None:
    problem = {
        "type": f"https://hashex.dev/problems/{slug}",
        "title": "Refused",
        "status": status,
        "detail": f"the {slug} detail",
    }
    handler = answer(status, json.dumps(problem).encode(), PROBLEM)
    with mock_hub(handler) as hub, pytest.raises(HubRefusedError) as caught:
        hub.get_json("/v1/sets/a/b")
    assert caught.value.status == status
    assert caught.value.problem_type == f"https://hashex.dev/problems/{slug}"
    assert caught.value.detail == f"the {slug} detail"
    assert str(caught.value) == (
        f"hub refused ({status} https://hashex.dev/problems/{slug}): the {slug} detail"
    )


def test_a_500_in_html_is_a_refusal_about_blank() -> None:
    handler = answer(500, b"<html><body>Traceback...</body></html>", "text/html")
    with mock_hub(handler) as hub, pytest.raises(HubRefusedError) as caught:
        hub.get_json("/v1/sets")
    assert caught.value.status == 500
    assert caught.value.problem_type == "about:blank"
    assert caught.value.detail == "Internal Server Error"


def test_a_problem_without_a_type_is_about_blank() -> None:
    handler = answer(403, b'{"detail": "not yours", "type": 7}', PROBLEM)
    with mock_hub(handler) as hub, pytest.raises(HubRefusedError) as caught:
        hub.get_json("/v1/sets")
    assert (caught.value.problem_type, caught.value.detail) == ("about:blank", "not yours")


def test_an_endless_error_body_is_cut_short() -> None:
    handler = answer(503, endless(b'{"detail": "' + b"x" * 4096), PROBLEM)
    started = time.monotonic()
    with mock_hub(handler) as hub, pytest.raises(HubRefusedError) as caught:
        hub.get_json("/v1/sets")
    assert time.monotonic() - started < 2
    assert caught.value.status == 503
    assert caught.value.problem_type == "about:blank"


def test_an_error_body_just_under_the_cap_is_read() -> None:
    detail = "d" * (ERROR_BODY_CAP - 100)
    handler = answer(422, json.dumps({"type": "t", "detail": detail}).encode(), PROBLEM)
    with mock_hub(handler) as hub, pytest.raises(HubRefusedError) as caught:
        hub.get_json("/v1/sets")
    assert caught.value.problem_type == "t"
    assert caught.value.detail.startswith("ddd")


def test_hub_text_is_made_safe_to_print() -> None:
    problem = {"type": "t\x1b[2J", "detail": "ring \x07 the bell\r\n" + "z" * 5000}
    handler = answer(422, json.dumps(problem).encode(), PROBLEM)
    with mock_hub(handler) as hub, pytest.raises(HubRefusedError) as caught:
        hub.get_json("/v1/sets")
    assert caught.value.problem_type == "t?[2J"
    assert caught.value.detail.startswith("ring ? the bell??zzz")
    assert len(caught.value.detail) < 600


def test_redirects_are_not_followed() -> None:
    seen: list[str] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(302, headers={"Location": "https://elsewhere.test/steal"})

    with mock_hub(handle) as hub, pytest.raises(HubRefusedError) as caught:
        hub.get_json("/v1/sets")
    assert seen == ["https://hub.test/v1/sets"]
    assert caught.value.status == 302
    assert "redirects to https://elsewhere.test/steal, not followed" in caught.value.detail


# -- downloads ---------------------------------------------------------------------------


def lines(count: int) -> bytes:
    """``count`` canonical-looking entry lines of synthetic hashes."""
    return b"".join(
        b"sha256:" + hashlib.sha256(str(i).encode()).hexdigest().encode() + b"\n"
        for i in range(count)
    )


@pytest.mark.parametrize("encoding", ["identity", "gzip"])
def test_download_gives_digest_and_size_of_the_decoded_bytes(encoding: str) -> None:
    data = lines(5000)
    if encoding == "gzip":
        handler = answer(200, gzipped(data, pieces=7), TEXT, **{"Content-Encoding": "gzip"})
    else:
        handler = answer(200, [data[:1000], data[1000:]], TEXT)
    out = io.BytesIO()
    with mock_hub(handler) as hub:
        digest, size = hub.download("/v1/sets/a/b/versions/1/delta", out, max_bytes=len(data))
    assert (digest, size) == (hashlib.sha256(data).hexdigest(), len(data))
    assert out.getvalue() == data


def test_a_highly_compressible_body_inflates_in_bounded_steps() -> None:
    # 4 MB of one repeated line: one small gzip chunk that inflates in many steps.
    data = b"md5:" + b"0" * 32 + b"\n"
    data *= 4 * 1024 * 1024 // len(data)
    handler = answer(200, gzipped(data), TEXT, **{"Content-Encoding": "gzip"})
    out = io.BytesIO()
    with mock_hub(handler) as hub:
        assert hub.download("/d", out, max_bytes=len(data)) == (
            hashlib.sha256(data).hexdigest(),
            len(data),
        )


def test_an_empty_body_downloads_as_nothing() -> None:
    with mock_hub(answer(200, b"", TEXT)) as hub:
        assert hub.download("/d", io.BytesIO(), max_bytes=10) == (hashlib.sha256().hexdigest(), 0)


def test_the_charset_may_be_left_out() -> None:
    with mock_hub(answer(200, b"md5:" + b"0" * 32 + b"\n", "text/plain")) as hub:
        assert hub.download("/d", io.BytesIO(), max_bytes=100)[1] == 37


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "application/octet-stream",
        "text/html",
        "text/plain; charset=utf-8",
        "application/json",
    ],
)
def test_download_of_a_wrong_content_type_is_refused(content_type: str | None) -> None:
    out = io.BytesIO()
    with (
        mock_hub(answer(200, lines(3), content_type)) as hub,
        pytest.raises(ResponseError, match="expected text/plain; charset=us-ascii"),
    ):
        hub.download("/d", out, max_bytes=10_000)
    assert out.getvalue() == b""


def test_an_endless_download_stops_at_the_cap() -> None:
    chunk = b"md5:" + b"a" * 32 + b"\n"
    out = io.BytesIO()
    max_bytes = 100_000
    with (
        mock_hub(answer(200, endless(chunk * 100), TEXT)) as hub,
        pytest.raises(ResponseError, match=f"more than the {max_bytes} bytes allowed"),
    ):
        hub.download("/d", out, max_bytes=max_bytes)
    # The chunk that would pass the cap is refused before it is written.
    assert max_bytes - len(chunk) * 100 < len(out.getvalue()) <= max_bytes


def test_a_gzip_bomb_stops_at_the_cap_quickly() -> None:
    packer = zlib.compressobj(wbits=31)
    bomb = b"".join(packer.compress(bytes(1024 * 1024)) for _ in range(50)) + packer.flush()
    assert len(bomb) < 100_000
    chunks = [bomb[i : i + 16384] for i in range(0, len(bomb), 16384)]
    handler = answer(200, chunks, TEXT, **{"Content-Encoding": "gzip"})
    out = io.BytesIO()
    started = time.monotonic()
    with mock_hub(handler) as hub, pytest.raises(ResponseError, match="bytes allowed"):
        hub.download("/d", out, max_bytes=1024 * 1024)
    assert time.monotonic() - started < 2
    assert len(out.getvalue()) <= 1024 * 1024


def test_endless_gzip_padding_is_cut_off_by_the_raw_cap() -> None:
    # Empty stored deflate blocks decode to nothing, so only the raw count stops them.
    padding = b"\x00\x00\x00\xff\xff" * 20_000
    body = itertools.chain([GZIP_HEADER], endless(padding))
    handler = answer(200, body, TEXT, **{"Content-Encoding": "gzip"})
    with mock_hub(handler) as hub, pytest.raises(ResponseError, match="bytes allowed"):
        hub.download("/d", io.BytesIO(), max_bytes=100_000)


def test_download_refusals_carry_the_problem() -> None:
    problem = {"type": "https://hashex.dev/problems/not-found", "detail": "no such set"}
    out = io.BytesIO()
    with (
        mock_hub(answer(404, json.dumps(problem).encode(), PROBLEM)) as hub,
        pytest.raises(HubRefusedError) as caught,
    ):
        hub.download("/d", out, max_bytes=10_000)
    assert (caught.value.status, caught.value.problem_type) == (
        404,
        "https://hashex.dev/problems/not-found",
    )
    assert out.getvalue() == b""


# -- writes ------------------------------------------------------------------------------


def test_post_json_sends_json_and_reads_the_answer() -> None:
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(201, json={"name": "a/b"})

    with mock_hub(handle) as hub:
        assert hub.post_json("/v1/sets", {"name": "a/b", "title": "T"}) == {"name": "a/b"}
    assert seen[0].method == "POST"
    assert json.loads(seen[0].content) == {"name": "a/b", "title": "T"}
    assert seen[0].headers["content-type"] == "application/json"


def test_put_json_passes_headers_and_a_412_is_refused() -> None:
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.headers.get("if-match") != '"g2"':
            return httpx.Response(
                412,
                headers={"Content-Type": PROBLEM},
                content=b'{"type": "https://hashex.dev/problems/precondition-failed"}',
            )
        return httpx.Response(200, json={"readers": ["b"]})

    with mock_hub(handle) as hub:
        body = {"readers": ["b"]}
        assert hub.put_json("/v1/sets/a/s/grants", body, {"If-Match": '"g2"'}) == body
        with pytest.raises(HubRefusedError) as caught:
            hub.put_json("/v1/sets/a/s/grants", body, {"If-Match": '"g1"'})
    assert caught.value.status == 412
    assert seen[0].method == "PUT"


def test_a_204_answer_is_none() -> None:
    with mock_hub(answer(204, b"", None)) as hub:
        assert hub.post_json("/v1/x", {}) is None


def test_a_write_answer_must_be_json() -> None:
    with (
        mock_hub(answer(201, b"<html>", "text/html")) as hub,
        pytest.raises(ResponseError, match="expected application/json"),
    ):
        hub.post_json("/v1/sets", {})


def _post_multipart(tmp_path: Path, data: bytes, **options: bool) -> httpx.Request:
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(201, json={"version": 2})

    delta = tmp_path / "delta"
    delta.write_bytes(data)
    with mock_hub(handle) as hub, delta.open("rb") as stream:
        answer_ = hub.post_multipart(
            "/v1/sets/a/s/versions",
            {"manifest": "hashex-manifest/v1\n", "signatures": b"[]"},
            {"delta": ("delta", stream)},
            **options,
        )
    assert answer_ == {"version": 2}
    return seen[0]


def test_post_multipart_sends_fields_and_streams_files_gzipped(tmp_path: Path) -> None:
    request = _post_multipart(tmp_path, lines(10))
    assert request.headers["content-type"].startswith("multipart/form-data; boundary=")
    assert request.headers["content-encoding"] == "gzip"
    # Compressed on the fly as the file is read: its length is not known up front.
    assert "content-length" not in request.headers
    assert request.headers["transfer-encoding"] == "chunked"
    body = gzip.decompress(request.content)
    assert b'name="manifest"\r\n\r\nhashex-manifest/v1\n' in body
    assert b'name="signatures"\r\n\r\n[]' in body
    assert b'name="delta"; filename="delta"\r\nContent-Type: application/octet-stream' in body
    assert lines(10) in body


def test_a_gzip_upload_inflates_to_the_identity_body(tmp_path: Path) -> None:
    data = lines(5000)
    packed = _post_multipart(tmp_path, data)
    plain = _post_multipart(tmp_path, data, gzip=False)
    assert "content-encoding" not in plain.headers
    boundaries = [
        request.headers["content-type"].split("boundary=")[1].encode()
        for request in (packed, plain)
    ]
    inflated = gzip.decompress(packed.content)
    assert len(inflated) > len(data) > 1.5 * len(packed.content)
    # The same body but for its (random) boundary.
    assert inflated.replace(boundaries[0], b"B") == plain.content.replace(boundaries[1], b"B")
    assert plain.content.endswith(b"--\r\n")


# -- failures of the network ---------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "cause"),
    [
        (httpx.ConnectError("[Errno 111] Connection refused"), "Connection refused"),
        (httpx.ConnectTimeout("timed out"), "no connection within 1 s"),
        (httpx.ReadTimeout("timed out"), "sent nothing for 1 s (read timeout)"),
        (httpx.RemoteProtocolError("illegal status line"), "illegal status line"),
    ],
)
def test_transport_errors_are_unreachable_naming_url_and_cause(
    error: httpx.TransportError, cause: str
) -> None:
    def handle(_request: httpx.Request) -> httpx.Response:
        raise error

    with mock_hub(handle) as hub, pytest.raises(HubUnreachableError) as caught:
        hub.get_json("/v1/health")
    assert str(caught.value).startswith("cannot reach the hub at https://hub.test/v1/health: ")
    assert cause in str(caught.value)


def test_a_failure_mid_stream_is_unreachable() -> None:
    def body() -> Iterator[bytes]:
        yield lines(10)
        raise httpx.ReadError("connection reset by peer")

    with (
        mock_hub(answer(200, body(), TEXT)) as hub,
        pytest.raises(HubUnreachableError, match="connection reset by peer"),
    ):
        hub.download("/d", io.BytesIO(), max_bytes=10_000)


def test_a_passed_deadline_sends_nothing() -> None:
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={})

    with mock_hub(handle) as hub, pytest.raises(HubUnreachableError, match="deadline passed"):
        hub.get_json("/v1/health", deadline=time.monotonic() - 1)
    assert seen == []


# -- the token stays secret -----------------------------------------------------------


def test_the_token_never_appears_in_an_error() -> None:
    echo = {"type": f"urn:{TOKEN}", "detail": f"bad token {TOKEN}"}
    handlers: list[Handler] = [
        answer(401, json.dumps(echo).encode(), PROBLEM),
        answer(302, b"", None, Location=f"https://evil.test/?t={TOKEN}"),
        answer(200, b"{", "application/json"),
        answer(200, b"{}", f"text/{TOKEN}"),
        answer(200, endless(b"x" * 1000), "application/json"),
    ]

    def leak(_request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError(f"proxy said: Authorization: Bearer {TOKEN}")

    handlers.append(leak)
    for handler in handlers:
        with (
            mock_hub(handler) as hub,
            pytest.raises((HubRefusedError, HubUnreachableError, ResponseError)) as caught,
        ):
            hub.get_json("/v1/sets")
        error = caught.value
        shown = [str(error), repr(error), *map(str, vars(error).values())]
        assert all(TOKEN not in text for text in shown), shown


# -- a real socket: timeouts and deadlines -------------------------------------------------


@contextmanager
def socket_hub(serve: Callable[[socket.socket, threading.Event], None]) -> Iterator[str]:
    """A one-connection TCP server on 127.0.0.1 running ``serve``; yields its URL.

    ``serve`` gets the connection and a stop event set at the end of the test,
    so a stalling server wakes up and the thread ends promptly.
    """
    listener = socket.create_server(("127.0.0.1", 0))
    # If the client never connects, the thread still ends.
    listener.settimeout(2 * SERVER_STALL)
    stop = threading.Event()

    def run() -> None:
        with listener:
            connection, _ = listener.accept()
            with connection:
                received = b""
                while b"\r\n\r\n" not in received:
                    data = connection.recv(65536)
                    if not data:
                        return
                    received += data
                serve(connection, stop)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(timeout=10)


HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=us-ascii\r\n"
    b"Content-Length: 10000000\r\n\r\n"
)
SERVER_STALL = 5.0


def stall_mid_body(connection: socket.socket, stop: threading.Event) -> None:
    connection.sendall(HEAD + lines(100))
    stop.wait(SERVER_STALL)


def stall_before_headers(_connection: socket.socket, stop: threading.Event) -> None:
    stop.wait(SERVER_STALL)


def trickle(connection: socket.socket, stop: threading.Event) -> None:
    # One byte every 0.1 s: never idle long enough for a read timeout.
    connection.sendall(HEAD)
    while not stop.wait(0.1):
        connection.sendall(b"0")


@pytest.mark.parametrize("serve", [stall_mid_body, stall_before_headers])
def test_a_hub_that_stops_answering_times_out(
    serve: Callable[[socket.socket, threading.Event], None],
) -> None:
    out = io.BytesIO()
    with socket_hub(serve) as url, HubClient(settings(url), LIMITS) as hub:
        started = time.monotonic()
        with pytest.raises(HubUnreachableError, match=r"sent nothing for 1 s \(read timeout\)"):
            hub.download("/v1/sets/a/b/versions/1/content", out, max_bytes=10_000_000)
        elapsed = time.monotonic() - started
    assert elapsed < 4
    assert TOKEN not in str(out.getvalue())


def test_a_near_deadline_shortens_the_read_timeout() -> None:
    with socket_hub(stall_mid_body) as url, HubClient(settings(url), LIMITS) as hub:
        started = time.monotonic()
        with pytest.raises(HubUnreachableError, match=r"sent nothing for 0.5 s"):
            hub.download("/d", io.BytesIO(), max_bytes=10_000_000, deadline=started + 0.5)
        elapsed = time.monotonic() - started
    assert elapsed < 0.9


def test_a_trickling_hub_is_stopped_by_the_deadline() -> None:
    with socket_hub(trickle) as url, HubClient(settings(url), LIMITS) as hub:
        started = time.monotonic()
        with pytest.raises(HubUnreachableError, match="deadline passed while reading"):
            hub.download("/d", io.BytesIO(), max_bytes=10_000_000, deadline=started + 1.0)
        elapsed = time.monotonic() - started
    assert 0.9 < elapsed < 3


def test_a_closed_port_is_unreachable() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # Nothing listens on the port once the probe is closed.
    with (
        HubClient(settings(f"http://127.0.0.1:{port}"), LIMITS) as hub,
        pytest.raises(
            HubUnreachableError, match=f"cannot reach the hub at http://127.0.0.1:{port}/v1/health"
        ),
    ):
        hub.get_json("/v1/health")
