"""Verbs that read only the local store: ``status`` and ``verify``."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path

import click

from client.commands.common import (
    emit,
    home_option,
    json_option,
    open_store,
    reports_errors,
    settings_from,
)
from client.errors import EXIT_OK, EXIT_STALE, EXIT_VERIFICATION
from client.protocol.documents import Manifest, verify_manifest_any
from client.protocol.entries import content_digest
from client.protocol.errors import VerificationError
from client.status import held_keysets, statuses
from client.store import LocalSet, Store


@click.command()
@home_option
@json_option
@reports_errors
def status(home: Path | None, as_json: bool) -> None:
    """Local sets, their versions and freshness (exit 5 if any is stale)."""
    with open_store(settings_from(None, None, home)) as store:
        rows = [held.to_json() for held in statuses(store, datetime.now(UTC))]
    for row in rows:
        freshness = "stale: " + "; ".join(row["stale_reasons"]) if row["stale"] else "fresh"
        emit(
            as_json,
            row,
            f"{row['set']}: version {row['version']}, {row['count']} entries, "
            f"expires {row['expires']}, {freshness}",
        )
    if not rows and not as_json:
        click.echo("no sets held yet: pin an agency (hashex trust add) and run hashex sync")
    sys.exit(EXIT_STALE if any(r["stale"] for r in rows) else EXIT_OK)


@click.command()
@home_option
@json_option
@reports_errors
def verify(home: Path | None, as_json: bool) -> None:
    """Re-check every local set: its manifest's signatures and its whole content digest."""
    failed = False
    with open_store(settings_from(None, None, home)) as store:
        for held in store.local_sets():
            problem = _recheck(store, held)
            failed = failed or problem is not None
            emit(
                as_json,
                {
                    "set": held.name,
                    "version": held.version,
                    "ok": problem is None,
                    "problem": problem,
                },
                f"{held.name}: version {held.version} " + ("ok" if problem is None else problem),
            )
    sys.exit(EXIT_VERIFICATION if failed else EXIT_OK)


def _recheck(store: Store, held: LocalSet) -> str | None:
    """None if the held set still proves itself, else what is wrong."""
    data = held.manifest or b""
    try:
        manifest = Manifest.parse(data)
        keysets = held_keysets(store, manifest.agency)
        signatures = store.manifest_signatures(held.name)
        verify_manifest_any(data, signatures, keysets.signing)
        digest, count = content_digest(store.iter_content(held.name))
    except VerificationError as exc:
        return f"FAILED: {exc}"
    if (digest, count) != (manifest.content_digest, manifest.count):
        return (
            f"FAILED: content hashes to sha256:{digest} with {count} entries, the manifest "
            f"says sha256:{manifest.content_digest} with {manifest.count}"
        )
    return None
