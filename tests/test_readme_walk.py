"""README.md's walk-through, "From two agencies to a verified copy", runs as written.

Every shell block of that section is taken from README.md and run by bash in
one script, in a fresh directory with a fresh ``HOME``: the only changes are
the examples the README itself calls examples (the hub's port and the
SQLite path). The hash files the commands name are made first, from
synthetic random hashes. The script must exit 0 and print what the README's
comments say it prints; a README command that no longer runs fails here.
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
from pathlib import Path

from tests.environment import BIN, process_env
from tests.hubserver import free_port
from tests.synthetic import random_lines, wire

README = Path(__file__).resolve().parents[1] / "README.md"
SECTION = "## From two agencies to a verified copy"
SCRIPT_SECONDS = 240


def walkthrough_blocks() -> list[str]:
    """The fenced blocks of the walk-through section, in order."""
    text = README.read_text(encoding="utf-8")
    assert SECTION in text, f"README.md has no {SECTION!r} section"
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"^```\n(.*?)^```", section, re.MULTILINE | re.DOTALL)
    assert len(blocks) >= 6, blocks
    return blocks


def test_the_walkthrough_runs_as_written(tmp_path: Path) -> None:
    rng = random.Random(6_060_131)
    listed = random_lines(rng, 50, "sha256")
    (tmp_path / "hashes.txt").write_bytes(wire(line.split(b" ")[0] for line in listed))
    (tmp_path / "new.txt").write_bytes(wire(random_lines(rng, 5, "md5")))
    (tmp_path / "withdrawn.txt").write_bytes(wire(line.split(b" ")[0] for line in listed[:3]))
    port = free_port()
    script = "\n".join(walkthrough_blocks())
    script = script.replace("127.0.0.1:8080", f"127.0.0.1:{port}")
    script = script.replace("sqlite:////srv/hashex/hub.db", f"sqlite:///{tmp_path}/srv/hub.db")
    prologue = (
        "set -euo pipefail\n"
        # The hub the script starts in the background is stopped when it ends.
        "trap 'kill $(jobs -p) 2>/dev/null || true' EXIT\n"
        # The server needs a moment to listen; the README's reader types slower.
        'wait_for_hub() { for _ in $(seq 100); do curl -sf "$1/v1/health" >/dev/null && return;'
        " sleep 0.1; done; return 1; }\n"
    )
    script = script.replace(
        "export HASHEX_SERVER=http://127.0.0.1",
        "wait_for_hub http://127.0.0.1:" + str(port) + "\nexport HASHEX_SERVER=http://127.0.0.1",
        1,
    )
    env = process_env(HOME=str(tmp_path / "home"), PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}")
    process = subprocess.Popen(
        ["bash", "-c", prologue + script],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=SCRIPT_SECONDS)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 0, f"{stdout}\n{stderr}"
    lines = stdout.splitlines()
    # What the README's comments promise.
    assert "police-nl/known: version 2 (applied 2), fresh" in lines, stdout
    assert any(
        re.fullmatch(r"police-nl/known: version 2, 52 entries, expires \S+, fresh", line)
        for line in lines
    ), stdout
    assert "police-nl/known: version 2 ok" in lines, stdout
    assert "set-exists" in stdout, stdout
