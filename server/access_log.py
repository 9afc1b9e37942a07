"""The hub's access log: one JSON object per request, on stderr.

Gunicorn's ``logger_class`` (:mod:`server.gunicorn_conf`).  Each line is a
JSON object with the members::

    time          when the response was finished, ISO 8601 UTC
    pid           the worker that answered
    method, path  as the app saw them (``path`` percent-decoded), ``query`` if any
    endpoint      the Flask endpoint, or "unmatched" (as in /metrics)
    status        the HTTP status; ``bytes`` the body bytes sent
    duration_ms   from the request head to the last byte sent
    remote_addr   the peer (the proxy, behind one)
    agency, token_id   the caller, when the request was authenticated
    user_agent    the first 200 characters of User-Agent

Never a token: no request header but User-Agent is written.  Every string is
JSON-escaped, ASCII only, so a path carrying a line feed or a terminal escape
stays inside its own line and cannot forge another.  Gunicorn's own access
log format setting (``access_log_format``) does not apply.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

from gunicorn import glogging

from server.metrics import AGENCY_KEY, ENDPOINT_KEY, TOKEN_ID_KEY, UNMATCHED

# Bounds on what one line may carry of the client's own text.
MAX_PATH_CHARS = 2000
MAX_AGENT_CHARS = 200


def access_record(
    environ: dict[str, Any], status: int | None, sent: int | None, elapsed: timedelta
) -> dict[str, object]:
    """The access log object of one request (see the module docstring)."""
    record: dict[str, object] = {
        "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "pid": os.getpid(),
        "method": str(environ.get("REQUEST_METHOD", ""))[:20],
        "path": _text(environ.get("PATH_INFO", ""))[:MAX_PATH_CHARS],
    }
    query = environ.get("QUERY_STRING")
    if query:
        record["query"] = _text(query)[:MAX_PATH_CHARS]
    record.update(
        endpoint=environ.get(ENDPOINT_KEY) or UNMATCHED,
        status=status,
        bytes=sent,
        duration_ms=round(elapsed.total_seconds() * 1000, 3),
        remote_addr=environ.get("REMOTE_ADDR"),
    )
    if AGENCY_KEY in environ:
        record["agency"] = environ[AGENCY_KEY]
        record["token_id"] = environ.get(TOKEN_ID_KEY)
    agent = environ.get("HTTP_USER_AGENT")
    if agent:
        record["user_agent"] = _text(agent)[:MAX_AGENT_CHARS]
    return record


def access_line(record: dict[str, object]) -> str:
    """``record`` as one line: compact JSON, ASCII only (control characters escaped)."""
    return json.dumps(record, ensure_ascii=True, separators=(",", ":"))


def _text(value: object) -> str:
    """A WSGI string (bytes as latin-1) as the UTF-8 text it carries, if it is UTF-8."""
    text = str(value)
    try:
        return text.encode("latin-1").decode("utf-8")
    except UnicodeError:
        return text


def _status(resp: Any) -> int | None:
    status = getattr(resp, "status_code", None) or getattr(resp, "status", None)
    if isinstance(status, int):
        return status
    head = str(status or "").split(None, 1)
    return int(head[0]) if head and head[0].isdigit() else None


class JsonAccessLogger(glogging.Logger):  # type: ignore[misc]  # gunicorn ships no type hints
    """Gunicorn's logger, with the access log as JSON lines on stderr."""

    def setup(self, cfg: Any) -> None:
        """Gunicorn's setup; then ``accesslog = "-"`` means stderr, not stdout."""
        super().setup(cfg)
        for handler in self.access_log.handlers:
            if (
                getattr(handler, "_gunicorn", False)
                and type(handler) is logging.StreamHandler
                and handler.stream is sys.stdout
            ):
                handler.setStream(sys.stderr)

    def access(self, resp: Any, req: Any, environ: dict[str, Any], request_time: timedelta) -> None:
        """Write one request's JSON line (when the access log is on)."""
        if not getattr(self, "access_log_enabled", self.cfg.accesslog):
            return
        try:
            record = access_record(
                environ, _status(resp), getattr(resp, "sent", None), request_time
            )
            self.access_log.info("%s", access_line(record))
        except Exception:
            self.exception("Failed to write an access log line")
