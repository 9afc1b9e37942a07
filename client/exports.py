"""Writing a held set in the formats forensic tools load.

* ``lines``: the content bytes exactly; piped to ``sha256sum`` they give
  the signed content digest.
* ``md5sum``: ``<hex>  <agency>/<set>[:<label>]`` for one algorithm, which
  The Sleuth Kit indexes with ``hfind -i md5sum`` (and Autopsy imports).
* ``csv``: the header ``alg,hash,label,set,version``, for scripts and sheets.
* ``vics``: Project VIC VICS 2.0 JSON (``@odata.context`` and a ``Media``
  array), for Griffeye and other Project VIC tools.

VICS categories come from labels by ``VICS_CATEGORIES``; an entry without a
known category label is exported as category 1 with ``IsPrecategorized``
false: it is listed by the agency as known material, but nobody graded it,
and exporting it as 0 (non-pertinent) would hide it from the examiner.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator
from datetime import datetime

from client.protocol.entries import identity_of

# Label → Project VIC category (0 non-pertinent, 1 CAM, 2 exploitive /
# age-difficult, 3 CGI/animation, 4 comparison).  CAID grades A-C are all CAM.
VICS_CATEGORIES: dict[str, int] = {
    "vics-0": 0,
    "vics-1": 1,
    "vics-2": 2,
    "vics-3": 3,
    "vics-4": 4,
    "cat-a": 1,
    "cat-b": 1,
    "cat-c": 1,
}
UNGRADED_CATEGORY = 1
VICS_CONTEXT = "http://github.com/ICMEC/ProjectVic/DataModels/2.0.xml/hashex/$metadata#Media"
FORMATS = ("lines", "md5sum", "csv", "vics")


def _parts(line: bytes) -> tuple[str, str, str | None]:
    identity = identity_of(line).decode("ascii")
    alg, _, hex_ = identity.partition(":")
    label = line[len(identity) + 1 :].decode("ascii") or None
    return alg, hex_, label


def export_lines(content: Iterable[bytes]) -> Iterator[bytes]:
    """The content bytes exactly as signed."""
    for line in content:
        yield line + b"\n"


def export_md5sum(content: Iterable[bytes], name: str, alg: str) -> Iterator[bytes]:
    """``<hex>  <agency>/<set>[:<label>]`` for the entries of one algorithm."""
    for line in content:
        entry_alg, hex_, label = _parts(line)
        if entry_alg == alg:
            tag = name if label is None else f"{name}:{label}"
            yield f"{hex_}  {tag}\n".encode("ascii")


def export_csv(content: Iterable[bytes], name: str, version: int) -> Iterator[bytes]:
    """CSV with the header ``alg,hash,label,set,version``."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["alg", "hash", "label", "set", "version"])
    for line in content:
        alg, hex_, label = _parts(line)
        writer.writerow([alg, hex_, label or "", name, version])
        if buffer.tell() > 1 << 16:
            yield buffer.getvalue().encode("ascii")
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue().encode("ascii")


def export_vics(
    content: Iterable[bytes], name: str, version: int, updated: datetime
) -> Iterator[bytes]:
    """VICS 2.0 JSON: one Media item per MD5 or SHA1 entry, streamed."""
    yield (
        '{"@odata.context": '
        + json.dumps(VICS_CONTEXT)
        + ', "Source": '
        + json.dumps(f"hashex {name} version {version}")
        + ', "Media": ['
    ).encode("ascii")
    media_id = 0
    for line in content:
        alg, hex_, label = _parts(line)
        if alg not in ("md5", "sha1"):
            continue
        media_id += 1
        category = VICS_CATEGORIES.get(label or "")
        item = {
            "MediaID": media_id,
            "Category": UNGRADED_CATEGORY if category is None else category,
            "IsPrecategorized": category is not None,
            "MD5": hex_.upper() if alg == "md5" else None,
            "SHA1": hex_.upper() if alg == "sha1" else None,
            "DateUpdated": updated.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "Tags": [label] if label else [],
        }
        yield (("\n  " if media_id == 1 else ",\n  ") + json.dumps(item)).encode("ascii")
    yield b"\n]}\n"
