"""Hostile clients of a real hub on 127.0.0.1, for the hostile-request tests and ``bench/``.

Raw sockets, because a well-behaved HTTP library will not send half a
request, lie about a body's length, or stop reading: each function here
does one such thing to ``host:port`` and reports what the hub answered.
Every connection goes to loopback only and is closed at the end; sizes and
counts are the caller's, so tests stay small and benchmarks go full size.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import socket
import threading
import time
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

CHUNK = 1 << 20
LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class Answer:
    """What the hub answered: status, headers (lower-case names) and body; or nothing."""

    status: int | None
    headers: dict[str, str]
    body: bytes

    def problem(self) -> dict[str, object]:
        """The body as a problem object."""
        parsed: dict[str, object] = json.loads(self.body)
        return parsed


def _connect(address: tuple[str, int], timeout: float) -> socket.socket:
    if address[0] not in LOOPBACK:
        raise ValueError(f"hostile traffic goes to loopback only, not {address[0]}")
    return socket.create_connection(address, timeout=timeout)


def read_answer(sock: socket.socket) -> Answer:
    """Read one HTTP/1.1 response (Content-Length or close-delimited) from ``sock``."""
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    except (TimeoutError, ConnectionError):
        pass
    head, _, body = data.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/"):
        return Answer(None, {}, b"")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    try:
        while len(body) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
    except (TimeoutError, ConnectionError):
        pass
    return Answer(int(lines[0].split()[1]), headers, body)


def exchange(
    address: tuple[str, int],
    head: bytes,
    body: Iterator[bytes] | None = None,
    timeout: float = 60.0,
) -> Answer:
    """Send ``head`` then ``body`` (stopping if the hub closes), and read the answer.

    The body is sent from a second thread, so a hub that answers before
    reading the whole body (a 413 on ``Content-Length``) is heard at once.
    """
    with _connect(address, timeout) as sock:
        sock.sendall(head)

        def send() -> None:
            try:
                for chunk in body or ():
                    sock.sendall(chunk)
            except OSError:
                pass

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        answer = read_answer(sock)
        with contextlib.suppress(OSError):
            # Already gone if the hub hung up after answering.
            sock.shutdown(socket.SHUT_RDWR)
        sender.join(timeout)
        return answer


def request_head(
    method: str, path: str, headers: Sequence[tuple[str, str]] = (), *, host: str = "hub"
) -> bytes:
    """The bytes of a request head."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", *(f"{n}: {v}" for n, v in headers)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def repeated(unit: bytes, size: int) -> Iterator[bytes]:
    """``size`` bytes made of ``unit`` repeated, in chunks of about a MiB."""
    block = unit * max(1, CHUNK // len(unit))
    sent = 0
    while sent < size:
        piece = block[: size - sent]
        sent += len(piece)
        yield piece


def chunked(pieces: Iterator[bytes]) -> Iterator[bytes]:
    """``pieces`` in the chunked transfer coding, ending with the last chunk."""
    for piece in pieces:
        yield f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    yield b"0\r\n\r\n"


def gzip_bomb(size: int) -> bytes:
    """A gzip body of ``size`` spaces then ``{}``: a few hundred KB that inflate to ``size``."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    out = [compressor.compress(b" " * CHUNK) for _ in range(size // CHUNK)]
    out.append(compressor.compress(b"{}"))
    out.append(compressor.flush())
    return b"".join(out)


def gzip_json(document: object) -> bytes:
    """A JSON document, gzip-compressed."""
    return gzip.compress(json.dumps(document).encode())


@contextmanager
def idle_connections(
    address: tuple[str, int], count: int, opening: bytes, timeout: float = 120.0
) -> Iterator[list[socket.socket]]:
    """``count`` connections that each send ``opening`` and then nothing, until the block ends."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = _connect(address, timeout)
            if opening:
                sock.sendall(opening)
            sockets.append(sock)
        yield sockets
    finally:
        for sock in sockets:
            sock.close()


def timed_answer(address: tuple[str, int], path: str, timeout: float) -> tuple[Answer, float]:
    """A GET of ``path`` from a fresh well-behaved connection, and how long it took."""
    started = time.monotonic()
    answer = exchange(address, request_head("GET", path), timeout=timeout)
    return answer, time.monotonic() - started


def resident_bytes(pid: int) -> int:
    """The resident memory (VmRSS) of process ``pid``, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise LookupError(f"no VmRSS for process {pid}")


def children(pid: int) -> list[int]:
    """The pids of the children of ``pid`` (a gunicorn master's workers), from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may hold spaces, so split after its ")".
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return sorted(found)
