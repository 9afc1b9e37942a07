"""``make fuzz``: schemathesis against a real hub for longer than CI can afford.

A SQLite hub on 127.0.0.1 is seeded with the real CLIs (two agencies, a set
granted from one to the other, one published version) and schemathesis runs
every check against ``/v1/openapi.json`` with a token of each role: the hub
operator, the owner's agency-admin and publisher, and the other agency's
reader.  ``--max-examples`` per operation (default 300) sets the length.
Prints, per role, the requests generated and the failures; exits 1 if any.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from _data import random_hashes, write_entries
from _hub import Client, create_set, running_hub, seed

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.apifuzz import run_schemathesis

SET = "fuzzed"


def main(argv: Sequence[str] | None = None) -> int:
    """Seed a hub, then fuzz it as each role."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-examples", type=int, default=300, help="per operation and role")
    args = parser.parse_args(argv)
    failed = False
    with tempfile.TemporaryDirectory(prefix="hashex-fuzz-") as work:
        directory = Path(work)
        with running_hub(directory, workers=2) as hub:
            owner, lab = seed(hub, directory)
            operator = hub.admin("token", "create", owner.slug, "--role", "admin").strip()
            create_set(hub, owner, f"{owner.slug}/{SET}", lab.slug, directory / "admin-home")
            publisher = Client(hub, owner.publisher_token, directory / "publisher-home")
            publisher.run("trust", "add", owner.slug, owner.keyset)
            source = write_entries(directory / "v1.txt", random_hashes(random.Random(7), 100))
            publisher.run("publish", f"{owner.slug}/{SET}", "--key", owner.key, "--from", source)
            for role, token in (
                ("admin", operator),
                ("agency-admin", owner.admin_token),
                ("publisher", owner.publisher_token),
                ("reader", lab.reader_token),
            ):
                run = run_schemathesis(
                    hub.url,
                    token,
                    agency=owner.slug,
                    set_name=SET,
                    max_examples=args.max_examples,
                    timeout=3600.0,
                )
                print(f"{role:>12}: {run.line()}", flush=True)
                if run.returncode != 0:
                    failed = True
                    print(run.output[-8000:])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
