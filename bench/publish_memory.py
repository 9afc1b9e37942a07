"""``bench/publish_memory.py``: what a publish costs the publishing client, in memory and time.

One run starts a real SQLite hub (as ``bench/run.py`` does), registers an
owning and a consuming agency with the real CLIs, and measures, each as one
``hashex`` child process (its peak RSS from ``wait4``, its wall time):

* **publish, first version**: ``hashex publish --from`` of ``--entries``
  random SHA-256 entries (default 5,000,000) in random order, first with
  ``--dry-run`` (read, built and signed: the client alone), then for real
  (the hub checks and stores it meanwhile); target: peak RSS at most 250 MB;
* **publish, change on the big set**: ``hashex publish --add --remove`` of a
  ``--change``-entry change (half adds, half removes, default 1,000), the
  median of ``--repeat`` runs; target: peak RSS at most 250 MB, and wall time
  at most 1.5x the same change on a ``--small-entries`` (default 50,000)
  set plus the content digest of the big set.  The same change is also
  measured ``--dry-run`` (synced, built and signed, not uploaded): the
  client's own cost, without the hub's check of the upload;
* **the content digest** of the big set, measured alone three ways:
  ``sha256sum`` of the content bytes (the strictest floor), a child that
  reads the held content out of the publisher's store and hashes it (what
  a change must do at the least, given the store), and ``hashex verify``.
  The change target is judged against each.

Every hash is synthetic.  The hub is stopped and every temporary file
removed at the end, on error too.  The figures belong to the machine that
measured them.
"""

from __future__ import annotations

import argparse
import random
import signal
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from _data import EvolvingSet, random_hashes, write_entries
from _hub import BIN, OWNER, BenchError, Client, Hub, clean_env, create_set, running_hub, seed
from _measure import note

BIG = f"{OWNER}/big"
SMALL = f"{OWNER}/small"
RSS_TARGET_MB = 250.0
CHANGE_RATIO = 1.5
MB = 1_000_000

# Runs its arguments as a command, exits with its status, and prints its wall
# time and peak RSS: RUSAGE_CHILDREN of a process that started nothing else.
_LAUNCHER = """
import resource, subprocess, sys, time
start = time.perf_counter()
code = subprocess.run(sys.argv[1:], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL).returncode
seconds = time.perf_counter() - start
print(seconds, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
sys.exit(code)
"""

# Reads the held content of a set out of a store and hashes it block-wise: the
# O(N) pass a change publish cannot avoid, measured alone.
_STORE_DIGEST = """
import hashlib, sys
from itertools import islice
from pathlib import Path
from client.store import Store
store = Store.open(Path(sys.argv[1]))
lines = store.iter_content(sys.argv[2])
digest = hashlib.sha256()
while block := list(islice(lines, 10_000)):
    digest.update(b"\\n".join(block) + b"\\n")
print(digest.hexdigest())
"""


@dataclass(frozen=True)
class Run:
    """One child process: wall seconds and peak resident set size in MB."""

    seconds: float
    rss_mb: float


def measured(command: Sequence[str | Path], env: dict[str, str], work: Path) -> Run:
    """Run ``command`` as a child of a fresh, small launcher; its wall time and peak RSS.

    The launcher, not this process, starts the command: a child's peak RSS
    counts what the process that forked it held at that moment, and this
    one holds millions of hashes.
    """
    args = [str(part) for part in command]
    err_path = work / "child.stderr"
    with err_path.open("wb") as err:
        done = subprocess.run(
            [sys.executable, "-c", _LAUNCHER, *args],
            env=clean_env(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=err,
            check=False,
        )
    if done.returncode != 0:
        raise BenchError(
            f"{' '.join(args[:3])} ... exited {done.returncode}:\n"
            f"{err_path.read_text(errors='replace')[-2000:]}"
        )
    seconds, kib = done.stdout.split()
    # Linux reports ru_maxrss in KiB.
    return Run(float(seconds), int(kib) * 1024 / MB)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The sizes; the defaults are the targets' sizes."""
    parser = argparse.ArgumentParser(
        prog="bench/publish_memory.py",
        description="Peak RSS and time of the publishing client, against its targets.",
    )
    parser.add_argument("--entries", type=int, default=5_000_000, help="entries of the big set")
    parser.add_argument(
        "--small-entries", type=int, default=50_000, help="entries of the small set"
    )
    parser.add_argument(
        "--change", type=int, default=1_000, help="entries of a change (half adds, half removes)"
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs of each change publish")
    parser.add_argument("--workers", type=int, default=2, help="hub gunicorn workers")
    parser.add_argument("--seed", type=int, default=20_260_514, help="random seed")
    args = parser.parse_args(argv)
    if min(args.entries, args.small_entries, args.repeat) < 1:
        parser.error("sizes and --repeat must be at least 1")
    removed = args.change // 2 * args.repeat
    if args.change < 2 or removed > min(args.entries, args.small_entries) // 4:
        parser.error("--change must be at least 2 and remove under a quarter of each set")
    return args


class Bench:
    """The measurements, in the order their inputs build up."""

    def __init__(self, args: argparse.Namespace, hub: Hub, work: Path) -> None:
        self.args = args
        self.work = work
        self.rng = random.Random(args.seed)
        self.owner, lab = seed(hub, work)
        self.publisher = Client(hub, self.owner.publisher_token, work / "publisher-home")
        self.publisher.run("trust", "add", self.owner.slug, self.owner.keyset)
        for name in (BIG, SMALL):
            create_set(hub, self.owner, name, lab.slug, work / "admin-home")
        self.rows: list[tuple[str, str, str, str]] = []

    def publish(self, name: str, *options: str | Path) -> Run:
        command = self.publisher.command("publish", name, "--key", self.owner.key, *options)
        return measured(command, self.publisher.env(), self.work)

    def first(self, name: str, evolving: EvolvingSet) -> tuple[Run, Run]:
        """Version 1 built and signed only (``--dry-run``), then published."""
        source = write_entries(self.work / "v1.txt", evolving.held())
        dry = self.publish(name, "--from", source, "--dry-run")
        run = self.publish(name, "--from", source)
        source.unlink()
        return dry, run

    def changes(self, name: str, evolving: EvolvingSet, *options: str) -> list[Run]:
        """``--repeat`` changes published (or, with ``--dry-run``, built and signed)."""
        half = self.args.change // 2
        runs = []
        for _ in range(self.args.repeat):
            adds, removes = evolving.change(half, half)
            runs.append(
                self.publish(
                    name,
                    "--add",
                    write_entries(self.work / "adds.txt", adds),
                    "--remove",
                    write_entries(self.work / "removes.txt", removes),
                    *options,
                )
            )
            if options:
                # Not published: the next change is drawn from the same set.
                evolving.removed -= len(removes)
                evolving.hashes[-len(adds) :] = []
        return runs

    def digests(self, evolving: EvolvingSet) -> dict[str, float]:
        """The big set's content digest, measured alone three ways (medians)."""
        content = self.work / "content.txt"
        write_entries(content, sorted(f"sha256:{h}" for h in evolving.held()))
        # Read once, so sha256sum is timed from the page cache.
        subprocess.run(["cat", str(content)], stdout=subprocess.DEVNULL, check=True)
        env = self.publisher.env()
        store_digest = [sys.executable, "-c", _STORE_DIGEST, self.publisher.home, BIG]
        ways = {
            "sha256sum of the content bytes": (["sha256sum", content], {}),
            "store read + sha256 (python child)": (store_digest, {"PYTHONPATH": str(ROOT)}),
            "hashex verify (all held sets)": (self.publisher.command("verify"), env),
        }
        result = {}
        for what, (command, extra) in ways.items():
            times = [measured(command, extra, self.work).seconds for _ in range(self.args.repeat)]
            result[what] = statistics.median(times)
        content.unlink()
        return result

    def run(self) -> None:
        args = self.args
        note(f"making {args.entries:,} random SHA-256 hashes")
        big = EvolvingSet(random_hashes(self.rng, args.entries), self.rng)
        small = EvolvingSet(random_hashes(self.rng, args.small_entries), self.rng)

        note(f"publishing {args.entries:,} entries as version 1 of {BIG}")
        first_dry, first = self.first(BIG, big)
        self.row(f"publish --from {args.entries:,} (v1)", first, rss_target=True)
        self.row(f"  --dry-run (client alone) on {args.entries:,}", first_dry, True)

        note(f"publishing {args.repeat} changes of {args.change:,} to {BIG}")
        big_changes = self.changes(BIG, big)
        big_change = _median(big_changes)
        self.row(f"publish change {args.change:,} on {args.entries:,}", big_change, True)

        big_dry = _median(self.changes(BIG, big, "--dry-run"))
        self.row(f"  --dry-run (client alone) on {args.entries:,}", big_dry, True)

        note(f"publishing {args.small_entries:,} entries to {SMALL}, then {args.repeat} changes")
        _, small_first = self.first(SMALL, small)
        self.row(f"publish --from {args.small_entries:,} (v1)", small_first, rss_target=True)
        small_change = _median(self.changes(SMALL, small))
        self.row(f"publish change {args.change:,} on {args.small_entries:,}", small_change, True)
        small_dry = _median(self.changes(SMALL, small, "--dry-run"))
        self.row(f"  --dry-run (client alone) on {args.small_entries:,}", small_dry, True)

        note("the big set's content digest alone")
        digests = self.digests(big)
        for what, seconds in digests.items():
            self.rows.append((f"content digest: {what}", f"{seconds:.2f} s", "", ""))
        print(self.table())
        print()
        print(
            f"change publishes on {args.entries:,}: "
            f"{', '.join(f'{r.seconds:.2f}' for r in big_changes)} s"
        )
        for label, ours, theirs in (
            ("publish", big_change, small_change),
            ("--dry-run", big_dry, small_dry),
        ):
            print(f"change {label}: {ours.seconds:.2f} s on {args.entries:,}")
            for what, seconds in digests.items():
                allowed = CHANGE_RATIO * theirs.seconds + seconds
                verdict = "pass" if ours.seconds <= allowed else "FAIL"
                print(
                    f"  target {CHANGE_RATIO}x {theirs.seconds:.2f} (on {args.small_entries:,}) "
                    f"+ {what} {seconds:.2f} = {allowed:.2f} s: {verdict}"
                )

    def row(self, name: str, run: Run, rss_target: bool) -> None:
        verdict = ""
        if rss_target:
            verdict = "pass" if run.rss_mb <= RSS_TARGET_MB else "FAIL"
        self.rows.append((name, f"{run.seconds:.2f} s", f"{run.rss_mb:.0f} MB", verdict))
        note(f"  {name}: {run.seconds:.2f} s, peak RSS {run.rss_mb:.0f} MB {verdict}")

    def table(self) -> str:
        header = ("measurement", "wall", "peak RSS", f"RSS <= {RSS_TARGET_MB:.0f} MB")
        rows = [header, *self.rows]
        widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
        lines = [" | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
        lines.insert(1, "-+-".join("-" * w for w in widths))
        return "\n".join(line.rstrip() for line in lines)


ROOT = Path(__file__).resolve().parent.parent


def _median(runs: Sequence[Run]) -> Run:
    return Run(
        statistics.median(r.seconds for r in runs), statistics.median(r.rss_mb for r in runs)
    )


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the measurements and print the table; 1 if a step failed, 130 on interrupt."""
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    note(f"hashex at {BIN}")
    try:
        with tempfile.TemporaryDirectory(prefix="hashex-bench-publish-") as directory:
            work = Path(directory)
            (work / "hub").mkdir()
            with running_hub(work / "hub", workers=args.workers) as hub:
                Bench(args, hub, work).run()
    except BenchError as exc:
        note(f"stopped: {exc}")
        return 1
    except KeyboardInterrupt:
        note("interrupted; the hub is stopped and the files removed")
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
