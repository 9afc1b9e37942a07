"""The README's Python example ("Keeping a tool current") runs as written.

The ```python block under that heading is taken from README.md and run with
``exec`` against a real ``hashex-server serve`` on 127.0.0.1 holding a
published set granted to the reader's agency.  Only its three placeholders
change: the hub URL and the home directory are replaced in the text (each
must appear exactly once), and ``TOKEN`` is given as a global.  It runs in a
directory holding ``case-1234.md5``, ``md5sum`` output (a comment, one
listed and one unlisted file, in text and binary mode), and must print the
listed file's line with its set, version and label, nothing for the other,
and warn of nothing (a file it leaves open is a ResourceWarning).  A
README example that no longer runs, or no longer finds the listed hash,
fails this test.

The class the example uses, ``client.api.Hashex``, is tested beside it on
the same kind of hub: sync (every readable pinned set, or by name, with a
set the token cannot read as a typed error in its result), lookup (bad
lines raised together), entries and status, fresh and at a later clock.
"""

from __future__ import annotations

import gc
import random
import re
import warnings
from datetime import timedelta
from pathlib import Path

import pytest

from client.api import Hashex
from client.errors import HubRefusedError
from client.protocol.documents import SignedDocument
from client.protocol.errors import EntryInputError
from tests.client.realhub import RealHub, register
from tests.client.simhub import Consumer, SimAgency, SimSet
from tests.hubserver import StartHub
from tests.synthetic import random_line

README = Path(__file__).resolve().parents[2] / "README.md"
HEADING = "### Keeping a tool current"
HUB_LITERAL = '"https://hub.example.org"'
HOME_LITERAL = '"/var/lib/lab/hashex"'
NAME = "owner/nightly"


def readme_example() -> str:
    """The first ```python block after HEADING in README.md."""
    text = README.read_text(encoding="utf-8")
    assert HEADING in text, f"README.md has no {HEADING!r} section"
    section = text.split(HEADING, 1)[1]
    found = re.search(r"^```python\n(.*?)^```", section, re.MULTILINE | re.DOTALL)
    assert found is not None, f"no ```python block under {HEADING!r}"
    return found.group(1)


@pytest.fixture
def hub(sqlite_database_url: str, start_hub: StartHub) -> RealHub:
    return RealHub(sqlite_database_url, start_hub(sqlite_database_url, workers=1))


def test_the_readme_nightly_job_runs_and_finds_a_listed_hash(
    hub: RealHub,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    rng = random.Random(6_060_003)
    owner = register(hub.database_url, tmp_path, "owner")
    reader = register(hub.database_url, tmp_path, "reader", roles=("reader",))
    admin = Consumer(tmp_path / "owner-home", hub.url, owner.tokens["agency-admin"])
    for args in (("set", "create", NAME), ("set", "grant", NAME, "reader")):
        ran = admin.run(*args)
        assert ran.exit_code == 0, ran.stderr
    # Published with the protocol library and the hub's API.
    keyset = SignedDocument.loads("keyset", owner.keyset_file.read_text(encoding="ascii"))
    simset = SimSet(NAME, SimAgency("owner", owner.private, [keyset]))
    listed = rng.randbytes(16).hex()
    version = simset.publish(
        [f"md5:{listed} cat-a".encode(), *(random_line(rng) for _ in range(20))]
    )
    answer = hub.publish(NAME, version, owner.tokens["publisher"])
    assert answer.status_code == 201, answer.text

    home = tmp_path / "lab-home"
    Consumer(home, hub.url, reader.tokens["reader"]).pin("owner", owner.keyset_file)
    case = tmp_path / "case"
    case.mkdir()
    unlisted = rng.randbytes(16).hex()
    # As md5sum prints it (the hashes are synthetic, no file is read).
    summed = [
        "# md5sum evidence/*",
        f"{unlisted}  evidence/IMG_0001.JPG",
        f"{listed} *evidence/IMG 0002.JPG",
    ]
    (case / "case-1234.md5").write_text("".join(f"{line}\n" for line in summed), encoding="ascii")
    for variable in ("HASHEX_SERVER", "HASHEX_TOKEN", "HASHEX_HOME"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.chdir(case)

    code = readme_example()
    for literal in (HUB_LITERAL, HOME_LITERAL):
        assert code.count(literal) == 1, f"the example no longer has {literal} exactly once"
    code = code.replace(HUB_LITERAL, repr(hub.url)).replace(HOME_LITERAL, repr(str(home)))
    capsys.readouterr()
    # Warnings are errors in this suite; here they are recorded instead, so a
    # file the example leaves open is named rather than raised inside a
    # finalizer.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        namespace = {"TOKEN": reader.tokens["reader"]}
        exec(compile(code, f"{README}:{HEADING}", "exec"), namespace)  # noqa: S102
        del namespace
        gc.collect()

    printed = capsys.readouterr().out
    assert [line.rstrip() for line in printed.splitlines()] == [f"{summed[2]} {NAME} 1 cat-a"]
    assert unlisted not in printed
    assert [f"{w.category.__name__}: {w.message}" for w in caught] == []


def test_the_api_class_syncs_looks_up_iterates_and_reports_status(
    hub: RealHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(6_060_007)
    owner = register(hub.database_url, tmp_path, "owner")
    reader = register(hub.database_url, tmp_path, "reader", roles=("reader",))
    admin = Consumer(tmp_path / "owner-home", hub.url, owner.tokens["agency-admin"])
    for args in (
        ("set", "create", NAME),
        ("set", "grant", NAME, "reader"),
        ("set", "create", "owner/private"),
    ):
        ran = admin.run(*args)
        assert ran.exit_code == 0, ran.stderr
    keyset = SignedDocument.loads("keyset", owner.keyset_file.read_text(encoding="ascii"))
    simset = SimSet(NAME, SimAgency("owner", owner.private, [keyset]))
    version = simset.publish(random_line(rng, alg, "") for alg in ("md5", "sha1", "sha256") * 10)
    answer = hub.publish(NAME, version, owner.tokens["publisher"])
    assert answer.status_code == 201, answer.text
    home = tmp_path / "api-home"
    Consumer(home, hub.url, reader.tokens["reader"]).pin("owner", owner.keyset_file)
    for variable in ("HASHEX_SERVER", "HASHEX_TOKEN", "HASHEX_HOME"):
        monkeypatch.delenv(variable, raising=False)

    with Hashex(server=hub.url, token=reader.tokens["reader"], home=home) as hx:
        assert hx.status() == []
        (result,) = hx.sync()
        assert (result.name, result.version, result.error, result.exit_code) == (NAME, 1, None, 0)
        again = hx.sync(NAME)
        assert [(r.version, r.applied) for r in again] == [(1, [])]
        # The same typed errors as the command: a set the token cannot read...
        (refused,) = hx.sync("owner/private")
        assert isinstance(refused.error, HubRefusedError)
        assert (refused.error.status, refused.exit_code) == (404, 4)
        # ... and bad input, every bad line at once.
        with pytest.raises(EntryInputError) as bad:
            hx.lookup(["zz", version.lines[0].split()[0].decode(), "md5:12"])
        assert [p.line for p in bad.value.problems] == [1, 3]

        entries = list(hx.entries(NAME))
        assert [e.line() for e in entries] == version.lines
        assert list(hx.entries("owner/never-synced")) == []
        wanted = [entries[0], entries[-1]]
        hits = hx.lookup([wanted[0].hex.upper(), wanted[1].identity, rng.randbytes(16).hex()])
        assert sorted((h.alg, h.hash, h.label, h.set, h.version, h.stale) for h in hits) == sorted(
            (e.alg, e.hex, e.label, NAME, 1, False) for e in wanted
        )
        (status,) = hx.status()
        assert (status.name, status.version, status.count, status.stale) == (NAME, 1, 30, False)
        assert status.to_json()["stale_reasons"] == []
        later = status.expires + timedelta(seconds=1)
        (expired,) = hx.status(now=later)
        assert expired.stale
        assert [h.stale for h in hx.lookup([wanted[0].identity], now=later)] == [True]
