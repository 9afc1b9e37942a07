"""``make bench-poll``: the no-change poll of a national hub, beside a bare Flask endpoint.

The hub holds ``--sets`` sets (1,000) of ``--owners`` owning agencies and
``--tokens`` tokens (1,000); ``--pollers`` consumer agencies (50) each read
the sets of one owner (100 each) and poll with a reader token of their own
and the ETag of their last answer, nothing having changed: every answer
should be a 304.  Measured for ``--seconds`` (60) on each database, on the
defaults of ``hashex-server serve`` (2 workers of the hub's worker class),
beside the floor: a bare Flask endpoint answering 304 under the same
gunicorn settings, measured by the same load generator in the same run.

Targets (issue 14): one request per poll; at least 2,000 polls/s and at
least 0.3x the bare endpoint; p99 at most 50 ms; no errors.

The hub is seeded through its services (agencies with real signed keysets,
tokens, sets and grants, each audited as the hub writes them).  Every run
uses fresh databases; the PostgreSQL one is dropped at the end.  Only
127.0.0.1 is addressed.
"""

from __future__ import annotations

import argparse
import secrets
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx
from _hub import BenchError, Hub, running_hub
from _load import LoadResult, get_request, measure
from _measure import note
from sqlalchemy import create_engine
from sqlalchemy.pool import NullPool

from client.keysets import KeyChoice, make_keyset
from client.protocol.keys import generate_private_key
from server.engine import make_engine, make_session_factory
from server.services import agencies, sets, tokens
from server.services.callers import Actor, Caller, Role

OPERATOR = Actor("cli:bench")
PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"
RATE_TARGET = 2000.0
RATIO_TARGET = 0.3
P99_TARGET_MS = 50.0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The benchmark's sizes."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--sets", type=int, default=1000)
    parser.add_argument("--owners", type=int, default=10)
    parser.add_argument("--tokens", type=int, default=1000)
    parser.add_argument("--pollers", type=int, default=50)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--databases", default="sqlite,postgresql", help="comma-separated: sqlite, postgresql"
    )
    parser.add_argument("--pg-admin-url", default=PG_ADMIN_URL)
    return parser.parse_args(argv)


@contextmanager
def postgres_database(admin_url: str) -> Iterator[str]:
    """A fresh PostgreSQL database for one run, dropped afterwards."""
    name = f"hashex_bench_{secrets.token_hex(4)}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with admin.connect() as connection:
        connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield admin_url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def seed(database_url: str, args: argparse.Namespace) -> list[str]:
    """Owners with their sets, consumers granted one owner's sets each; the pollers' tokens."""
    engine = make_engine(database_url)
    factory = make_session_factory(engine)
    owners = [f"owner-{i:02d}" for i in range(args.owners)]
    consumers = [f"consumer-{i:03d}" for i in range(args.pollers)]
    ids: dict[str, int] = {}
    for slug in owners + consumers:
        keyset = make_keyset(slug, 1, KeyChoice(both=[generate_private_key()]), 365)
        with factory() as session:
            ids[slug] = agencies.create_agency(
                session, OPERATOR, slug, f"Bench {slug}", keyset.dumps()
            ).id
    poller_tokens: list[str] = []
    token_count = 0
    for slug in consumers:
        with factory() as session:
            _, secret = tokens.create_token(
                session, OPERATOR, slug, Role.READER, name="poller", expires_days=None
            )
        poller_tokens.append(secret)
        token_count += 1
    admins: dict[str, Caller] = {}
    for slug in owners:
        with factory() as session:
            token, _ = tokens.create_token(
                session, OPERATOR, slug, Role.AGENCY_ADMIN, name="admin", expires_days=None
            )
            admins[slug] = Caller(token.id, ids[slug], slug, Role.AGENCY_ADMIN)
        token_count += 1
    everyone = owners + consumers
    while token_count < args.tokens:
        with factory() as session:
            tokens.create_token(
                session,
                OPERATOR,
                everyone[token_count % len(everyone)],
                Role.READER,
                name=f"filler-{token_count}",
                expires_days=None,
            )
        token_count += 1
    per_owner = args.sets // args.owners
    for index, owner in enumerate(owners):
        readers = [c for i, c in enumerate(consumers) if i % args.owners == index]
        for number in range(per_owner):
            with factory() as session:
                name = f"{owner}/set-{number:04d}"
                sets.create_set(session, admins[owner], name, f"Bench set {number}")
            with factory() as session:
                slug = name.split("/", 1)[1]
                sets.set_grants(session, admins[owner], owner, slug, readers, if_match=None)
    engine.dispose()
    return poller_tokens


def first_polls(hub: Hub, poller_tokens: Sequence[str], expected_sets: int) -> list[str]:
    """Each poller's first poll (a 200 with the listing): the ETags they keep."""
    etags: list[str] = []
    with httpx.Client(base_url=hub.url, trust_env=False, timeout=30.0) as http:
        for token in poller_tokens:
            answer = http.get("/v1/sets", headers={"Authorization": f"Bearer {token}"})
            if answer.status_code != 200:
                raise BenchError(f"first poll answered {answer.status_code}: {answer.text[:300]}")
            listed = len(answer.json()["sets"])
            if listed != expected_sets:
                raise BenchError(f"a poller sees {listed} sets, expected {expected_sets}")
            etags.append(answer.headers["ETag"])
    return etags


def poll_requests(poller_tokens: Sequence[str], etags: Sequence[str]) -> list[bytes]:
    """The no-change poll of each poller: its token and the ETag it holds."""
    return [
        get_request("/v1/sets", {"Authorization": f"Bearer {token}", "If-None-Match": etag})
        for token, etag in zip(poller_tokens, etags, strict=True)
    ]


def report(label: str, result: LoadResult, floor: LoadResult | None) -> list[str]:
    """One line of figures, with the targets checked."""
    ratio = f", {result.rate / floor.rate:.2f}x bare" if floor else ""
    other = {s: n for s, n in result.statuses.items() if s != 304}
    line = (
        f"{label:<24} {result.rate:8.0f} polls/s  p50 {result.quantile(0.5):6.1f} ms  "
        f"p99 {result.quantile(0.99):6.1f} ms  errors {result.errors}"
        f"{'  non-304 ' + str(other) if other else ''}{ratio}"
    )
    misses: list[str] = []
    if floor is not None:
        if result.rate < RATE_TARGET:
            misses.append(f"{label}: {result.rate:.0f} polls/s < {RATE_TARGET:.0f}")
        if result.rate < RATIO_TARGET * floor.rate:
            misses.append(f"{label}: {result.rate / floor.rate:.2f}x bare < {RATIO_TARGET}x")
        if result.quantile(0.99) > P99_TARGET_MS:
            misses.append(f"{label}: p99 {result.quantile(0.99):.1f} ms > {P99_TARGET_MS} ms")
        if result.errors or other:
            misses.append(f"{label}: errors {result.errors}, non-304 answers {other}")
    print(line, flush=True)
    return misses


def main(argv: Sequence[str] | None = None) -> int:
    """Measure the bare floor, then the hub on each database; print figures and misses."""
    args = parse_args(argv)
    readable = args.sets // args.owners
    note(
        f"{args.sets} sets, {args.tokens} tokens, {args.pollers} pollers reading "
        f"{readable} sets each, {args.seconds:.0f} s per run, {args.workers} workers"
    )
    misses: list[str] = []
    with tempfile.TemporaryDirectory(prefix="hashex-bench-poll-") as raw:
        work = Path(raw)
        (work / "bare").mkdir()
        with running_hub(work / "bare", workers=args.workers, app="_bare:create_app()") as bare:
            request = get_request("/v1/sets", {"If-None-Match": '"bare"'})
            floor = measure(bare.address[1], [request] * args.pollers, args.seconds)
        report("bare Flask endpoint", floor, None)
        for database in args.databases.split(","):
            directory = work / database
            directory.mkdir()
            if database == "sqlite":
                url = f"sqlite:///{directory / 'hub.db'}"
                misses += _measure_hub(database, url, directory, args, floor, readable)
            elif database == "postgresql":
                with postgres_database(args.pg_admin_url) as url:
                    misses += _measure_hub(database, url, directory, args, floor, readable)
            else:
                raise SystemExit(f"--databases: unknown database {database!r}")
    for miss in misses:
        print(f"MISSED {miss}")
    return 1 if misses else 0


def _measure_hub(
    database: str,
    url: str,
    directory: Path,
    args: argparse.Namespace,
    floor: LoadResult,
    readable: int,
) -> list[str]:
    Hub("", url).admin("init")
    note(f"{database}: seeding")
    poller_tokens = seed(url, args)
    with running_hub(directory, workers=args.workers, database_url=url) as hub:
        etags = first_polls(hub, poller_tokens, readable)
        result = measure(hub.address[1], poll_requests(poller_tokens, etags), args.seconds)
    return report(f"hub poll, {database}", result, floor)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        sys.exit(1)
