"""A small closed-loop HTTP/1.1 load generator for the poll benchmarks.

Each of ``connections`` keep-alive connections sends its own request again
and again (a poller with its own token and the ETag it last saw) and waits
for the whole answer before the next: a closed loop, like the tools that
poll a hub.  It runs in a process of its own (:func:`measure`), so its
parsing competes with the hub for the two cores exactly like real pollers
on the same machine would, and never with the benchmark's bookkeeping.

Only 127.0.0.1 is ever addressed; the run is bounded by ``seconds``.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import statistics
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class LoadResult:
    """What a run measured: answers by status, errors, and latency quantiles."""

    seconds: float
    statuses: dict[int, int]
    errors: int
    latencies_ms: list[float]

    @property
    def requests(self) -> int:
        """Answered requests."""
        return sum(self.statuses.values())

    @property
    def rate(self) -> float:
        """Answered requests per second."""
        return self.requests / self.seconds

    def quantile(self, q: float) -> float:
        """The ``q`` quantile of the latency in milliseconds."""
        if len(self.latencies_ms) < 2:
            return self.latencies_ms[0] if self.latencies_ms else 0.0
        return statistics.quantiles(self.latencies_ms, n=1000, method="inclusive")[
            round(q * 1000) - 1
        ]


async def _connection(
    port: int, request: bytes, stop_at: float, latencies: list[float], statuses: Counter[int]
) -> int:
    """One poller: send ``request`` until ``stop_at``; the number of errors it met."""
    errors = 0
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while time.monotonic() < stop_at:
            started = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.lower() == b"content-length":
                    length = int(value)
            if length:
                await reader.readexactly(length)
            latencies.append((time.perf_counter() - started) * 1000)
            statuses[status] += 1
            if b"connection: close" in head.lower():
                writer.close()
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except (OSError, asyncio.IncompleteReadError, ValueError):
        errors += 1
    finally:
        writer.close()
    return errors


async def _run(port: int, requests: Sequence[bytes], seconds: float) -> LoadResult:
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    started = time.monotonic()
    stop_at = started + seconds
    errors = await asyncio.gather(
        *(_connection(port, r, stop_at, latencies, statuses) for r in requests)
    )
    return LoadResult(time.monotonic() - started, dict(statuses), sum(errors), latencies)


def _child(
    port: int, requests: Sequence[bytes], seconds: float, out: multiprocessing.Queue
) -> None:  # type: ignore[type-arg]
    out.put(asyncio.run(_run(port, requests, seconds)))


def measure(port: int, requests: Sequence[bytes], seconds: float) -> LoadResult:
    """Run one connection per request for ``seconds`` in a separate process."""
    queue: multiprocessing.Queue = multiprocessing.Queue()  # type: ignore[type-arg]
    process = multiprocessing.Process(target=_child, args=(port, requests, seconds, queue))
    process.start()
    result: LoadResult = queue.get(timeout=seconds + 120)
    process.join(timeout=30)
    return result


def get_request(path: str, headers: dict[str, str]) -> bytes:
    """The bytes of a keep-alive GET of ``path`` to 127.0.0.1."""
    lines = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")
