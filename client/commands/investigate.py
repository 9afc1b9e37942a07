"""Verbs for investigators and their tools: ``lookup``, ``scan``, ``export``.

``lookup`` and ``scan`` exit 0 when something is listed and 1 when nothing
is; on stale data they still answer (and flag it) unless ``--require-fresh``,
which gives no answer at all: a message naming what is stale, and exit 5.
"""

from __future__ import annotations

import csv
import json
import os
import sys
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

import click

from client import exports, matching
from client.commands.common import (
    emit,
    fail,
    home_option,
    json_option,
    open_store,
    reports_errors,
    settings_from,
)
from client.commands.progress import Progress, progress
from client.errors import EXIT_NO_MATCH, EXIT_OK, EXIT_STALE
from client.protocol.documents import Manifest
from client.protocol.errors import EntryInputError, InputError
from client.protocol.usertext import read_user_text
from client.status import statuses
from client.store import Store

fresh_option = click.option(
    "--require-fresh",
    is_flag=True,
    help="If any held set is stale, answer nothing: name what is stale and exit 5.",
)


def _stale_sets(store: Store, require_fresh: bool) -> set[str]:
    """The stale held sets; with --require-fresh, any of them ends the command with exit 5.

    A stale set can answer neither "listed" nor "not listed": its newer
    version might say otherwise, so with --require-fresh nothing is printed.
    """
    stale = [s for s in statuses(store, datetime.now(UTC)) if s.stale]
    if require_fresh and stale:
        named = "; ".join(f"{s.name} ({', '.join(s.stale_reasons)})" for s in stale)
        fail(EXIT_STALE, f"stale, so no answer (--require-fresh): {named}")
    return {s.name for s in stale}


def _read_queries(hashes: Sequence[str], source: BinaryIO | None) -> matching.Queries:
    """The hashes given as arguments, then those of --file: both are looked up."""
    if source is None and not hashes:
        raise InputError("give hashes as arguments, or --file FILE (- for stdin)")
    queries = matching.parse_queries(hashes)
    if source is not None:
        name = str(getattr(source, "name", "<stdin>"))
        name = "stdin" if name == "<stdin>" else name
        text = read_user_text(source)
        if text.problems:
            raise EntryInputError(text.problems, name)
        queries.extend(matching.parse_query_text("".join(text.lines), name))
    return queries


@click.command()
@click.argument("hashes", nargs=-1, metavar="HASH...")
@click.option(
    "--file",
    "source",
    type=click.File("rb"),
    help="Read hashes one per line from FILE (- for stdin).",
)
@fresh_option
@home_option
@json_option
@reports_errors
def lookup(
    hashes: tuple[str, ...],
    source: BinaryIO | None,
    require_fresh: bool,
    home: Path | None,
    as_json: bool,
) -> None:
    """Report which hashes (alg:hex, or bare hex in any case) the held sets list."""
    queries = _read_queries(hashes, source)
    with open_store(settings_from(None, None, home)) as store:
        stale = _stale_sets(store, require_fresh)
        hits = matching.lookup(store, queries, stale)
    if as_json or not sys.stdout.isatty():
        for hit in hits:
            emit(as_json, hit.to_json(), f"{hit.query}: {_where(hit)}")
    else:
        _print_for_people(queries.texts, hits)
    sys.exit(EXIT_OK if hits else EXIT_NO_MATCH)


def _where(hit: matching.Hit) -> str:
    label = "" if hit.label is None else f" label {hit.label}"
    flag = " (STALE)" if hit.stale else ""
    return f"{hit.alg}:{hit.hash} in {hit.set} version {hit.version}{label}{flag}"


def _print_for_people(asked: Sequence[str], hits: Sequence[matching.Hit]) -> None:
    """On a terminal: each query once, with where it is listed, or "not listed"."""
    by_query: dict[str, list[matching.Hit]] = {}
    for hit in hits:
        by_query.setdefault(hit.query, []).append(hit)
    for query in dict.fromkeys(asked):
        places = [
            f"{h.alg} in {h.set} version {h.version}"
            + ("" if h.label is None else f" label {h.label}")
            + (" (STALE)" if h.stale else "")
            for h in by_query.get(query, [])
        ]
        click.echo(f"{query}: {'; '.join(dict.fromkeys(places)) or 'not listed'}")


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--follow-symlinks", is_flag=True, help="Follow symbolic links.")
@click.option(
    "--format",
    "output",
    type=click.Choice(["json", "csv"]),
    default="json",
    show_default=True,
    help="One JSON object per listed file, or CSV.",
)
@fresh_option
@home_option
@reports_errors
def scan(
    paths: tuple[Path, ...],
    follow_symlinks: bool,
    output: str,
    require_fresh: bool,
    home: Path | None,
) -> None:
    """Hash the files under PATH... and report those the held sets list."""
    for path in paths:
        if not os.path.lexists(path):
            raise InputError(f"{path}: no such file or directory")
    with open_store(settings_from(None, None, home)) as store:
        algorithms = [a for a in matching.FILE_ALGORITHMS if store.holds_algorithm(a)]
        stale = _stale_sets(store, require_fresh)
        writer = csv.writer(sys.stdout, lineterminator="\n") if output == "csv" else None
        if writer is not None:
            writer.writerow(_CSV_COLUMNS)
        found = False
        with progress("scanning") as shown:
            for hit in _scan_hits(store, paths, algorithms, follow_symlinks, stale, shown):
                found = True
                if writer is None:
                    click.echo(json.dumps(hit, sort_keys=True))
                else:
                    writer.writerow(_csv_row(hit))
    sys.exit(EXIT_OK if found else EXIT_NO_MATCH)


_CSV_COLUMNS = ("path", "alg", "hash", "set", "version", "label", "stale")


def _csv_row(hit: dict[str, object]) -> list[object]:
    """A scan hit as a CSV row: no label is empty, staleness is true or false."""
    label = hit["label"] or ""
    return [*(hit[c] for c in _CSV_COLUMNS[:5]), label, "true" if hit["stale"] else "false"]


def _scan_hits(
    store: Store,
    paths: Sequence[Path],
    algorithms: Sequence[str],
    follow_symlinks: bool,
    stale: set[str],
    shown: Progress,
) -> Iterator[dict[str, object]]:
    def warn(message: str) -> None:
        click.echo(f"hashex: warning: {message}", err=True)

    if not algorithms:
        return
    files = matching.walk(paths, follow_symlinks=follow_symlinks, warn=warn)
    batch: list[matching.FileHashes] = []
    for hashed, result in enumerate(matching.hash_files(files, algorithms), start=1):
        if hashed % 100 == 0:
            shown.update(f"scanning: {hashed} files hashed")
        if result.error is not None:
            warn(f"{result.path}: skipped ({result.error})")
            continue
        batch.append(result)
        if len(batch) >= 1000:
            yield from _match_batch(store, batch, stale)
            batch = []
    yield from _match_batch(store, batch, stale)


def _match_batch(
    store: Store, batch: Sequence[matching.FileHashes], stale: set[str]
) -> Iterator[dict[str, object]]:
    by_identity: dict[str, list[str]] = {}
    for result in batch:
        for alg, digest in result.digests.items():
            by_identity.setdefault(f"{alg}:{digest}", []).append(result.path)
    for match in store.lookup(list(by_identity)):
        alg, _, digest = match.identity.partition(":")
        for path in by_identity[match.identity]:
            yield {
                "path": path,
                "alg": alg,
                "hash": digest,
                "set": match.set_name,
                "version": match.version,
                "label": match.label,
                "stale": match.set_name in stale,
            }


@click.command()
@click.argument("name", metavar="AGENCY/SET")
@click.option(
    "--format",
    "output",
    type=click.Choice(exports.FORMATS),
    default="lines",
    show_default=True,
    help="lines, md5sum (hfind), csv, or vics (Griffeye).",
)
@click.option(
    "--alg",
    type=click.Choice(["md5", "sha1", "sha256", "sha512", "pdq"]),
    default="md5",
    show_default=True,
    help="The algorithm of an md5sum export.",
)
@home_option
@reports_errors
def export(name: str, output: str, alg: str, home: Path | None) -> None:
    """Write a held set to stdout in a format forensic tools load."""
    with open_store(settings_from(None, None, home)) as store:
        held = {s.name: s for s in store.local_sets()}.get(name)
        if held is None or held.manifest is None:
            raise InputError(f"{name} is not held here: run hashex sync {name} first")
        manifest = Manifest.parse(held.manifest)
        if output in ("md5sum", "vics"):
            _require_algorithms(
                store, name, output, ("md5", "sha1") if output == "vics" else (alg,)
            )
        content = store.iter_content(name)
        if output == "lines":
            chunks = exports.export_lines(content)
        elif output == "md5sum":
            chunks = exports.export_md5sum(content, name, alg)
        elif output == "csv":
            chunks = exports.export_csv(content, name, held.version)
        else:
            chunks = exports.export_vics(content, name, held.version, manifest.issued)
        out = sys.stdout.buffer
        for chunk in chunks:
            out.write(chunk)
        out.flush()


def _require_algorithms(store: Store, name: str, output: str, wanted: Sequence[str]) -> None:
    """An export that would print nothing is an error that says what the set holds."""
    held = store.algorithms_of(name)
    if not held.intersection(wanted):
        holds = ", ".join(sorted(held)) or "no entries at all"
        fix = "" if output == "vics" or not held else f" (--alg {sorted(held)[0]} exports those)"
        fail(
            EXIT_NO_MATCH,
            f"{name} holds no {' or '.join(wanted)} entries, so a {output} export would be "
            f"empty; it holds: {holds}{fix}",
        )
