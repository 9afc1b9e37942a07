"""The client's one door to a hub: HTTP with bounds on size, time and trust.

The hub is trusted for availability only, so everything it sends is read as if
it were hostile: every body has a byte cap counted as it streams (never taken
from ``Content-Length``), gzip is inflated here in bounded steps so a small
bomb cannot balloon in memory or on disk, every read has a timeout and a whole
sync a deadline, content types are checked, and redirects are never followed.

Failures map onto the client's error tree (``client.errors``):

- no answer (connection, TLS, timeout, deadline)      -> ``HubUnreachableError``
- an HTTP error status, with its problem ``type``     -> ``HubRefusedError``
- an answer that contradicts the request (content
  type, size, JSON, encoding)                         -> ``ResponseError``

No message, exception or ``repr`` carries the bearer token: it is scrubbed
from anything the hub or the network library says before that is shown.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import ssl
import time
import zlib
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from importlib import metadata
from types import TracebackType
from typing import Any, BinaryIO, NoReturn, overload

import httpx

from client.errors import HubRefusedError, HubUnreachableError, ResponseError
from client.limits import Limits
from client.protocol.errors import InputError
from client.settings import CA_BUNDLE_VAR, CLIENT_KEY_VAR, ClientSettings

JSON_TYPE = "application/json"
PROBLEM_TYPE = "application/problem+json"
TEXT_TYPE = "text/plain"
TEXT_CHARSET = "us-ascii"
BLANK_PROBLEM = "about:blank"

# An error answer is for people; 64 KB holds any honest problem document.
ERROR_BODY_CAP = 64 * 1024
# The most a hub-supplied problem type or detail may add to a message.
_SHOWN_TEXT_CAP = 500
# Inflate gzip in steps of this many bytes, so memory stays bounded per step.
_INFLATE_STEP = 64 * 1024
# gzip framing adds a little to incompressible data; past this much raw input
# beyond the decoded cap, a body is padding (empty deflate blocks), not data.
_RAW_SLACK = 64 * 1024

# Uploads: files are read this much at a time, and gzip at level 1, which
# packs a delta of hex lines to about 52% at ~100 MB/s (level 6 packs it to
# 51% at a third of the speed).
_UPLOAD_READ = 1 << 20
UPLOAD_GZIP_LEVEL = 1

Params = Mapping[str, str | int]


def user_agent() -> str:
    """``hashex/<version>``, from the installed distribution."""
    try:
        version = metadata.version("hashex")
    except metadata.PackageNotFoundError:
        # Run from a source tree that was never installed.
        version = "unknown"
    return f"hashex/{version}"


def tls_context(settings: ClientSettings) -> ssl.SSLContext:
    """The TLS context for the hub: certificates verified, hostnames checked.

    The trust anchors are ``HASHEX_CA_BUNDLE`` alone when it is set (a private
    CA), else the system's store; the client certificate, when configured, is
    loaded for mutual TLS.  The key must be unencrypted: the client never prompts.
    """
    try:
        context = ssl.create_default_context(
            cafile=None if settings.ca_bundle is None else str(settings.ca_bundle)
        )
    except (ssl.SSLError, OSError) as exc:
        raise InputError(
            f"{CA_BUNDLE_VAR}: cannot load {settings.ca_bundle} as PEM CA certificates ({exc})"
        ) from exc
    if settings.client_cert is not None and settings.client_key is not None:
        try:
            context.load_cert_chain(
                settings.client_cert, settings.client_key, password=_refuse_password
            )
        except (ssl.SSLError, OSError) as exc:
            raise InputError(
                f"HASHEX_CLIENT_CERT / {CLIENT_KEY_VAR}: cannot load {settings.client_cert} "
                f"with key {settings.client_key}; expected a PEM certificate and its matching "
                f"unencrypted PEM key ({exc})"
            ) from exc
    return context


def _refuse_password() -> bytes:
    # OpenSSL would otherwise ask for the passphrase on the terminal.
    raise InputError(
        f"{CLIENT_KEY_VAR}: the key is encrypted; hashex never prompts, so give an "
        "unencrypted PEM key (readable by this user only)"
    )


class HubClient:
    """An HTTP client of one hub, built from the settings and the limits.

    ``transport`` replaces the network (tests pass an ``httpx.MockTransport``
    to play a hostile hub).  Every request method takes ``deadline``, a
    ``time.monotonic()`` instant after which it stops with
    ``HubUnreachableError``; a read blocked at that moment ends within the
    read timeout.
    """

    def __init__(
        self,
        settings: ClientSettings,
        limits: Limits | None = None,
        *,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._limits = Limits() if limits is None else limits
        server = settings.require_server()
        self._token = settings.token
        headers = {"User-Agent": user_agent(), "Accept-Encoding": "gzip"}
        if settings.token is not None:
            headers["Authorization"] = f"Bearer {settings.token}"
        self._http = httpx.Client(
            base_url=server,
            headers=headers,
            verify=tls_context(settings),
            timeout=self._timeout(None),
            transport=transport,
            follow_redirects=False,
            # Environment proxies only for https: through a proxy, a plain
            # loopback hub's token would leave this machine in clear.
            trust_env=server.startswith("https://"),
        )

    @property
    def base_url(self) -> str:
        """The hub's URL, as requests are resolved against it."""
        return str(self._http.base_url)

    def close(self) -> None:
        """Close the connections to the hub."""
        self._http.close()

    def __enter__(self) -> HubClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # -- requests -------------------------------------------------------------

    @overload
    def get_json(
        self, path: str, params: Params | None = None, *, deadline: float | None = None
    ) -> tuple[Any, httpx.Headers]: ...

    @overload
    def get_json(
        self,
        path: str,
        params: Params | None = None,
        *,
        etag: str | None,
        deadline: float | None = None,
    ) -> tuple[Any, httpx.Headers] | None: ...

    def get_json(
        self,
        path: str,
        params: Params | None = None,
        *,
        etag: str | None = None,
        deadline: float | None = None,
    ) -> tuple[Any, httpx.Headers] | None:
        """GET a JSON document: its value and the response headers.

        Only 200 with ``application/json`` of at most ``max_json_bytes`` is
        accepted.  With ``etag``, asks ``If-None-Match`` and returns None on 304.
        """
        headers = {"Accept": JSON_TYPE}
        if etag is not None:
            headers["If-None-Match"] = etag
        with self._exchange("GET", path, deadline, params=params, headers=headers) as response:
            if etag is not None and response.status_code == 304:
                return None
            self._expect(response, 200, deadline)
            return self._json_body(response, deadline), response.headers

    def download(
        self,
        path: str,
        out: BinaryIO,
        *,
        max_bytes: int,
        params: Params | None = None,
        deadline: float | None = None,
    ) -> tuple[str, int]:
        """Stream a ``text/plain`` body into ``out``: its SHA-256 (hex) and size.

        The bytes hashed and written are the decoded ones (gzip inflated).  More
        than ``max_bytes`` of them is a ``ResponseError`` raised before the
        chunk that would pass the cap is written, so ``out`` never holds more.
        """
        headers = {"Accept": TEXT_TYPE}
        with self._exchange("GET", path, deadline, params=params, headers=headers) as response:
            self._expect(response, 200, deadline)
            kind, parameters = _media_type(response)
            if kind != TEXT_TYPE or parameters.get("charset", TEXT_CHARSET) != TEXT_CHARSET:
                self._contradiction(
                    response,
                    f"sent {_shown_type(response)}, expected {TEXT_TYPE}; charset=us-ascii",
                )
            digest = hashlib.sha256()
            size = 0
            for chunk in self._body(response, max_bytes, deadline):
                digest.update(chunk)
                out.write(chunk)
                size += len(chunk)
            return digest.hexdigest(), size

    def post_json(self, path: str, body: Any, *, deadline: float | None = None) -> Any:
        """POST ``body`` as JSON; the JSON answer of a 2xx (None for 204)."""
        with self._exchange("POST", path, deadline, json=body) as response:
            return self._json_answer(response, deadline)

    def put_json(
        self,
        path: str,
        body: Any,
        headers: Mapping[str, str] | None = None,
        *,
        deadline: float | None = None,
    ) -> Any:
        """PUT ``body`` as JSON (``headers`` e.g. ``If-Match``); the JSON answer of a 2xx."""
        with self._exchange("PUT", path, deadline, json=body, headers=headers) as response:
            return self._json_answer(response, deadline)

    def post_multipart(
        self,
        path: str,
        fields: Mapping[str, bytes | str],
        files: Mapping[str, tuple[str, BinaryIO]],
        *,
        deadline: float | None = None,
        gzip: bool = True,
        answer_timeout: float | None = None,
    ) -> Any:
        """POST ``multipart/form-data``: ``fields`` as values, then ``files`` streamed.

        ``files`` maps a part name to (file name, open binary file).  The body
        goes ``Content-Encoding: gzip`` (unless ``gzip`` is False), compressed
        on the fly as the files are read: no whole body is held or spooled
        again, so it is sent chunked, without ``Content-Length``.  Returns the
        JSON answer of a 2xx (None for 204).  ``answer_timeout`` replaces the
        read timeout when the hub has work to do before it can answer (a
        publish of millions of entries is checked and committed first).
        """
        boundary = f"hashex-{secrets.token_hex(16)}"
        headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
        body = _multipart(boundary, fields, files)
        if gzip:
            headers["Content-Encoding"] = "gzip"
            body = _gzipped(body)
        with self._exchange(
            "POST", path, deadline, content=body, headers=headers, read_timeout=answer_timeout
        ) as response:
            return self._json_answer(response, deadline)

    # -- the exchange -----------------------------------------------------------

    @contextmanager
    def _exchange(
        self,
        method: str,
        path: str,
        deadline: float | None,
        *,
        read_timeout: float | None = None,
        **options: Any,
    ) -> Iterator[httpx.Response]:
        """Send one request and yield its unread response; network failures as ours."""
        request = self._http.build_request(method, path, **options)
        timeout = self._timeout(deadline, request.url, read_timeout)
        request.extensions["timeout"] = timeout.as_dict()
        try:
            response = self._http.send(request, stream=True)
            try:
                yield response
            finally:
                response.close()
        except httpx.TransportError as exc:
            raise HubUnreachableError(
                self._scrub(f"cannot reach the hub at {request.url}: {_cause(exc, timeout)}")
            ) from exc

    def _timeout(
        self, deadline: float | None, url: httpx.URL | None = None, read: float | None = None
    ) -> httpx.Timeout:
        """The limits' timeouts (``read`` instead of theirs), shortened to ``deadline``."""
        connect, read = self._limits.connect_timeout, read or self._limits.read_timeout
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise HubUnreachableError(f"the deadline passed before asking the hub for {url}")
            connect, read = min(connect, left), min(read, left)
        return httpx.Timeout(connect=connect, read=read, write=read, pool=connect)

    def _expect(self, response: httpx.Response, status: int, deadline: float | None) -> None:
        """Refuse any status but ``status``: errors and redirects as the hub's refusal."""
        if response.status_code == status:
            return
        if response.is_success or response.status_code == 304:
            self._contradiction(response, f"answered {response.status_code}, expected {status}")
        self._refused(response, deadline)

    def _refused(self, response: httpx.Response, deadline: float | None) -> NoReturn:
        """Raise the hub's refusal: its problem type and detail, read with a small cap."""
        body = bytearray()
        try:
            for chunk in self._body(response, ERROR_BODY_CAP, deadline):
                body += chunk
        except (httpx.TransportError, ResponseError, HubUnreachableError):
            # The status is the answer; a broken or oversized error body only
            # loses the explanation.
            body.clear()
        problem_type, detail = BLANK_PROBLEM, response.reason_phrase or "error"
        problem = _problem(response, bytes(body))
        if problem is not None:
            problem_type = problem.get("type", problem_type)
            detail = problem.get("detail", problem.get("title", detail))
        if response.is_redirect:
            detail = f"redirects to {response.headers.get('location', '?')}, not followed"
        raise HubRefusedError(response.status_code, self._scrub(problem_type), self._scrub(detail))

    def _json_answer(self, response: httpx.Response, deadline: float | None) -> Any:
        """The JSON value of a 2xx answer; None for 204 No Content."""
        if not response.is_success:
            self._refused(response, deadline)
        if response.status_code == 204:
            return None
        return self._json_body(response, deadline)

    def _json_body(self, response: httpx.Response, deadline: float | None) -> Any:
        kind, parameters = _media_type(response)
        if kind != JSON_TYPE or parameters.get("charset", "utf-8") != "utf-8":
            self._contradiction(response, f"sent {_shown_type(response)}, expected {JSON_TYPE}")
        data = b"".join(self._body(response, self._limits.max_json_bytes, deadline))
        try:
            return json.loads(data.decode("utf-8"), parse_constant=_refuse_constant)
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            self._contradiction(response, f"sent a body that is not valid JSON ({exc})")

    def _body(
        self, response: httpx.Response, limit: int, deadline: float | None
    ) -> Iterator[bytes]:
        """The decoded body in chunks, stopping with ``ResponseError`` past ``limit`` bytes.

        The check comes before a chunk is yielded, so a caller never sees more
        than ``limit`` bytes.  Only identity and gzip are accepted, as the
        request asked for nothing else.
        """
        encoding = response.headers.get("content-encoding", "identity").strip().lower()
        if encoding not in ("identity", "gzip"):
            self._contradiction(response, f"used Content-Encoding {encoding!r}; asked for gzip")
        inflater = zlib.decompressobj(wbits=31) if encoding == "gzip" else None
        raw_limit = limit + limit // 64 + _RAW_SLACK
        raw_size = size = 0
        for raw in _raw_stream(response):
            raw_size += len(raw)
            if raw_size > raw_limit:
                self._too_large(response, limit)
            pieces = [raw] if inflater is None else self._inflate(response, inflater, raw)
            for piece in pieces:
                size += len(piece)
                if size > limit:
                    self._too_large(response, limit)
                yield piece
            if deadline is not None and time.monotonic() > deadline:
                raise HubUnreachableError(
                    f"the deadline passed while reading {response.request.url} "
                    f"({size} bytes received)"
                )
        if inflater is not None and not inflater.eof:
            self._contradiction(response, "sent a gzip body that ends before its end marker")

    def _inflate(
        self, response: httpx.Response, inflater: zlib._Decompress, data: bytes
    ) -> Iterator[bytes]:
        """Inflate ``data`` in bounded steps; garbage or data after the end is refused."""
        while True:
            try:
                piece = inflater.decompress(data, _INFLATE_STEP)
            except zlib.error as exc:
                self._contradiction(response, f"sent a broken gzip body ({exc})")
            if inflater.unused_data:
                self._contradiction(response, "sent data after the end of its gzip body")
            if piece:
                yield piece
            data = inflater.unconsumed_tail
            # A full step may leave output pending inside zlib even with no
            # input left, so stop only on a short step with nothing to feed.
            if inflater.eof or (not data and len(piece) < _INFLATE_STEP):
                return

    def _too_large(self, response: httpx.Response, limit: int) -> NoReturn:
        self._contradiction(response, f"sent more than the {limit} bytes allowed")

    def _contradiction(self, response: httpx.Response, what: str) -> NoReturn:
        request = response.request
        raise ResponseError(self._scrub(f"the hub {what} ({request.method} {request.url})"))

    def _scrub(self, text: str) -> str:
        """``text`` fit to show: no token, no control characters, bounded length."""
        if self._token:
            text = text.replace(self._token, "[token]")
        shown = "".join(c if c.isprintable() else "?" for c in text)
        if len(shown) > _SHOWN_TEXT_CAP:
            shown = shown[:_SHOWN_TEXT_CAP] + "..."
        return shown


def _multipart(
    boundary: str, fields: Mapping[str, bytes | str], files: Mapping[str, tuple[str, BinaryIO]]
) -> Iterator[bytes]:
    """A ``multipart/form-data`` body in pieces: the fields, then each file as it is read."""
    delimiter = f"--{boundary}\r\n".encode("ascii")
    for name, value in fields.items():
        yield delimiter + _disposition(name) + b"\r\n\r\n"
        yield (value.encode() if isinstance(value, str) else value) + b"\r\n"
    for name, (filename, stream) in files.items():
        yield (
            delimiter
            + _disposition(name, filename)
            + b"\r\nContent-Type: application/octet-stream\r\n\r\n"
        )
        while chunk := stream.read(_UPLOAD_READ):
            yield chunk
        yield b"\r\n"
    yield f"--{boundary}--\r\n".encode("ascii")


def _disposition(name: str, filename: str | None = None) -> bytes:
    """The part's ``Content-Disposition``; names are plain ASCII words, never escaped."""
    for text in (name, filename or ""):
        if not text.isascii() or not text.isprintable() or '"' in text:
            raise ValueError(f"a multipart name or file name must be plain ASCII: {text!r}")
    line = f'Content-Disposition: form-data; name="{name}"'
    if filename is not None:
        line += f'; filename="{filename}"'
    return line.encode("ascii")


def _gzipped(pieces: Iterable[bytes]) -> Iterator[bytes]:
    """``pieces`` compressed as one gzip member, on the fly (no file name, no time)."""
    deflater = zlib.compressobj(UPLOAD_GZIP_LEVEL, zlib.DEFLATED, 31)
    for piece in pieces:
        packed = deflater.compress(piece)
        if packed:
            yield packed
    yield deflater.flush()


def _cause(exc: httpx.TransportError, timeout: httpx.Timeout) -> str:
    """What went wrong, in words; a timeout with the time it allowed."""
    if isinstance(exc, httpx.ConnectTimeout):
        return f"no connection within {_seconds(timeout.connect)} s"
    if isinstance(exc, httpx.ReadTimeout):
        return f"the hub sent nothing for {_seconds(timeout.read)} s (read timeout)"
    if isinstance(exc, httpx.WriteTimeout):
        return f"the hub took nothing for {_seconds(timeout.write)} s (write timeout)"
    if isinstance(exc, httpx.PoolTimeout):
        return f"no free connection within {_seconds(timeout.pool)} s"
    return str(exc) or type(exc).__name__


def _seconds(value: float | None) -> str:
    return "unlimited" if value is None else f"{round(value, 1):g}"


def _raw_stream(response: httpx.Response) -> httpx.SyncByteStream:
    """The body as it came off the wire, before httpx decodes anything.

    Read from the stream itself rather than ``iter_raw``: a transport that
    answers with bytes in hand (``httpx.MockTransport`` given ``content=``)
    leaves a response httpx has already read, whose raw stream is still there.
    """
    stream = response.stream
    if not isinstance(stream, httpx.SyncByteStream):
        raise TypeError("HubClient is synchronous; its transport gave an async stream")
    return stream


def _media_type(response: httpx.Response) -> tuple[str, dict[str, str]]:
    """The lowercased media type and parameters of ``Content-Type``."""
    kind, *parameters = response.headers.get("content-type", "").split(";")
    parsed: dict[str, str] = {}
    for parameter in parameters:
        name, _, value = parameter.partition("=")
        parsed[name.strip().lower()] = value.strip().strip('"').lower()
    return kind.strip().lower(), parsed


def _shown_type(response: httpx.Response) -> str:
    return response.headers.get("content-type") or "no Content-Type"


def _problem(response: httpx.Response, body: bytes) -> dict[str, str] | None:
    """The string members of an RFC 9457 problem body, or None if it is not one."""
    if _media_type(response)[0] != PROBLEM_TYPE:
        return None
    try:
        value = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    if not isinstance(value, dict):
        return None
    return {name: item for name, item in value.items() if isinstance(item, str)}


def _refuse_constant(name: str) -> NoReturn:
    # JSON has no NaN or Infinity; Python's parser accepts them unless told not to.
    raise ValueError(f"{name} is not JSON")
