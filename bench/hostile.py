"""``make bench-hostile``: the hub under hostile requests, at full size, beside gunicorn's gthread.

Each attack of issue 12 runs against a real SQLite hub on 127.0.0.1 with the
defaults of ``hashex-server serve`` (2 workers x 4 threads), and, for the
slow-client attacks, against the same hub served by gunicorn's stock
``gthread`` worker, so the worker class is chosen by measurement:

* **slow heads**: 200 connections send half a request head and then
  nothing; a well-behaved client's health checks meanwhile (median and
  worst of 10), and when the hub cut the slow connections;
* **slow bodies**: 200 connections announce a 1,000-byte JSON body and send
  10 bytes of it; the same figures;
* **memory**: JSON bodies of 100 MB (Content-Length), 300 MB (chunked) and
  a gzip body of 0.2 MB that inflates to 200 MB, and JSON nested 100,000
  deep (over the size cap), and 5,000 and 60,000 deep (under it): each
  answer, and the largest worker's resident memory before and after;
* **headers**: a 64 KB header.

Sizes are flags (``--connections``, ``--megabytes``).  All traffic goes to
127.0.0.1; every connection is closed and the hub stopped at the end.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from _hub import Hub, running_hub, seed

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

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

MB = 1_000_000
HEALTH_CHECKS = 10


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line: sizes of the attacks."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=200, help="slow connections")
    parser.add_argument("--megabytes", type=int, default=100, help="size of the JSON body")
    parser.add_argument(
        "--compare", default="gthread", help="gunicorn worker class to compare with ('' for none)"
    )
    return parser.parse_args(argv)


def _health(hub: Hub) -> str:
    times = []
    failures = 0
    for _ in range(HEALTH_CHECKS):
        answer, took = timed_answer(hub.address, "/v1/health", timeout=30.0)
        if answer.status != 200:
            failures += 1
        times.append(took)
        time.sleep(0.2)
    return (
        f"health median {statistics.median(times) * 1000:.0f} ms, "
        f"worst {max(times) * 1000:.0f} ms, {failures} of {HEALTH_CHECKS} unanswered"
    )


def _slow(hub: Hub, count: int, opening: bytes) -> str:
    with idle_connections(hub.address, count, opening) as sockets:
        time.sleep(1.0)
        health = _health(hub)
        started = time.monotonic()
        sockets[-1].settimeout(120.0)
        answer = read_answer(sockets[-1])
        cut = time.monotonic() - started + 1.0 + HEALTH_CHECKS * 0.2
    status = "closed" if answer.status is None else str(answer.status)
    return f"{health}; slow connections answered {status} after ~{cut:.0f} s"


def _largest_worker(hub: Hub) -> int:
    return max(resident_bytes(pid) for pid in children(hub.pid))


def _memory(hub: Hub, token: str, name: str, send: Callable[[str], Answer]) -> str:
    before = _largest_worker(hub)
    answer = send(token)
    after = _largest_worker(hub)
    kind = answer.problem().get("type", "") if answer.status and answer.body else ""
    return (
        f"{name}: {answer.status} {str(kind).rsplit('/', 1)[-1]}; largest worker "
        f"{before / MB:.0f} MB -> {after / MB:.0f} MB"
    )


def _json_head(token: str, extra: Sequence[tuple[str, str]]) -> bytes:
    return request_head(
        "POST",
        "/v1/sets",
        [("Authorization", f"Bearer {token}"), ("Content-Type", "application/json"), *extra],
    )


def attacks(hub: Hub, token: str, args: argparse.Namespace) -> list[str]:
    """Run every attack on ``hub``; one line of figures each."""
    size = args.megabytes * MB
    lines = [
        "slow heads: " + _slow(hub, args.connections, b"GET /v1/health HTTP/1.1\r\nHost: hub\r\n"),
        "slow bodies: "
        + _slow(
            hub,
            args.connections,
            _json_head(token, [("Content-Length", "1000")]) + b'{"name": "',
        ),
    ]
    lines.append(
        _memory(
            hub,
            token,
            f"{args.megabytes} MB JSON (Content-Length)",
            lambda t: exchange(
                hub.address,
                _json_head(t, [("Content-Length", str(size))]),
                repeated(b"[", size),
            ),
        )
    )
    lines.append(
        _memory(
            hub,
            token,
            f"{3 * args.megabytes} MB JSON (chunked)",
            lambda t: exchange(
                hub.address,
                _json_head(t, [("Transfer-Encoding", "chunked")]),
                chunked(repeated(b" ", 3 * size)),
            ),
        )
    )
    bomb = gzip_bomb(2 * size)
    lines.append(
        _memory(
            hub,
            token,
            f"gzip JSON {len(bomb) / MB:.1f} MB -> {2 * args.megabytes} MB",
            lambda t: exchange(
                hub.address,
                _json_head(t, [("Content-Encoding", "gzip"), ("Content-Length", str(len(bomb)))])
                + bomb,
            ),
        )
    )
    for name, body in (
        ("nested [ x 100,000", b"[" * 100_000),
        ('nested {"a": x 50,000', b'{"a":' * 50_000),
        ("readers nested 5,000 deep", b'{"readers": ' + b"[" * 5000 + b"]" * 5000 + b"}"),
        ("nested [ x 60,000 (under the size cap)", b"[" * 60_000),
    ):
        lines.append(
            _memory(
                hub,
                token,
                name,
                lambda t, body=body: exchange(
                    hub.address, _json_head(t, [("Content-Length", str(len(body)))]) + body
                ),
            )
        )
    huge = exchange(hub.address, request_head("GET", "/v1/health", [("X-Big", "a" * 65536)]))
    lines.append(f"64 KB header: {huge.status} {huge.headers.get('content-type')}")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    """Run the attacks on the hub's worker, then the slow ones on the comparison worker."""
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="hashex-hostile-") as work:
        directory = Path(work)
        (directory / "hub").mkdir()
        (directory / "stock").mkdir()
        with running_hub(directory / "hub", workers=2) as hub:
            owner, _ = seed(hub, directory)
            print("hub worker (server.worker.HubWorker), 2 workers x 4 threads")
            for line in attacks(hub, owner.admin_token, args):
                print("  " + line, flush=True)
        if args.compare:
            with running_hub(directory / "stock", workers=2, worker_class=args.compare) as hub:
                print(f"gunicorn {args.compare}, 2 workers x 4 threads")
                opening = b"GET /v1/health HTTP/1.1\r\nHost: hub\r\n"
                print("  slow heads: " + _slow(hub, args.connections, opening), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
