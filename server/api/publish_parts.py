"""A publish's multipart body, read as it arrives: small documents first, the delta streamed.

A first version of millions of entries is hundreds of megabytes of delta.
Werkzeug's form parser would spool it to disk before the view runs, and
bound it only by one fixed request limit.  Read part by part instead, the
manifest and signatures (each at most a document's size) are in hand before
a byte of the delta is: the service verifies the manifest's signatures
first, and then reads the delta straight from the request, bounded by what
the verified counts allow (:func:`server.services.publishing.max_delta_bytes`).
So a gzip upload may inflate to whatever the agency signed for, and not a
byte more; nothing is spooled twice.

So the ``manifest`` and ``signatures`` parts should come first, in either
order, and the ``delta`` last, as ``curl -F manifest=@m -F signatures=@s.json
-F delta=@d`` and ``hashex publish`` send them.  A delta sent before the
documents is taken too, spooled to disk and held to the upload limit as
inflated bytes (nothing bounds it better before the counts are known).  A
part named twice, an unknown part or anything after the last part is
refused with 400.
"""

from __future__ import annotations

import io
import tempfile
from typing import IO, Any, BinaryIO, cast

from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.sansio.multipart import (
    Data,
    Epilogue,
    Event,
    Field,
    File,
    MultipartDecoder,
    NeedData,
    Preamble,
)

from server.errors import BadRequestError, TooLargeError

_READ_BYTES = 64 * 1024
DOCUMENTS = ("manifest", "signatures")
ORDER = (*DOCUMENTS, "delta")


class PublishParts:
    """The manifest and signatures of a publish, and its delta as a stream still arriving."""

    def __init__(
        self, stream: IO[bytes], boundary: bytes, *, max_document_bytes: int, spool_limit: int
    ) -> None:
        self._stream = stream
        self._decoder = MultipartDecoder(boundary, max_parts=len(ORDER))
        self._max_document_bytes = max_document_bytes
        self._ended = False
        self.documents: dict[str, bytes] = {}
        spooled: BinaryIO | None = None
        try:
            while len(self.documents) < len(DOCUMENTS):
                wanted = [d for d in DOCUMENTS if d not in self.documents]
                name = self._expect_part(*wanted, *(["delta"] if spooled is None else []))
                if name == "delta":
                    spooled = self._spooled_delta(spool_limit)
                else:
                    self.documents[name] = self._small_part(name)
        except BaseException:
            if spooled is not None:
                spooled.close()
            raise
        if spooled is not None:
            self.delta = spooled
            try:
                self._expect_end()
            except BaseException:
                spooled.close()
                raise
        else:
            self._expect_part("delta")
            self.delta = io.BufferedReader(_DeltaStream(self), _READ_BYTES)

    def __enter__(self) -> PublishParts:
        """The parts, for the length of a ``with`` block that closes them."""
        return self

    def __exit__(self, *_exc: object) -> None:
        """Close the delta (and remove its spool file, if it has one)."""
        self.delta.close()

    def _spooled_delta(self, limit: int) -> BinaryIO:
        """A delta sent before the documents: spooled to disk, held to ``limit`` inflated bytes."""
        spool = tempfile.TemporaryFile()  # noqa: SIM115 - handed to the caller, closed on error
        try:
            size = 0
            while (data := self.next_delta_data(then_end=False)) is not None:
                size += len(data)
                if size > limit:
                    raise TooLargeError(
                        f"a delta sent before the manifest is at most {limit} bytes; send the "
                        "manifest and signatures first to be bounded by the manifest's counts",
                        field="delta",
                        limit=limit,
                    )
                spool.write(data)
            spool.seek(0)
        except BaseException:
            spool.close()
            raise
        return cast(BinaryIO, spool)

    def _small_part(self, name: str) -> bytes:
        value = bytearray()
        while True:
            event = self._next()
            if not isinstance(event, Data):
                raise BadRequestError(f"the {name} part is malformed", field=name)
            value += event.data
            if len(value) > self._max_document_bytes:
                raise TooLargeError(
                    f"the {name} is over {self._max_document_bytes} bytes",
                    field=name,
                    limit=self._max_document_bytes,
                )
            if not event.more_data:
                return bytes(value)

    def _expect_part(self, *names: str) -> str:
        """The name of the next part, which must be one of ``names``."""
        event = self._next()
        while isinstance(event, Preamble):
            event = self._next()
        if isinstance(event, Field | File) and event.name in names:
            return event.name
        found = f"part {event.name!r}" if isinstance(event, Field | File) else "the end of the body"
        expected = " or ".join(repr(n) for n in names)
        raise BadRequestError(
            f"expected the {expected} part but found {found}: a publish is multipart with the "
            "parts 'manifest' and 'signatures', then 'delta' last",
            field=names[0],
        )

    def next_delta_data(self, *, then_end: bool = True) -> bytes | None:
        """The next bytes of the delta part; None once it has ended.

        With ``then_end``, the body must end with the delta.
        """
        if self._ended:
            return None
        event = self._next()
        if not isinstance(event, Data):
            raise BadRequestError("the delta part is malformed", field="delta")
        if not event.more_data:
            self._ended = True
            if then_end:
                self._expect_end()
        return event.data

    def _expect_end(self) -> None:
        event = self._next()
        if not isinstance(event, Epilogue):
            raise BadRequestError(
                "a publish ends with its 'delta' part; nothing may follow it", field="delta"
            )

    def _next(self) -> Event:
        while True:
            try:
                event = self._decoder.next_event()
            except RequestEntityTooLarge:
                raise BadRequestError(
                    "a publish has exactly the parts 'manifest', 'signatures' and 'delta'"
                ) from None
            except ValueError as exc:
                raise BadRequestError(f"the multipart body is malformed: {exc}") from None
            if not isinstance(event, NeedData):
                return event
            # The stream's own limit (the upload limit on the wire) raises
            # RequestEntityTooLarge here, which the view reports with it.
            chunk = self._stream.read(_READ_BYTES)
            self._decoder.receive_data(chunk or None)


class _DeltaStream(io.RawIOBase):
    """The delta part's bytes as a readable stream, decoded as they are read."""

    def __init__(self, parts: PublishParts) -> None:
        self._parts = parts
        self._pending = b""

    def readable(self) -> bool:
        """Always: it is a reader."""
        return True

    def readinto(self, buffer: Any) -> int:
        """Fill ``buffer`` from the delta part; 0 at its end."""
        while not self._pending:
            data = self._parts.next_delta_data()
            if data is None:
                return 0
            self._pending = data
        size = min(len(buffer), len(self._pending))
        buffer[:size] = self._pending[:size]
        self._pending = self._pending[size:]
        return size
