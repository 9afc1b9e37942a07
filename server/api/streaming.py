"""Streamed entry bodies: optionally gzip, with stable strong ETags.

Gzip output is deterministic (no timestamp, no file name, fixed level), so
the same lines always compress to the same bytes and each encoding of a
version keeps one strong ETag forever.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Iterator

# wbits 16+15: a gzip wrapper whose header zlib writes with mtime 0 and no name.
_GZIP_WBITS = 16 + zlib.MAX_WBITS
# Level 1: a third of level 6's time on hex lines, for 3% more bytes.
GZIP_LEVEL = 1


def gzipped(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Deterministic gzip of a chunk stream."""
    compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, _GZIP_WBITS)
    for chunk in chunks:
        out = compressor.compress(chunk)
        if out:
            yield out
    yield compressor.flush()


def accepts_gzip(accept_encoding: str) -> bool:
    """Whether an Accept-Encoding header allows gzip (q > 0)."""
    for item in accept_encoding.split(","):
        name, _, params = item.strip().partition(";")
        if name.strip().lower() in ("gzip", "x-gzip", "*"):
            quality = params.strip().lower()
            return not quality.startswith("q=") or _quality(quality[2:]) > 0
    return False


def _quality(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return 0.0


def etag_for(sha256: str, gzip: bool) -> str:
    """The strong ETag of one encoding of a body whose identity digest is ``sha256``."""
    return f'"{sha256}.gz"' if gzip else f'"{sha256}"'
