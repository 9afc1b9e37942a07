"""The hub's Prometheus metrics: recorded in one place, per request; exposed at ``/metrics``.

Series (every label value comes from a small set the code fixes, never from
the request as sent: a raw path or method as a label would let any client
grow the hub's memory and every scrape without bound):

``hashex_http_requests_total{endpoint, method, status}``
    Every request the app answered.  ``endpoint`` is the Flask endpoint name
    (``sets.list_sets``, ``versions.publish``, ...) or ``unmatched`` when no
    route took the request (unknown paths, wrong methods, bodies refused
    before routing); ``method`` is one of the HTTP methods or ``other``.
``hashex_http_request_duration_seconds{endpoint}``
    A histogram of the time from the request entering the app until its
    response is ready, headers and all; for a streamed download that is the
    time to its first byte (the access log's ``duration_ms`` covers the
    whole transfer).
``hashex_polls_total{answer}``
    ``GET /v1/sets`` answered ``200`` (something changed) or ``304``.
``hashex_publishes_total{outcome, problem}``
    Publishes ``accepted`` (201; ``problem=""``) and ``refused`` (4xx, with
    the slug of the problem's ``type``: ``version-conflict``,
    ``unauthorized``, ...).

Requests that gunicorn's worker refuses before the app runs (timeouts,
oversized heads) are not counted: the worker logs each as a warning
(:mod:`server.worker`).

**Workers.**  Under gunicorn the series are kept in prometheus_client's
multiprocess mode: each worker writes its values to memory-mapped files in
``PROMETHEUS_MULTIPROC_DIR`` and whichever worker answers a scrape adds up
every worker's files.  The library chooses its mode when it is first
imported, from that variable, so this module imports it only when the first
app is made (in a worker, after the fork) and the gunicorn hooks
(:mod:`server.gunicorn_conf`) set the variable in the master first:
:func:`prepare_multiprocess_directory` and :func:`worker_exited`.  Without the
variable (the Flask test client, ``flask run``) the series live in the
process, which is then the whole hub.

**Log gauges.**  The log size and the checkpoint age are values of the
database, the same whichever worker answers, so they are read at scrape time
rather than kept per worker (multiprocess gauges cannot be computed on
demand); :func:`log_size_gauge` and :func:`checkpoint_age_gauge` name them,
and :func:`exposition` takes them as ``scraped``.  Nothing reads them yet:
``GET /metrics`` does not include them until the view passes them.
"""

from __future__ import annotations

import atexit
import getpass
import json
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from time import perf_counter
from typing import TYPE_CHECKING, Any

from flask import Flask, Response, g, request

from server.errors import PROBLEM_CONTENT_TYPE, PROBLEM_TYPE_BASE

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment
    from prometheus_client import CollectorRegistry, Counter, Histogram
    from prometheus_client.metrics_core import GaugeMetricFamily, Metric

MULTIPROC_DIR_VAR = "PROMETHEUS_MULTIPROC_DIR"
# The Prometheus text format, whatever the library's newest default is.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
UNMATCHED = "unmatched"
POLL_ENDPOINT = "sets.list_sets"
PUBLISH_ENDPOINT = "versions.publish"
# Request latencies in seconds: a no-change poll takes a millisecond or two, a
# 1,000,000-entry publish minutes.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_SLUG = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
# The files prometheus_client writes, ``<kind>_<pid>.db``; only these are
# ever removed from a directory the operator names.
_VALUE_FILE = re.compile(r"(?:counter|histogram|summary|gauge_[a-z]+)_\d+\.db")

# What the app tells the recorder and the access log about a request, in its
# WSGI environ (set by :func:`_annotate`, read after the app returned).
ENDPOINT_KEY = "hashex.endpoint"
AGENCY_KEY = "hashex.agency"
TOKEN_ID_KEY = "hashex.token_id"  # noqa: S105 - an environ key, not a secret
_PROBLEM_KEY = "hashex.problem"


# -- the series ------------------------------------------------------------------------------


@dataclass
class Series:
    """The hub's series, made once per process, and their labelled children by labels."""

    multiprocess: bool
    registry: CollectorRegistry
    requests: Counter
    durations: Histogram
    polls: Counter
    publishes: Counter
    # Children by label values: labels() takes a lock and builds a tuple on
    # every call, a dict lookup does not.  Bounded by the label sets above.
    _children: dict[tuple[str, str, str], tuple[Any, Any]] = field(default_factory=dict)
    _polls: dict[str, Any] = field(default_factory=dict)

    def record(self, environ: WSGIEnvironment, status: str, seconds: float) -> None:
        """Count one answered request and its latency."""
        endpoint: str = environ.get(ENDPOINT_KEY) or UNMATCHED
        method: str = environ.get("REQUEST_METHOD", "")
        if method not in _METHODS:
            method = "other"
        key = (endpoint, method, status)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = (
                self.requests.labels(*key),
                self.durations.labels(endpoint),
            )
        children[0].inc()
        children[1].observe(seconds)
        if endpoint == POLL_ENDPOINT:
            if method == "GET" and status in ("200", "304"):
                poll = self._polls.get(status)
                if poll is None:
                    poll = self._polls[status] = self.polls.labels(status)
                poll.inc()
        elif endpoint == PUBLISH_ENDPOINT:
            if status == "201":
                self.publishes.labels("accepted", "").inc()
            elif status.startswith("4"):
                self.publishes.labels("refused", environ.get(_PROBLEM_KEY, "other")).inc()


_SERIES: Series | None = None
_SERIES_LOCK = threading.Lock()


def series() -> Series:
    """This process's series, made on first use (importing prometheus_client then)."""
    global _SERIES  # one set of series per process, as the library keeps its values
    if _SERIES is not None:
        return _SERIES
    with _SERIES_LOCK:
        if _SERIES is None:
            _SERIES = _make_series()
        return _SERIES


def _make_series() -> Series:
    # The library picks its mode from the environment as it is imported:
    # read the variable first, so the exposition matches what is recorded.
    multiprocess = bool(os.environ.get(MULTIPROC_DIR_VAR))
    from prometheus_client import (  # here, not at the top: see "Workers" above
        CollectorRegistry,
        Counter,
        Histogram,
        disable_created_metrics,
    )

    # ``*_created`` series exist only outside multiprocess mode: one shape in both.
    disable_created_metrics()  # type: ignore[no-untyped-call]
    registry = CollectorRegistry(auto_describe=True)
    return Series(
        multiprocess=multiprocess,
        registry=registry,
        requests=Counter(
            "hashex_http_requests",
            "Requests the hub answered, by Flask endpoint (or 'unmatched'), method and status.",
            ("endpoint", "method", "status"),
            registry=registry,
        ),
        durations=Histogram(
            "hashex_http_request_duration_seconds",
            "Time from a request entering the app until its response is ready, by endpoint.",
            ("endpoint",),
            buckets=BUCKETS,
            registry=registry,
        ),
        polls=Counter(
            "hashex_polls",
            "Polls (GET /v1/sets) by answer: 200 (changed) or 304 (not modified).",
            ("answer",),
            registry=registry,
        ),
        publishes=Counter(
            "hashex_publishes",
            "Publishes accepted (201) and refused (4xx, by problem type slug).",
            ("outcome", "problem"),
            registry=registry,
        ),
    )


# -- recording --------------------------------------------------------------------------------


class RecordingMiddleware:
    """The outermost WSGI layer of the app: times every request and records it once."""

    def __init__(self, app: WSGIApplication, recorded: Series) -> None:
        self.app = app
        self._series = recorded

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        """Run the app, noting the status it starts its response with."""
        started = perf_counter()
        statuses: list[str] = []

        def recording_start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
            statuses.append(status)
            return start_response(status, headers, exc_info)

        try:
            body = self.app(environ, recording_start_response)
        except BaseException:
            self._series.record(environ, "500", perf_counter() - started)
            raise
        # Flask starts every response before handing back its body.
        status = statuses[-1][:3] if statuses else "500"
        self._series.record(environ, status, perf_counter() - started)
        return body


def _annotate(response: Response) -> Response:
    """Leave the endpoint, the caller and a refused publish's problem in the environ."""
    environ = request.environ
    endpoint = request.endpoint
    environ[ENDPOINT_KEY] = endpoint
    caller = g.get("caller")
    if caller is not None:
        environ[AGENCY_KEY] = caller.agency
        environ[TOKEN_ID_KEY] = caller.token_id
    if endpoint == PUBLISH_ENDPOINT and 400 <= response.status_code < 500:
        environ[_PROBLEM_KEY] = _problem_slug(response)
    return response


def _problem_slug(response: Response) -> str:
    """The slug of a problem response's ``type`` (a slug of the hub's own), or ``other``."""
    if response.mimetype != PROBLEM_CONTENT_TYPE or response.is_streamed:
        return "other"
    try:
        kind = json.loads(response.get_data()).get("type", "")
    except (ValueError, AttributeError):
        return "other"
    slug = kind.removeprefix(PROBLEM_TYPE_BASE) if isinstance(kind, str) else ""
    return slug if kind != slug and _SLUG.fullmatch(slug) else "other"


def init_app(app: Flask) -> None:
    """Record every request of ``app``; call after every other WSGI middleware is in place."""
    app.after_request(_annotate)
    app.wsgi_app = RecordingMiddleware(app.wsgi_app, series())  # type: ignore[method-assign]


# -- exposition -------------------------------------------------------------------------------


def exposition(scraped: Iterable[Metric] = ()) -> bytes:
    """The text-format exposition: every worker's series, then ``scraped`` families."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector

    recorded = series()
    if recorded.multiprocess:
        # A fresh registry per scrape, as the library's multiprocess docs say:
        # it reads every worker's files, this one's included.
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        text = generate_latest(registry)
    else:
        text = generate_latest(recorded.registry)
    families = list(scraped)
    if families:
        extra = CollectorRegistry(auto_describe=True)
        extra.register(_Families(families))
        text += generate_latest(extra)
    return text


class _Families:
    """A collector of families computed for one scrape."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> list[Metric]:
        """The families, as given."""
        return self._families


def log_size_gauge(size: int) -> GaugeMetricFamily:
    """``hashex_log_size``: leaves in the latest checkpoint (for ``exposition(scraped=...)``).

    Not exposed yet: the next issue reads the latest checkpoint at scrape
    time and passes this to :func:`exposition` from the ``/metrics`` view.
    """
    from prometheus_client.metrics_core import GaugeMetricFamily

    return GaugeMetricFamily(
        "hashex_log_size", "Leaves in the hub's latest checkpoint.", value=size
    )


def checkpoint_age_gauge(age_seconds: float) -> GaugeMetricFamily:
    """``hashex_log_checkpoint_age_seconds``: now minus the latest checkpoint's time.

    Not exposed yet, like :func:`log_size_gauge`.
    """
    from prometheus_client.metrics_core import GaugeMetricFamily

    return GaugeMetricFamily(
        "hashex_log_checkpoint_age_seconds",
        "Seconds since the hub's latest checkpoint was signed.",
        value=age_seconds,
    )


# -- gunicorn: the shared directory ---------------------------------------------------------


def prepare_multiprocess_directory() -> Path:
    """Make sure the workers about to be forked share a fresh directory for their values.

    gunicorn's ``on_starting`` hook, in the master, before any worker.  The
    operator's ``PROMETHEUS_MULTIPROC_DIR`` is used if set (the values of a
    previous run in it are removed: the library's files only); otherwise a
    private directory (0700) is made for this run and removed when the
    master exits.  Workers run the same exit handlers when they stop, so
    only the process that made it removes it.
    """
    given = os.environ.get(MULTIPROC_DIR_VAR)
    if given:
        directory = Path(given)
        if not directory.is_dir():
            raise RuntimeError(f"{MULTIPROC_DIR_VAR}={given}: not a directory")
        for path in directory.iterdir():
            if _VALUE_FILE.fullmatch(path.name):
                path.unlink(missing_ok=True)
        return directory
    _remove_orphans()
    directory = Path(tempfile.mkdtemp(prefix=f"{_ORPHAN_PREFIX}{os.getpid()}-"))
    os.environ[MULTIPROC_DIR_VAR] = str(directory)
    atexit.register(_remove_directory, directory, os.getpid())
    return directory


_ORPHAN_PREFIX = "hashex-metrics-"


def _remove_orphans() -> None:
    """Remove the directories of earlier masters that died without cleaning up (SIGKILL).

    Each is named after its master's pid; one whose master no longer runs,
    and which this user owns, holds nothing anyone reads.
    """
    for found in Path(tempfile.gettempdir()).glob(f"{_ORPHAN_PREFIX}*-*"):
        pid = found.name.removeprefix(_ORPHAN_PREFIX).split("-", 1)[0]
        if not pid.isdigit() or found.owner() != getpass.getuser():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(found, ignore_errors=True)
        except PermissionError:
            continue


def _remove_directory(directory: Path, owner: int) -> None:
    if os.getpid() == owner:
        shutil.rmtree(directory, ignore_errors=True)


def worker_exited(pid: int) -> None:
    """gunicorn's ``child_exit`` hook: the library's bookkeeping for a worker gone."""
    if not os.environ.get(MULTIPROC_DIR_VAR):
        return
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
