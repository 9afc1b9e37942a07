"""The hub's gunicorn worker: gthread, with every request head read by the event loop.

Gunicorn's ``gthread`` worker hands a connection to one of its few threads
as soon as a byte arrives; a client that sends half a request and stops
then holds that thread until the socket gives up, and a couple of hundred
such connections starve every other client (measured: a health check still
unanswered after 30 s on the defaults of 2 workers x 4 threads).  This
worker keeps the threads for work that is ready:

* **Intake.**  The event loop reads each request's head without blocking,
  and its body too when the body is small (at most :data:`INTAKE_BODY_BYTES`,
  which covers every JSON request), before any thread sees it.  A client has
  :data:`INTAKE_SECONDS` from its first byte to finish sending that much; a
  slower one is answered ``408`` and closed without ever having held a
  thread.  A connection that sends nothing is closed after the keep-alive
  time.  The bytes read are handed to gunicorn's own parser, which parses
  the request exactly as it always does.
* **Streamed bodies.**  A larger body (a publish) or a chunked one is read by
  the thread, through a socket that times out after :data:`IO_IDLE_SECONDS`
  without progress; the same bound applies to writing a response to a
  client that stopped reading.  At most ``threads - 1`` such requests run at
  once: the last thread is always left for requests that are ready, and
  waiting streamed requests queue in the loop, not in threads.
* **Problems.**  What gunicorn refuses before the app runs (a request line or
  headers over the limits, a malformed request, a timeout) is answered as
  ``application/problem+json`` like every other refusal of the hub, never
  as gunicorn's HTML page.

HTTP/1.1 only (the hub configures ``http_protocols = "h1"``), plain or TLS;
the TLS handshake happens in the loop too.  A buffering proxy such as nginx
in front does the same job for the whole site (see docs/DEPLOY.md).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import selectors
import socket
import ssl
import sys
import termios
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from gunicorn import http, sock
from gunicorn.http import errors as http_errors
from gunicorn.workers.gthread import TConn, ThreadWorker
from werkzeug.http import HTTP_STATUS_CODES

from server.api.problems import render_problem, status_problem
from server.errors import PROBLEM_CONTENT_TYPE

# A request head and small body must arrive within this long of the first byte.
INTAKE_SECONDS = 10.0
# Bodies up to this size are read by the event loop with the head.
INTAKE_BODY_BYTES = 64 * 1024 + 1
# A head longer than this cannot pass gunicorn's limits: hand it to the
# parser, which refuses it, rather than buffer more.
INTAKE_HEAD_BYTES = 1024 * 1024
# A thread reading a streamed body (or writing to a client) gives up after
# this long without a byte moving.
IO_IDLE_SECONDS = 20.0
# Streamed requests wait this long, this many at most, for a free slot; then 503.
STREAM_QUEUE_SECONDS = 30.0
MAX_WAITING_STREAMS = 32
# How long a closing connection may take to send its FIN back.
LINGER_SECONDS = 2.0
# Content-Length values longer than this are no size any hub takes.
_MAX_LENGTH_DIGITS = 18
_RECV_BYTES = 64 * 1024

# What gunicorn's parser raises for a request it refuses, and the status each gets.
_REFUSED: tuple[tuple[type[Exception], int, str], ...] = (
    (http_errors.LimitRequestLine, 414, "the request line is too long"),
    (http_errors.LimitRequestHeaders, 431, "the request headers are too large or too many"),
    (http_errors.UnsupportedTransferCoding, 501, "the transfer coding is not supported"),
    (http_errors.ExpectationFailed, 417, "the expectation cannot be met"),
    (http_errors.ForbiddenProxyRequest, 403, "the proxy request is forbidden"),
    (http_errors.InvalidRequestLine, 400, "the request line is malformed"),
    (http_errors.InvalidRequestMethod, 400, "the request method is malformed"),
    (http_errors.InvalidHTTPVersion, 400, "the HTTP version is not supported"),
    (http_errors.InvalidHeaderName, 400, "a header name is malformed"),
    (http_errors.InvalidHeader, 400, "a header is malformed"),
    (http_errors.ObsoleteFolding, 400, "a header uses obsolete line folding"),
    (http_errors.InvalidProxyLine, 400, "the proxy protocol line is malformed"),
    (http_errors.InvalidSchemeHeaders, 400, "the scheme headers contradict each other"),
    (http_errors.InvalidChunkSize, 400, "a chunk size is malformed"),
    (http_errors.ChunkMissingTerminator, 400, "a chunk lacks its terminator"),
    (http_errors.InvalidChunkExtension, 400, "a chunk extension is malformed"),
)


@dataclass
class _Intake:
    """A connection whose request the event loop is still receiving."""

    conn: TConn
    deadline: float
    buffer: bytearray = field(default_factory=bytearray)
    handshaken: bool = True
    streaming: bool = False
    # Set on a kept-alive connection, whose previous answer must have left first.
    reused: bool = False


def problem_bytes(status: int, detail: str) -> bytes:
    """A complete HTTP/1.1 response carrying a problem; the connection closes after it."""
    body = render_problem(status_problem(status, detail))
    reason = HTTP_STATUS_CODES.get(status, "Error")
    head = (
        f"HTTP/1.1 {status} {reason}\r\n"
        f"Content-Type: {PROBLEM_CONTENT_TYPE}\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode("latin-1") + body


def head_end(buffer: bytes | bytearray) -> tuple[int, int]:
    """Where the request head ends in ``buffer`` and the length of its blank line; -1 if not yet.

    A head ended by bare LFs is taken too, so gunicorn's parser refuses it
    at once instead of the client waiting out the deadline.
    """
    found = [(buffer.find(blank), len(blank)) for blank in (b"\r\n\r\n", b"\n\n")]
    return min(((end, size) for end, size in found if end >= 0), default=(-1, 0))


def unsent_bytes(client: socket.socket) -> int:
    """Bytes of earlier answers still in the socket's send queue (0 where it cannot tell)."""
    try:
        queued = bytearray(4)
        fcntl.ioctl(client.fileno(), termios.TIOCOUTQ, queued)
    except (OSError, ValueError):
        return 0
    return int.from_bytes(queued, sys.byteorder)


def body_to_read(head: bytes) -> int | None:
    """How many body bytes follow ``head``; None when the thread must stream them.

    None for a chunked body, an ``Expect: 100-continue`` (the client waits to
    be told to send) or a ``Content-Length`` that is malformed or given twice,
    which gunicorn's parser then refuses in the thread.
    """
    lengths: list[bytes] = []
    for line in head.replace(b"\r\n", b"\n").split(b"\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name in (b"transfer-encoding", b"expect"):
            return None
        if name == b"content-length":
            lengths.append(value.strip())
    if not lengths:
        return 0
    value = lengths[0]
    if len(lengths) > 1 or not value.isdigit() or len(value) > _MAX_LENGTH_DIGITS:
        return None
    return int(value)


class HubWorker(ThreadWorker):  # type: ignore[misc]  # gunicorn ships no type hints
    """Gunicorn's threaded worker with request intake in the event loop (see the module)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._intakes: dict[int, _Intake] = {}
        self._closing: dict[int, tuple[TConn, float]] = {}
        self._waiting_streams: deque[_Intake] = deque()
        self._parked: list[_Intake] = []
        self._streams = 0

    # -- receiving requests ------------------------------------------------------

    def accept(self, listener: socket.socket) -> None:
        """Accept a connection and start receiving its first request in the loop."""
        try:
            client, address = listener.accept()
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        self.nr_conns += 1
        conn = TConn(self.cfg, client, address, listener.getsockname())
        intake = _Intake(conn, time.monotonic() + self.cfg.keepalive)
        try:
            if self.cfg.is_ssl:
                conn.sock = sock.ssl_context(self.cfg).wrap_socket(
                    client,
                    server_side=True,
                    do_handshake_on_connect=False,
                    suppress_ragged_eofs=self.cfg.suppress_ragged_eofs,
                )
                intake.handshaken = False
            conn.parser = http.get_parser(self.cfg, conn.sock, address)
        except (OSError, ValueError):
            self._close(conn)
            return
        conn.initialized = True
        self._watch(intake, selectors.EVENT_READ)

    def _watch(self, intake: _Intake, events: int) -> None:
        self._intakes[id(intake.conn)] = intake
        self.poller.register(intake.conn.sock, events, partial(self._on_intake_event, intake))

    def _unwatch(self, intake: _Intake) -> None:
        self._intakes.pop(id(intake.conn), None)
        with contextlib.suppress(KeyError, ValueError, OSError):
            self.poller.unregister(intake.conn.sock)

    def _on_intake_event(self, intake: _Intake, _client: socket.socket) -> None:
        try:
            if not intake.handshaken and not self._handshake(intake):
                return
            if self._receive(intake):
                self._dispatch(intake)
        except (OSError, ssl.SSLError):
            self._unwatch(intake)
            self._close(intake.conn)
        except Exception:
            # Nothing a client sends may stop the event loop: a bug here
            # costs this connection, never the worker.
            self.log.exception("Error receiving a request from %s", intake.conn.client)
            self._unwatch(intake)
            self._close(intake.conn)

    def _handshake(self, intake: _Intake) -> bool:
        """Advance the TLS handshake; whether it is done (the request may follow at once)."""
        try:
            intake.conn.sock.do_handshake()
        except ssl.SSLWantReadError:
            self._rewatch(intake, selectors.EVENT_READ)
            return False
        except ssl.SSLWantWriteError:
            self._rewatch(intake, selectors.EVENT_WRITE)
            return False
        intake.handshaken = True
        self._rewatch(intake, selectors.EVENT_READ)
        return True

    def _rewatch(self, intake: _Intake, events: int) -> None:
        self.poller.modify(intake.conn.sock, events, partial(self._on_intake_event, intake))

    def _receive(self, intake: _Intake) -> bool:
        """Read what has arrived; whether the request is ready for a thread."""
        first = not intake.buffer
        while len(intake.buffer) <= INTAKE_HEAD_BYTES + INTAKE_BODY_BYTES:
            try:
                data = intake.conn.sock.recv(_RECV_BYTES)
            except (BlockingIOError, ssl.SSLWantReadError, InterruptedError):
                break
            if not data:
                raise ConnectionResetError("the client closed the connection")
            intake.buffer += data
        if first and intake.buffer:
            intake.deadline = time.monotonic() + INTAKE_SECONDS
        return self._ready(intake)

    def _ready(self, intake: _Intake) -> bool:
        """Whether the buffer holds a whole request head (and its small body, if any)."""
        end, separator = head_end(intake.buffer)
        if end < 0:
            # A head this long cannot pass gunicorn's limits: the parser refuses
            # it at once, from what is buffered, without waiting for more.
            return len(intake.buffer) > INTAKE_HEAD_BYTES
        length = body_to_read(bytes(intake.buffer[:end]))
        if length is None or length > INTAKE_BODY_BYTES:
            intake.streaming = True
            return True
        return len(intake.buffer) >= end + separator + length

    def _dispatch(self, intake: _Intake) -> None:
        """Hand a received request to a thread, or queue a streamed one for the next slot.

        On a reused connection the previous response must have left the
        socket first: a client that sends requests without reading the
        answers would otherwise have a thread blocked writing to it.
        """
        self._unwatch(intake)
        conn = intake.conn
        conn.parser.unreader.unread(bytes(intake.buffer))
        intake.buffer.clear()
        if intake.reused and unsent_bytes(conn.sock) > 0:
            intake.deadline = time.monotonic() + INTAKE_SECONDS
            self._parked.append(intake)
        elif intake.streaming and self._streams >= max(self.cfg.threads - 1, 1):
            self._queue_stream(intake)
        else:
            self._start(intake)

    def _queue_stream(self, intake: _Intake) -> None:
        if len(self._waiting_streams) >= MAX_WAITING_STREAMS:
            self._send_and_close(
                intake.conn, problem_bytes(503, "the hub is busy with uploads; try again shortly")
            )
            return
        intake.deadline = time.monotonic() + STREAM_QUEUE_SECONDS
        self._waiting_streams.append(intake)

    def _start(self, intake: _Intake) -> None:
        conn = intake.conn
        conn.hashex_streaming = intake.streaming
        if intake.streaming:
            self._streams += 1
        conn.sock.settimeout(IO_IDLE_SECONDS)
        self.enqueue_req(conn)

    # -- after a request -----------------------------------------------------------

    def finish_request(self, conn: TConn, fs: Future[Any]) -> None:
        """After a request: free its stream slot, then receive the next request or close.

        A request the client sent ahead (pipelined) is received by the event
        loop like any other, under the same deadline and limits.
        """
        if getattr(conn, "hashex_streaming", False):
            conn.hashex_streaming = False
            self._streams -= 1
            if self._waiting_streams:
                self._start(self._waiting_streams.popleft())
        try:
            keep = not fs.cancelled() and bool(fs.result())
        except Exception:
            keep = False
        if not keep:
            self._close_lingering(conn)
            return
        leftover = conn.parser.unreader.take_buffered()
        conn.sock.setblocking(False)
        now = time.monotonic()
        intake = _Intake(
            conn,
            now + (INTAKE_SECONDS if leftover else self.cfg.keepalive),
            bytearray(leftover),
            reused=True,
        )
        try:
            if leftover and self._ready(intake):
                self._dispatch(intake)
            else:
                self._watch(intake, selectors.EVENT_READ)
        except Exception:
            self.log.exception("Error receiving a request from %s", conn.client)
            self._unwatch(intake)
            self._close(conn)

    def _close_lingering(self, conn: TConn) -> None:
        """Close as RFC 9112 asks (FIN first, then drain what the client still sends), in the loop.

        Gunicorn lingers on a blocking socket for up to two seconds; done on
        the event loop, that lets any client stall the worker by not closing.
        Here the drain is one more non-blocking event, with a deadline.
        """
        try:
            conn.sock.setblocking(False)
            conn.sock.shutdown(socket.SHUT_WR)
            self._closing[id(conn)] = (conn, time.monotonic() + LINGER_SECONDS)
            self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._drain, conn))
        except (OSError, ValueError, KeyError):
            self._finish_close(conn)

    def _drain(self, conn: TConn, _client: socket.socket) -> None:
        try:
            while conn.sock.recv(_RECV_BYTES):
                pass
        except (BlockingIOError, ssl.SSLWantReadError, InterruptedError):
            return
        except OSError:
            pass
        self._finish_close(conn)

    def _finish_close(self, conn: TConn) -> None:
        self._closing.pop(id(conn), None)
        with contextlib.suppress(KeyError, ValueError, OSError):
            self.poller.unregister(conn.sock)
        self._close(conn)

    # -- deadlines ---------------------------------------------------------------------

    def murder_pending(self) -> None:
        """Expire what waits too long: unfinished requests (408), parked, queued and closing."""
        super().murder_pending()
        now = time.monotonic()
        for intake in [i for i in self._intakes.values() if i.deadline <= now]:
            self._unwatch(intake)
            if intake.buffer and intake.handshaken:
                self.log.info("Request from %s timed out unfinished", intake.conn.client)
                self._send_and_close(
                    intake.conn,
                    problem_bytes(
                        408, f"the request did not arrive within {INTAKE_SECONDS:g} seconds"
                    ),
                )
            else:
                self._close(intake.conn)
        for intake in list(self._parked):
            if unsent_bytes(intake.conn.sock) == 0:
                self._parked.remove(intake)
                self._dispatch_parked(intake)
            elif intake.deadline <= now:
                self.log.info("Client %s does not read its answers; closing", intake.conn.client)
                self._parked.remove(intake)
                self._close(intake.conn)
        while self._waiting_streams and self._waiting_streams[0].deadline <= now:
            self._send_and_close(
                self._waiting_streams.popleft().conn,
                problem_bytes(503, "the hub is busy with uploads; try again shortly"),
            )
        for conn, deadline in list(self._closing.values()):
            if deadline <= now:
                self._finish_close(conn)

    def _dispatch_parked(self, intake: _Intake) -> None:
        intake.reused = False
        if intake.streaming and self._streams >= max(self.cfg.threads - 1, 1):
            self._queue_stream(intake)
        else:
            self._start(intake)

    def _send_and_close(self, conn: TConn, response: bytes) -> None:
        try:
            conn.sock.setblocking(False)
            conn.sock.send(response)
        except OSError:
            pass
        self._close(conn)

    def _close(self, conn: TConn) -> None:
        self.nr_conns -= 1
        conn.close()

    def handle(self, conn: TConn) -> bool:
        """Serve one received request in a thread; whether to keep the connection."""
        request = None
        try:
            request = next(conn.parser)
            if not request:
                return False
            return bool(self._keepalive_after(conn, self.handle_request(request, conn)))
        except (StopIteration, http_errors.NoMoreData):
            return False
        except TimeoutError:
            self.log.info("Client %s stopped sending or reading; closing", conn.client)
            if request is None:
                # Still reading the request: nothing was answered yet.
                self._try_send(conn, 408, "the client stopped sending its request")
            return False
        except ssl.SSLError as exc:
            self.log.debug("TLS error from %s: %s", conn.client, exc)
            return False
        except OSError as exc:
            if exc.errno not in (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN):
                self.log.warning("Socket error from %s: %s", conn.client, exc)
            return False
        except Exception as exc:
            self.handle_error(request, conn.sock, conn.client, exc)
            return False

    def _try_send(self, conn: TConn, status: int, detail: str) -> None:
        with contextlib.suppress(OSError):
            conn.sock.sendall(problem_bytes(status, detail))

    def handle_error(self, req: Any, client: socket.socket, addr: Any, exc: Exception) -> None:
        """Answer what gunicorn refuses before the app runs as a problem, not an HTML page."""
        refusal = next(((s, d) for cls, s, d in _REFUSED if isinstance(exc, cls)), None)
        if refusal is None:
            self.log.exception("Error handling request from %s", addr)
            status, detail = 500, ""
        else:
            self.log.warning("Refused request from %s: %s", addr, exc)
            status, detail = refusal
        try:
            client.sendall(problem_bytes(status, detail))
        except OSError:
            self.log.debug("Failed to send the error response.")
