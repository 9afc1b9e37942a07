"""``make bench``: Hashex's first benchmarks, each measured beside its floor or target.

One run starts a real SQLite hub (``hashex-server serve`` on a free port of
127.0.0.1), registers an owning and a consuming agency with the real CLIs,
and measures, through the ``hashex`` command line:

* **publish, first version**: ``hashex publish --from`` of a 1,000,000-entry
  SHA-256 set (the client signs and uploads, the hub verifies and commits);
  target at most 2x the first sync;
* **first sync**: ``hashex sync`` of that set into an empty store, fully
  verified, beside the floor: ``curl`` of the same content bytes (identity)
  plus ``sqlite3 .import`` into a table with a primary key; target at most
  1.5x the floor;
* **publish, change**: ``hashex publish --add --remove`` of 500 adds and 500
  removes; target at most 2x the first sync;
* **delta scaling**: ``hashex sync`` of that change on the 1,000,000-entry
  set beside the same-sized change on a 10,000-entry set; target at most 1.5x;
* **batch lookup**: ``hashex lookup --file`` of 1,000,000 bare hex hashes
  (1% of them listed) against the 1,000,000-entry store; target at least
  500,000 hashes/s;
* **scan**: ``hashex scan`` of 1,000 MB of random files (only SHA-256 sets
  held) beside ``sha256sum`` of the same files, both warm; target at least
  0.9x its throughput.

Sizes are flags: ``make bench BENCH_ARGS="--entries 100000 --repeat 1"``.
Cheap measurements are repeated (``--repeat``) and their median reported;
the first-version publish runs once.  Every hash is synthetic.  The hub is
stopped and every temporary file removed at the end, on error too.  The
figures are printed only: they belong to the machine that measured them.
"""

from __future__ import annotations

import argparse
import random
import shutil
import signal
import statistics
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from _data import (
    EvolvingSet,
    random_hashes,
    read_all,
    write_bare,
    write_entries,
    write_random_files,
)
from _hub import OWNER, BenchError, Client, Hub, create_set, running_hub, seed
from _measure import Outcome, note, table, timed

BIG = f"{OWNER}/big"
SMALL = f"{OWNER}/small"
LOOKUP_RATE_TARGET = 500_000
MB = 1_000_000


SKIPPABLE = ("delta", "lookup", "scan")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The benchmark sizes; the defaults are the targets' sizes."""
    parser = argparse.ArgumentParser(
        prog="bench/run.py", description="Hashex benchmarks against their targets."
    )
    parser.add_argument("--entries", type=int, default=1_000_000, help="entries of the big set")
    parser.add_argument(
        "--small-entries", type=int, default=10_000, help="entries of the small set"
    )
    parser.add_argument(
        "--delta", type=int, default=1_000, help="entries of a change (half adds, half removes)"
    )
    parser.add_argument("--lookups", type=int, default=1_000_000, help="hashes to look up")
    parser.add_argument(
        "--listed", type=float, default=0.01, help="fraction of looked-up hashes that are listed"
    )
    parser.add_argument("--scan-mb", type=int, default=1_000, help="MB of files to scan")
    parser.add_argument("--scan-files", type=int, default=200, help="number of files to scan")
    parser.add_argument(
        "--repeat", type=int, default=3, help="repetitions of the cheap measurements"
    )
    parser.add_argument("--workers", type=int, default=2, help="hub gunicorn workers")
    parser.add_argument("--seed", type=int, default=20_240_601, help="random seed")
    parser.add_argument(
        "--skip",
        action="append",
        choices=SKIPPABLE,
        default=[],
        help="leave out a benchmark (repeatable); the first publish and sync always run",
    )
    args = parser.parse_args(argv)
    if min(args.entries, args.small_entries, args.lookups, args.scan_files, args.repeat) < 1:
        parser.error("sizes and --repeat must be at least 1")
    if args.delta < 2 or args.delta // 2 > min(args.entries, args.small_entries) // 4:
        parser.error("--delta must be at least 2 and remove under a quarter of each set")
    if not 0 <= args.listed <= 1:
        parser.error("--listed is a fraction between 0 and 1")
    return args


class Bench:
    """The benchmarks, run in order against one hub; each appends its Outcome."""

    def __init__(self, args: argparse.Namespace, hub: Hub, work: Path) -> None:
        self.args = args
        self.hub = hub
        self.work = work
        self.rng = random.Random(args.seed)
        self.outcomes: list[Outcome] = []
        self.owner, self.lab = seed(hub, work)
        self.publisher = Client(hub, self.owner.publisher_token, work / "publisher-home")
        self.publisher.run("trust", "add", self.owner.slug, self.owner.keyset)
        self.pinned = self._consumer(work / "pinned-home")
        self.pinned.run("trust", "add", self.owner.slug, self.owner.keyset)
        for name in (BIG, SMALL):
            create_set(hub, self.owner, name, self.lab.slug, work / "admin-home")
        self.big = EvolvingSet(random_hashes(self.rng, args.entries), self.rng)
        self.small = EvolvingSet(random_hashes(self.rng, args.small_entries), self.rng)

    def run(self) -> list[Outcome]:
        """Every benchmark, in the order their inputs build up."""
        publish_first = self._publish_first()
        first_sync = self._first_sync()
        self._record(
            Outcome(
                f"publish {self.args.entries:,} entries (v1)",
                f"{publish_first:.2f} s",
                f"first sync {first_sync:.2f} s",
                publish_first / first_sync,
                2.0,
            )
        )
        if "delta" not in self.args.skip:
            publish_change = self._delta_scaling()
            self._record(
                Outcome(
                    f"publish {self.args.delta:,}-entry change",
                    f"{publish_change:.2f} s",
                    f"first sync {first_sync:.2f} s",
                    publish_change / first_sync,
                    2.0,
                )
            )
        if "lookup" not in self.args.skip:
            self._lookup()
        if "scan" not in self.args.skip:
            self._scan()
        return self.outcomes

    def _record(self, outcome: Outcome) -> None:
        print(outcome.line(), flush=True)
        self.outcomes.append(outcome)

    def _consumer(self, home: Path) -> Client:
        return Client(self.hub, self.lab.reader_token, home)

    def _publish(self, name: str, *options: str | Path) -> float:
        command = self.publisher.command("publish", name, "--key", self.owner.key, *options)
        return timed(command, self.publisher.env())

    def _publish_change(self, name: str, evolving: EvolvingSet) -> float:
        half = self.args.delta // 2
        adds, removes = evolving.change(half, half)
        return self._publish(
            name,
            "--add",
            write_entries(self.work / "adds.txt", adds),
            "--remove",
            write_entries(self.work / "removes.txt", removes),
        )

    def _sync(self, home: Path, name: str) -> float:
        consumer = self._consumer(home)
        return timed(consumer.command("sync", name), consumer.env())

    def _publish_first(self) -> float:
        note(f"publishing {self.args.entries:,} entries as version 1 (runs once)")
        source = write_entries(self.work / "v1.txt", self.big.held())
        seconds = self._publish(BIG, "--from", source)
        source.unlink()
        return seconds

    def _first_sync(self) -> float:
        """Median first sync, each into a fresh store, beside the curl + sqlite3 floor."""
        note(f"first sync of {self.args.entries:,} entries, {self.args.repeat} times, and floor")
        url = f"{self.hub.url}/v1/sets/{BIG}/versions/1/content"
        floors, syncs = [], []
        for attempt in range(self.args.repeat):
            floors.append(self._floor(url))
            home = self.work / "big-home"
            shutil.rmtree(home, ignore_errors=True)
            shutil.copytree(self.pinned.home, home)
            syncs.append(self._sync(home, BIG))
            note(f"  run {attempt + 1}: floor {floors[-1]:.2f} s, sync {syncs[-1]:.2f} s")
        # The store holds exactly the signed content: its whole digest, re-checked.
        self._consumer(self.work / "big-home").run("verify")
        sync, floor = statistics.median(syncs), statistics.median(floors)
        self._record(
            Outcome(
                f"first sync {self.args.entries:,} entries",
                f"{sync:.2f} s",
                f"floor {floor:.2f} s (curl + sqlite3 .import)",
                sync / floor,
                1.5,
            )
        )
        return sync

    def _floor(self, url: str) -> float:
        """curl of the content bytes (no gzip), plus sqlite3 .import into a keyed table."""
        content, database = self.work / "floor.txt", self.work / "floor.db"
        database.unlink(missing_ok=True)
        auth = f"Authorization: Bearer {self.lab.reader_token}"
        fetch = timed(["curl", "-sf", "-H", auth, url, "-o", content])
        load = timed(
            [
                "sqlite3",
                database,
                "CREATE TABLE e (line TEXT PRIMARY KEY) WITHOUT ROWID",
                f".import --csv {content} e",
            ]
        )
        content.unlink()
        database.unlink()
        return fetch + load

    def _delta_scaling(self) -> float:
        """Delta sync on the big set beside the small one; returns the median change publish."""
        note(f"publishing a {self.args.delta:,}-entry change to {BIG}")
        publishes = [self._publish_change(BIG, self.big)]
        note(f"preparing {SMALL} ({self.args.small_entries:,} entries) and its change")
        self._publish(SMALL, "--from", write_entries(self.work / "small.txt", self.small.held()))
        small_home = self.work / "small-home"
        shutil.copytree(self.pinned.home, small_home)
        self._sync(small_home, SMALL)
        self._publish_change(SMALL, self.small)
        big_home = self.work / "big-home"
        homes = {big_home: BIG, small_home: SMALL}
        snapshots = {home: home.with_name(home.name + "-v1") for home in homes}
        for home, snapshot in snapshots.items():
            shutil.copytree(home, snapshot)
        note(f"delta sync on both sets, {self.args.repeat} times")
        seconds: dict[Path, list[float]] = {home: [] for home in homes}
        for _ in range(self.args.repeat):
            for home, name in homes.items():
                shutil.rmtree(home)
                shutil.copytree(snapshots[home], home)
                seconds[home].append(self._sync(home, name))
        for snapshot in snapshots.values():
            shutil.rmtree(snapshot)
        big, small = statistics.median(seconds[big_home]), statistics.median(seconds[small_home])
        self._record(
            Outcome(
                f"delta sync {self.args.delta:,} on {self.args.entries:,}",
                f"{big:.2f} s",
                f"same delta on {self.args.small_entries:,}: {small:.2f} s",
                big / small,
                1.5,
            )
        )
        note(f"publishing {self.args.repeat - 1} more changes to {BIG}")
        publishes += [self._publish_change(BIG, self.big) for _ in range(self.args.repeat - 1)]
        return statistics.median(publishes)

    def _lookup(self) -> None:
        count = self.args.lookups
        listed = min(round(count * self.args.listed), len(self.big.held()))
        queries = self.rng.sample(self.big.held(), listed) + random_hashes(self.rng, count - listed)
        self.rng.shuffle(queries)
        source = write_bare(self.work / "queries.txt", queries)
        home = self.work / "big-home"
        # Brought to the newest version, so exactly the sampled hashes are listed.
        self._sync(home, BIG)
        note(f"looking up {count:,} hashes ({listed:,} listed), {self.args.repeat} times")
        # Exit 0 when anything is listed, 1 when nothing is: both are answers.
        command = self._consumer(home).command("lookup", "--file", source)
        env = self._consumer(home).env()
        seconds = statistics.median(
            timed(command, env, exits=(0, 1)) for _ in range(self.args.repeat)
        )
        rate = count / seconds
        self._record(
            Outcome(
                f"batch lookup {count:,} hashes",
                f"{rate:,.0f} hashes/s ({seconds:.2f} s)",
                f"{LOOKUP_RATE_TARGET:,} hashes/s",
                rate / LOOKUP_RATE_TARGET,
                1.0,
                more_is_better=True,
            )
        )

    def _scan(self) -> None:
        files = self.work / "scan"
        size = self.args.scan_mb * MB // self.args.scan_files
        note(f"writing {self.args.scan_files} files of {size:,} random bytes")
        total = write_random_files(files, self.args.scan_files, size)
        read_all(files)
        paths = sorted(files.iterdir())
        consumer = self._consumer(self.work / "big-home")
        scan = consumer.command("scan", files)
        note(f"scanning {total / MB:,.0f} MB with sha256sum and hashex, {self.args.repeat} times")
        sums, scans = [], []
        for _ in range(self.args.repeat):
            sums.append(timed(["sha256sum", *paths]))
            # Nothing is listed, so exit 1 is the expected answer.
            scans.append(timed(scan, consumer.env(), exits=(0, 1)))
        ours, theirs = total / MB / statistics.median(scans), total / MB / statistics.median(sums)
        self._record(
            Outcome(
                f"scan {total / MB:,.0f} MB (sha256 sets only)",
                f"{ours:,.0f} MB/s",
                f"sha256sum {theirs:,.0f} MB/s",
                ours / theirs,
                0.9,
                more_is_better=True,
            )
        )
        shutil.rmtree(files)


def _terminate(signum: int, frame: FrameType | None) -> None:
    # SIGTERM as an exception: the hub is stopped and the files removed as on Ctrl-C.
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    """Run every benchmark and print the table; 0 when all ran, whatever the verdicts.

    A failed step exits 1 and an interrupt 130, after the hub is stopped and
    the temporary files are removed.
    """
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    try:
        with tempfile.TemporaryDirectory(prefix="hashex-bench-") as directory:
            work = Path(directory)
            (work / "hub").mkdir()
            with running_hub(work / "hub", workers=args.workers) as hub:
                outcomes = Bench(args, hub, work).run()
    except BenchError as exc:
        note(f"stopped: {exc}")
        return 1
    except KeyboardInterrupt:
        note("interrupted; the hub is stopped and the files removed")
        return 130
    print()
    print(table(outcomes))
    met = sum(o.passed for o in outcomes)
    print(f"\n{met} of {len(outcomes)} targets met on this machine.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
