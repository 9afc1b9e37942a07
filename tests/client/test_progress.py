"""Long work shows progress on a terminal and nothing in a pipe.

``publish`` of a large set, ``sync`` of it and ``scan`` of a folder run on a
real pseudo-terminal against a real hub: each shows its live line on the
terminal; the same commands in a pipe write nothing but their result.
"""

from __future__ import annotations

import random
import subprocess
from pathlib import Path

from tests.client.realhub import RealHub, register
from tests.client.simhub import Consumer
from tests.environment import BIN, process_env
from tests.synthetic import random_lines, wire
from tests.terminal import on_a_terminal

LINES = 200_000


def _piped(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "hashex"), *map(str, args)],
        env=process_env(),
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=120,
        check=False,
    )


def test_publish_sync_and_scan_show_progress_only_on_a_terminal(
    hub: RealHub, tmp_path: Path
) -> None:
    rng = random.Random(6_060_013)
    owner = register(hub.database_url, tmp_path, "progressing")
    admin = Consumer(tmp_path / "admin", hub.url, owner.tokens["agency-admin"])
    admin.pin(owner.slug, owner.keyset_file)
    name = f"{owner.slug}/big"
    assert admin.run("set", "create", name).exit_code == 0
    content = tmp_path / "big.txt"
    content.write_bytes(wire(random_lines(rng, LINES, "md5")))
    hub_args = ("--server", hub.url, "--token", owner.tokens["agency-admin"])

    code, shown = on_a_terminal(
        "publish", name, "--key", owner.keys[0], "--from", content, *hub_args, "--home", admin.home
    )
    assert code == 0, shown
    assert f"publishing {name}" in shown
    assert f"published {name} version 1: +{LINES} -0" in shown

    reader = tmp_path / "reader"
    Consumer(reader, hub.url, owner.tokens["reader"]).pin(owner.slug, owner.keyset_file)
    code, shown = on_a_terminal(
        "sync", name, "--server", hub.url, "--token", owner.tokens["reader"], "--home", reader
    )
    assert code == 0, shown
    assert f"syncing {name}" in shown

    evidence = tmp_path / "evidence"
    evidence.mkdir()
    for n in range(300):
        (evidence / f"file-{n}.bin").write_bytes(rng.randbytes(64))
    code, shown = on_a_terminal("scan", evidence, "--home", reader)
    assert code == 1, shown
    assert "scanning" in shown

    # In a pipe: the results only, no live line, no escape codes.
    (tmp_path / "more.txt").write_bytes(wire(random_lines(rng, 10, "md5")))
    piped = _piped(
        "publish",
        name,
        "--key",
        owner.keys[0],
        "--add",
        tmp_path / "more.txt",
        *hub_args,
        "--home",
        admin.home,
    )
    assert piped.returncode == 0, piped.stderr
    assert piped.stderr == ""
    synced = _piped(
        "sync", name, "--server", hub.url, "--token", owner.tokens["reader"], "--home", reader
    )
    assert (synced.returncode, synced.stderr) == (0, "")
    scanned = _piped("scan", evidence, "--home", reader)
    assert (scanned.returncode, scanned.stdout, scanned.stderr) == (1, "", "")
