"""Pulling a large content through a real gunicorn costs the worker flat memory.

Two sets are published in this process through the Flask test client, one of
100,000 and one of 400,000 sha512 entries.  Then ``hashex-server serve
--workers 1`` serves them on 127.0.0.1 and httpx streams each content (identity,
then gzip) and discards it while hashing it.  The worker's peak RSS
(``VmHWM`` in ``/proc/<pid>/status``, a high-water mark) is read after the
100k pulls and again after the 400k pulls: the second may exceed the first by
at most 20 MB.

A pull the client abandons halfway must close its database cursor.

The 400k content is about 41 MB larger than the 100k one, so a worker
that held a whole body (or its rows) in memory would break the bound.
"""

from __future__ import annotations

import gc
import hashlib
import random
import time
import zlib
from pathlib import Path

import httpx
from flask.testing import FlaskClient

from server.services.callers import Role
from tests.hubserver import StartHub
from tests.server.seeding import AgencyKeys, SetChain, add_agency, add_set, publish_body

SMALL, LARGE = 100_000, 400_000
MAX_GROWTH_BYTES = 20 * 1024 * 1024
PULL_SECONDS = 60.0


def _sha512_lines(rng: random.Random, count: int) -> list[bytes]:
    return [b"sha512:" + rng.randbytes(64).hex().encode() for _ in range(count)]


def _publish(client: FlaskClient, agency: AgencyKeys, chain: SetChain, count: int) -> None:
    candidate = chain.build(_sha512_lines(random.Random(), count))
    body, content_type = publish_body(candidate)
    response = client.post(chain.url, data=body, content_type=content_type, headers=agency.auth())
    assert response.status_code == 201, response.get_data(as_text=True)
    chain.accept(candidate)


def _peak_rss(pid: int) -> int:
    """The process's peak resident set size (VmHWM), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            value, unit = line.split()[1:3]
            assert unit == "kB"
            return int(value) * 1024
    raise AssertionError(f"no VmHWM in /proc/{pid}/status")


def _pull(http: httpx.Client, url: str, headers: dict[str, str], gzip: bool) -> tuple[str, int]:
    """Stream ``url`` and discard it; the SHA-256 and size of the identity bytes."""
    digest = hashlib.sha256()
    size = 0
    inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
    sent = {**headers, "Accept-Encoding": "gzip" if gzip else "identity"}
    deadline = time.monotonic() + PULL_SECONDS
    with http.stream("GET", url, headers=sent) as response:
        assert response.status_code == 200
        assert response.headers.get("Content-Encoding") == ("gzip" if gzip else None)
        # Raw bytes as sent; inflated here, in bounded pieces, for the digest.
        for chunk in response.iter_raw(1 << 16):
            data = inflate.decompress(chunk) if gzip else chunk
            digest.update(data)
            size += len(data)
            assert time.monotonic() < deadline, f"pulling {url} took over {PULL_SECONDS} s"
    if gzip:
        assert inflate.eof
    return digest.hexdigest(), size


def test_pulling_a_4x_larger_content_grows_the_worker_by_at_most_20_mb(
    database_url: str, client: FlaskClient, start_hub: StartHub
) -> None:
    alpha = add_agency(database_url, "alpha")
    small = add_set(database_url, alpha, "small")
    large = add_set(database_url, alpha, "large")
    _publish(client, alpha, small, SMALL)
    _publish(client, alpha, large, LARGE)
    sizes = {chain.slug: sum(len(line) + 1 for line in chain.lines) for chain in (small, large)}
    # Holding the large body whole would break the bound by itself, with room to spare.
    assert sizes["large"] - sizes["small"] > 1.5 * MAX_GROWTH_BYTES
    headers = alpha.auth(Role.READER)
    server = start_hub(database_url, workers=1)
    with server.http(PULL_SECONDS) as http:
        (worker,) = server.workers()
        peaks = {}
        for chain in (small, large):
            for gzip in (False, True):
                url = f"{chain.url}/1/content"
                digest, size = _pull(http, url, headers, gzip)
                assert (digest, size) == (
                    chain.accepted[0].manifest.content_digest,
                    sizes[chain.slug],
                )
            peaks[chain.slug] = _peak_rss(worker)
        assert server.workers() == [worker], "the worker was replaced during the pulls"
    growth = peaks["large"] - peaks["small"]
    assert growth <= MAX_GROWTH_BYTES, (
        f"worker peak RSS {peaks['small'] / 2**20:.1f} MB after the {SMALL:,} pulls, "
        f"{peaks['large'] / 2**20:.1f} MB after the {LARGE:,} pulls"
    )


def test_an_abandoned_pull_releases_its_cursor(database_url: str, client: FlaskClient) -> None:
    # A client that hangs up mid-body (here: a response closed after its first
    # chunk) must leave no database cursor open: on PostgreSQL the rows come
    # from a server-side cursor, which has to be closed, not garbage-collected.
    alpha = add_agency(database_url, "alpha")
    chain = add_set(database_url, alpha, "abandoned")
    _publish(client, alpha, chain, 25_000)  # more rows than one fetch of the stream
    for kind in ("content", "delta"):
        for encoding in ("identity", "gzip"):
            response = client.get(
                f"{chain.url}/1/{kind}",
                headers={**alpha.auth(Role.READER), "Accept-Encoding": encoding},
            )
            assert response.status_code == 200
            assert next(response.iter_encoded())
            response.close()
            gc.collect()  # an unclosed cursor warns now, inside this test
    whole = client.get(f"{chain.url}/1/content", headers=alpha.auth(Role.READER))
    assert hashlib.sha256(whole.get_data()).hexdigest() == chain.accepted[0].manifest.content_digest
