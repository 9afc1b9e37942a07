"""Accept ``Content-Encoding: gzip`` request bodies, with a cap on what they inflate to.

A WSGI middleware, so every view (and Werkzeug's multipart parser, which
spools large parts to disk) reads the inflated body as if it had been sent
plain.  The cap is the same request-size limit as for plain bodies: a small
gzip bomb is refused with 413 as soon as its output passes the limit, without
ever holding more than one chunk in memory.
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, BinaryIO

from werkzeug.exceptions import BadRequest, RequestEntityTooLarge

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

_READ_BYTES = 64 * 1024


class GunzipStream(io.RawIOBase):
    """A readable stream of the inflated bytes of a gzip stream, at most ``limit``."""

    def __init__(self, compressed: BinaryIO, limit: int) -> None:
        super().__init__()
        self._compressed = compressed
        self._inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        self._limit = limit
        self._produced = 0
        self._pending = b""

    def readable(self) -> bool:
        """Always: this is an input stream."""
        return True

    def readinto(self, buffer: Any) -> int:
        """Fill ``buffer`` with inflated bytes; 0 at the end of the body."""
        while not self._pending:
            if self._inflater.eof:
                return 0
            chunk = self._inflater.unconsumed_tail or self._compressed.read(_READ_BYTES)
            if not chunk:
                raise BadRequest("the gzip request body ends early")
            try:
                self._pending = self._inflater.decompress(chunk, _READ_BYTES)
            except zlib.error:
                raise BadRequest("the request body is not valid gzip") from None
            self._produced += len(self._pending)
            if self._produced > self._limit:
                raise RequestEntityTooLarge(
                    f"the request body inflates to more than {self._limit} bytes"
                )
        size = min(len(buffer), len(self._pending))
        buffer[:size] = self._pending[:size]
        self._pending = self._pending[size:]
        return size


class GzipRequestMiddleware:
    """Inflate gzip request bodies before the application sees them."""

    def __init__(self, app: WSGIApplication, limit: int) -> None:
        self.app = app
        self.limit = limit

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        """Swap a gzip body for its inflated stream; pass everything else through."""
        if environ.get("HTTP_CONTENT_ENCODING", "").strip().lower() == "gzip":
            environ["wsgi.input"] = io.BufferedReader(
                GunzipStream(environ["wsgi.input"], self.limit), _READ_BYTES
            )
            # The inflated length is unknown until read: the body now ends
            # where the stream does, and the cap above bounds it.
            environ.pop("CONTENT_LENGTH", None)
            environ.pop("HTTP_CONTENT_ENCODING")
            environ["wsgi.input_terminated"] = True
        return self.app(environ, start_response)
