"""The request body as the app reads it: from a client that may be slow, or gzip.

A WSGI middleware, so every view (and Werkzeug's multipart parser, which
spools large parts to disk) reads the body through it:

* a client that stops sending mid-body makes the socket time out (the
  worker sets the timeout, :mod:`server.worker`); that, a client that
  hangs up, and a chunked body that breaks the chunked coding become
  Werkzeug's 408 and 400, which the hub answers as problems, instead of an
  exception that would be logged as the hub's own failure;
* a ``Content-Encoding: gzip`` body is inflated on the fly, one chunk at a
  time, its compressed bytes held to the upload limit; what it inflates to
  is bounded by the endpoint as it reads: the JSON cap, or a publish's
  parts (its documents by their size, its delta by the counts its verified
  manifest signs for).  A gzip bomb is refused with 413 as soon as its
  output passes the endpoint's bound, never held in memory.
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, BinaryIO

from gunicorn.http.errors import NoMoreData, ParseException
from werkzeug.exceptions import BadRequest, ClientDisconnected, RequestEntityTooLarge
from werkzeug.exceptions import RequestTimeout as RequestTimeoutHTTP

from server.api.problems import problem_response, status_problem

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

_READ_BYTES = 64 * 1024
# Set in the WSGI environ when the body the app reads is an inflated gzip one.
INFLATED_KEY = "hashex.inflated"


class ClientStream(io.RawIOBase):
    """The raw request body, with a client's stall or hang-up turned into an HTTP error."""

    def __init__(self, raw: BinaryIO) -> None:
        super().__init__()
        self._raw = raw

    def readable(self) -> bool:
        """Always: this is an input stream."""
        return True

    def readinto(self, buffer: Any) -> int:
        """Fill ``buffer`` from the client; 0 at the end of the body."""
        try:
            data = self._raw.read(len(buffer))
        except TimeoutError:
            raise RequestTimeoutHTTP("the client stopped sending the request body") from None
        except (ConnectionError, NoMoreData):
            raise ClientDisconnected("the client hung up while sending the body") from None
        except ParseException as exc:
            raise BadRequest(f"the chunked request body is malformed: {exc}") from None
        size = len(data)
        buffer[:size] = data
        return size


class GunzipStream(io.RawIOBase):
    """A readable stream of the inflated bytes of a gzip stream of at most ``limit`` bytes."""

    def __init__(self, compressed: BinaryIO, limit: int) -> None:
        super().__init__()
        self._compressed = compressed
        self._inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        self._limit = limit
        self._consumed = 0
        self._pending = b""

    def readable(self) -> bool:
        """Always: this is an input stream."""
        return True

    def readinto(self, buffer: Any) -> int:
        """Fill ``buffer`` with inflated bytes; 0 at the end of the body."""
        while not self._pending:
            if self._inflater.eof:
                # One gzip member and nothing after it: anything more would be
                # read by some and ignored by others.
                if self._inflater.unused_data or self._compressed.read(1):
                    raise BadRequest("the request body holds data after its gzip stream")
                return 0
            chunk = self._inflater.unconsumed_tail
            if not chunk:
                chunk = self._compressed.read(_READ_BYTES)
                self._consumed += len(chunk)
                if self._consumed > self._limit:
                    raise RequestEntityTooLarge(
                        f"the gzip request body is over {self._limit} bytes"
                    )
            if not chunk:
                raise BadRequest("the gzip request body ends early")
            try:
                self._pending = self._inflater.decompress(chunk, _READ_BYTES)
            except zlib.error:
                raise BadRequest("the request body is not valid gzip") from None
        size = min(len(buffer), len(self._pending))
        buffer[:size] = self._pending[:size]
        self._pending = self._pending[size:]
        return size


class RequestBodyMiddleware:
    """Read every request body through :class:`ClientStream`, inflating gzip ones."""

    def __init__(self, app: WSGIApplication, limit: int) -> None:
        self.app = app
        self.limit = limit

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        """Wrap the body stream; swap a gzip body for its inflated stream."""
        encoding = environ.get("HTTP_CONTENT_ENCODING", "").strip().lower()
        if encoding not in ("", "identity", "gzip"):
            response = problem_response(
                status_problem(
                    415, f"the content encoding {encoding[:40]!r} is not taken; send gzip or none"
                ),
                415,
            )
            return response(environ, start_response)
        stream: BinaryIO = io.BufferedReader(ClientStream(environ["wsgi.input"]), _READ_BYTES)
        if encoding == "gzip":
            stream = io.BufferedReader(GunzipStream(stream, self.limit), _READ_BYTES)
            # The inflated length is unknown until read: the body now ends
            # where the stream does, and the caps bound it.
            environ.pop("CONTENT_LENGTH", None)
            environ.pop("HTTP_CONTENT_ENCODING")
            environ["wsgi.input_terminated"] = True
            environ[INFLATED_KEY] = True
        environ["wsgi.input"] = stream
        return self.app(environ, start_response)
