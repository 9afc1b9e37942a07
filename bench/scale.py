"""``make bench-scale``: a national hub's bulk paths on SQLite and PostgreSQL.

For each database, one run starts a real hub (``hashex-server serve`` on
its defaults), registers an owner and a consumer with the real CLIs, and
measures through the ``hashex`` command line:

* **publish, first version** of ``--entries`` (1,000,000; the issue's
  figure is 5,000,000: ``BENCH_ARGS="--entries 5000000"``) SHA-256 entries,
  beside the **first sync** of the same set into an empty store; target
  (issue 14, on PostgreSQL): publish at most 2x the first sync;
* **10 consumers bootstrapping at once** (``--consumers``): each one's
  time beside the lone first sync, target at most 2x (on one two-core
  machine the ten clients' own verifying and storing share the cores with
  the hub, so the hub's share is measured apart: the content fetched by
  ``curl``, alone and ten at once); and the hub's worker memory before and
  after (peak RSS of its largest worker, VmHWM), which must stay flat:
  bodies stream from the database a batch at a time.

Every hash is synthetic.  The PostgreSQL database is made for the run and
dropped after it; only 127.0.0.1 is addressed.
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path

from _data import random_hashes, write_entries
from _hub import Client, Hub, create_set, running_hub, seed
from _measure import note, timed
from poll import PG_ADMIN_URL, postgres_database

NAME = "bench-owner/scale"
PUBLISH_TARGET = 2.0
BOOTSTRAP_TARGET = 2.0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The benchmark's sizes."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument(
        "--consumers", type=int, default=10, help="0 measures the publish and one sync only"
    )
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument(
        "--databases", default="sqlite,postgresql", help="comma-separated: sqlite, postgresql"
    )
    parser.add_argument("--pg-admin-url", default=PG_ADMIN_URL)
    return parser.parse_args(argv)


def worker_peak_rss_mb(hub: Hub) -> float:
    """The largest peak RSS (VmHWM) among the hub's worker processes, in MB."""
    peaks = []
    children = Path(f"/proc/{hub.pid}/task/{hub.pid}/children").read_text().split()
    for pid in children:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                peaks.append(int(line.split()[1]) / 1024)
    return max(peaks, default=0.0)


def measure(database: str, url: str | None, work: Path, args: argparse.Namespace) -> list[str]:
    """The figures of one database, as printed lines; the misses are marked."""
    lines: list[str] = []
    with running_hub(work, workers=2, database_url=url) as hub:
        owner, lab = seed(hub, work)
        create_set(hub, owner, NAME, lab.slug, work / "admin-home")
        publisher = Client(hub, owner.publisher_token, work / "publisher-home")
        publisher.run("trust", "add", owner.slug, owner.keyset)
        pinned = Client(hub, lab.reader_token, work / "pinned-home")
        pinned.run("trust", "add", owner.slug, owner.keyset)
        source = write_entries(
            work / "v1.txt", random_hashes(random.Random(args.seed), args.entries)
        )
        note(f"{database}: publishing {args.entries:,} entries")
        publish = timed(
            publisher.command("publish", NAME, "--key", owner.key, "--from", source),
            publisher.env(),
        )
        source.unlink()

        def bootstrap(home: Path, seconds: list[float]) -> None:
            shutil.rmtree(home, ignore_errors=True)
            shutil.copytree(pinned.home, home)
            consumer = Client(hub, lab.reader_token, home)
            seconds.append(timed(consumer.command("sync", NAME), consumer.env()))

        note(f"{database}: a lone first sync")
        lone: list[float] = []
        bootstrap(work / "lone-home", lone)
        rss_before = worker_peak_rss_mb(hub)
        if args.consumers == 0:
            lines.append(_publish_line(database, publish, lone[0]))
            lines.append(f"{database:<11} largest hub worker peak RSS {rss_before:6.0f} MB")
            return lines
        note(f"{database}: {args.consumers} first syncs at once")
        together: list[float] = []
        threads = [
            threading.Thread(target=bootstrap, args=(work / f"home-{n}", together))
            for n in range(args.consumers)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if len(together) != args.consumers:
            raise SystemExit(f"{database}: only {len(together)} of the concurrent syncs ended")
        # The hub's own share: the content bytes alone, by curl, one and then all at once.
        url = f"{hub.url}/v1/sets/{NAME}/versions/1/content"
        curl = ["curl", "-sf", "-o", "/dev/null", "-H", f"Authorization: Bearer {lab.reader_token}"]
        alone = timed([*curl, url])
        fetched: list[float] = []
        fetchers = [
            threading.Thread(target=lambda: fetched.append(timed([*curl, url])))
            for _ in range(args.consumers)
        ]
        for thread in fetchers:
            thread.start()
        for thread in fetchers:
            thread.join()
        rss_after = worker_peak_rss_mb(hub)
    worst = max(together) / lone[0]
    lines.append(_publish_line(database, publish, lone[0]))
    lines.append(
        f"{database:<11} {args.consumers} at once: slowest {max(together):6.2f} s, "
        f"median {sorted(together)[len(together) // 2]:6.2f} s = {worst:4.2f}x lone "
        f"(target <= {BOOTSTRAP_TARGET}x){_miss(worst > BOOTSTRAP_TARGET)}"
    )
    lines.append(
        f"{database:<11} content by curl: alone {alone:5.2f} s, {args.consumers} at once "
        f"slowest {max(fetched):5.2f} s = {max(fetched) / alone:4.2f}x "
        f"({args.consumers / 2:.0f}x is the most two cores could share out)"
    )
    lines.append(
        f"{database:<11} largest hub worker peak RSS {rss_before:6.0f} MB after one sync, "
        f"{rss_after:6.0f} MB after {args.consumers} at once"
    )
    return lines


def _publish_line(database: str, publish: float, sync: float) -> str:
    ratio = publish / sync
    return (
        f"{database:<11} publish v1 {publish:7.2f} s   first sync {sync:6.2f} s   "
        f"ratio {ratio:4.2f}x (target <= {PUBLISH_TARGET}x){_miss(ratio > PUBLISH_TARGET)}"
    )


def _miss(missed: bool) -> str:
    return "  MISSED" if missed else ""


def main(argv: Sequence[str] | None = None) -> int:
    """Run each database's figures and print them together."""
    args = parse_args(argv)
    printed: list[str] = []
    with tempfile.TemporaryDirectory(prefix="hashex-bench-scale-") as raw:
        for database in args.databases.split(","):
            work = Path(raw) / database
            work.mkdir()
            if database == "postgresql":
                with postgres_database(args.pg_admin_url) as url:
                    printed += measure(database, url, work, args)
            elif database == "sqlite":
                printed += measure(database, None, work, args)
            else:
                raise SystemExit(f"--databases: unknown database {database!r}")
    print(f"{args.entries:,} SHA-256 entries, serve defaults (2 workers)")
    for line in printed:
        print(line)
    return 1 if any("MISSED" in line for line in printed) else 0


if __name__ == "__main__":
    sys.exit(main())
