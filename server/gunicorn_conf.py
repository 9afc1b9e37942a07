"""Gunicorn settings of the hub: the defaults of ``hashex-server serve``.

A plain gunicorn config module, so a deployment that runs gunicorn itself
gets the same behaviour with ``gunicorn -c python:server.gunicorn_conf``.
``serve`` overrides ``bind``, ``workers`` and the TLS files from its options;
names gunicorn does not know (older versions) are skipped.

Logs go to stderr: the error log, and the access log as one JSON object per
request (:mod:`server.access_log`).  The hooks keep the Prometheus series of
all workers in one directory (:mod:`server.metrics`).
"""

from typing import Any

from server import metrics as _metrics

wsgi_app = "server.app:create_app()"
bind = "127.0.0.1:8080"
proc_name = "hashex-server"

# Threads let a worker answer health checks and small reads while one of its
# requests spends minutes on a 1,000,000-entry publish or download; the
# hub's worker class reads request heads and small bodies in its event loop,
# so a slow or idle client never holds one of those threads (server.worker).
worker_class = "server.worker.HubWorker"
workers = 2
threads = 4
# HTTP/1.1 only: the hub's worker receives requests itself, and HTTP/2 is
# what a proxy in front negotiates with browsers, if anyone.
http_protocols = "h1"

# A large publish is parsed, checked and committed within one request; only a
# worker stuck far beyond that is killed.
timeout = 300
graceful_timeout = 30
keepalive = 5

# "-" is stderr for both: the logger class moves gunicorn's access log off stdout.
logger_class = "server.access_log.JsonAccessLogger"
accesslog = "-"
errorlog = "-"

# Gunicorn's control socket defaults to one path per user: two hubs on one
# host would fight over it, and the hub is managed by signals anyway.
control_socket_disable = True


def on_starting(server: Any) -> None:
    """In the master, before any worker: the directory the workers' series share."""
    _metrics.prepare_multiprocess_directory()


def worker_exit(server: Any, worker: Any) -> None:
    """In a worker about to exit: write the poll counts it still holds to the audit log."""
    from server.api import polls

    polls.flush_all()


def child_exit(server: Any, worker: Any) -> None:
    """In the master, after a worker exited: prometheus_client's bookkeeping for it."""
    _metrics.worker_exited(worker.pid)
