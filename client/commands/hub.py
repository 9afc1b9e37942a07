"""Verbs that talk to the hub: ``trust add``, ``set``, ``sync``, ``publish``."""

from __future__ import annotations

import os
import random
import re
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import click

from client.commands.common import (
    describe_error,
    emit,
    home_option,
    hub_client,
    hub_options,
    json_option,
    open_store,
    reports_errors,
    settings_from,
)
from client.commands.progress import progress
from client.errors import EXIT_HUB, EXIT_VERIFICATION, exit_code, exit_code_for
from client.limits import Limits
from client.pins import describe, read_pin
from client.protocol.errors import HashexError, InputError
from client.protocol.keys import read_private_key
from client.protocol.names import check_set_name
from client.publish import Change
from client.publish import publish as publish_version
from client.settings import ClientSettings
from client.store import Store
from client.sync import SetResult, Syncer
from client.transport import HubClient


@click.group()
def trust() -> None:
    """Pin the agencies whose signatures you trust."""


@trust.command("add")
@click.argument("agency")
@click.argument("source", metavar="FILE")
@home_option
@json_option
@reports_errors
def trust_add(agency: str, source: str, home: Path | None, as_json: bool) -> None:
    """Pin AGENCY with its keyset 1 file, a root public key PEM, or a root key id."""
    settings = settings_from(None, None, home)
    pin, keyset = read_pin(agency, source)
    with open_store(settings) as store:
        store.add_pin(pin, keyset)
    emit(as_json, {"agency": agency, "pin": pin.kind}, f"pinned {agency}: {describe(pin)}")


@trust.command("list")
@home_option
@json_option
@reports_errors
def trust_list(home: Path | None, as_json: bool) -> None:
    """The pinned agencies and what each is pinned by."""
    with open_store(settings_from(None, None, home)) as store:
        pins = store.pins()
    for pin in pins:
        emit(as_json, {"agency": pin.agency, "pin": pin.kind}, f"{pin.agency}: {describe(pin)}")
    if not pins and not as_json:
        click.echo("no agency is pinned: hashex trust add AGENCY FILE")


@trust.command("remove")
@click.argument("agency")
@home_option
@json_option
@reports_errors
def trust_remove(agency: str, home: Path | None, as_json: bool) -> None:
    """Unpin AGENCY: its keysets and every set of it held here are dropped."""
    with open_store(settings_from(None, None, home)) as store:
        dropped = store.remove_pin(agency)
    held = f"; dropped its sets {', '.join(dropped)}" if dropped else "; no set of it was held"
    emit(
        as_json,
        {"agency": agency, "dropped_sets": dropped},
        f"unpinned {agency}: nothing it signed is trusted here any more{held}",
    )


@click.group("set")
def set_group() -> None:
    """Create sets and choose who may read them."""


def _set_path(name: str) -> str:
    try:
        agency, set_slug = check_set_name(name)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    return f"/v1/sets/{agency}/{set_slug}"


def _hub(server: str | None, token: str | None, home: Path | None) -> HubClient:
    return hub_client(settings_from(server, token, home))


@set_group.command("create")
@click.argument("name", metavar="AGENCY/SET")
@click.option("--title", default="", help="A title for people.")
@hub_options
@json_option
@reports_errors
def set_create(
    name: str, title: str, server: str | None, token: str | None, home: Path | None, as_json: bool
) -> None:
    """Create AGENCY/SET on the hub (an agency-admin token of AGENCY)."""
    _set_path(name)
    with _hub(server, token, home) as hub:
        body = hub.post_json("/v1/sets", {"name": name, "title": title})
    emit(as_json, body, f"created {name}")


def _change_readers(name: str, reader: str, add: bool, hub: HubClient) -> list[str]:
    path = _set_path(name)
    body, headers = hub.get_json(path)
    readers = list(body.get("grants") or []) if isinstance(body, dict) else []
    if add and reader not in readers:
        readers.append(reader)
    elif not add:
        if reader not in readers:
            raise InputError(f"{reader} is not a reader of {name}")
        readers.remove(reader)
    # If-Match: a concurrent change by another admin makes this fail (412)
    # instead of being silently overwritten.
    etag = headers.get("ETag")
    answer = hub.put_json(
        f"{path}/grants", {"readers": readers}, headers={"If-Match": etag} if etag else None
    )
    result = answer.get("readers") if isinstance(answer, dict) else None
    return list(result) if isinstance(result, list) else readers


@set_group.command("grant")
@click.argument("name", metavar="AGENCY/SET")
@click.argument("reader")
@hub_options
@json_option
@reports_errors
def set_grant(
    name: str, reader: str, server: str | None, token: str | None, home: Path | None, as_json: bool
) -> None:
    """Let READER (an agency slug or group:SLUG) read AGENCY/SET."""
    with _hub(server, token, home) as hub:
        readers = _change_readers(name, reader, True, hub)
    emit(as_json, {"set": name, "readers": readers}, f"{name} readers: {', '.join(readers)}")


@set_group.command("revoke")
@click.argument("name", metavar="AGENCY/SET")
@click.argument("reader")
@hub_options
@json_option
@reports_errors
def set_revoke(
    name: str, reader: str, server: str | None, token: str | None, home: Path | None, as_json: bool
) -> None:
    """Stop READER from reading AGENCY/SET."""
    with _hub(server, token, home) as hub:
        readers = _change_readers(name, reader, False, hub)
    shown = ", ".join(readers) or "(owner only)"
    emit(as_json, {"set": name, "readers": readers}, f"{name} readers: {shown}")


def _describe(result: SetResult) -> str:
    """One set's outcome in words: its version, what was applied, and freshness."""
    if result.error is not None:
        return f"{result.name}: {describe_error(result.error)}"
    if result.version == 0 and not result.stale:
        return f"{result.name}: no versions yet"
    state = "stale: " + "; ".join(result.stale) if result.stale else "fresh"
    applied = f" (applied {', '.join(map(str, result.applied))})" if result.applied else ""
    return f"{result.name}: version {result.version}{applied}, {state}"


def _report(results: Sequence[SetResult], as_json: bool) -> int:
    for result in results:
        if as_json:
            emit(True, result.to_json(), "")
        else:
            click.echo(_describe(result), err=result.error is not None)
    return exit_code_for(r.exit_code for r in results)


def _log_line(results: Sequence[SetResult]) -> str:
    """The one line ``sync --every`` logs per sync: what changed, what is stale, what failed."""
    worth_saying = [_describe(r) for r in results if r.applied or r.stale or r.error is not None]
    unchanged = len(results) - len(worth_saying)
    parts = [*worth_saying, f"{unchanged} unchanged"] if unchanged else worth_saying
    return f"{len(results)} sets: " + "; ".join(parts) if results else "no sets to sync"


@click.command()
@click.argument("names", nargs=-1, metavar="[AGENCY/SET]...")
@click.option(
    "--every",
    "interval",
    metavar="DURATION",
    help="Keep syncing every DURATION (30s, 5m, 5min, 1h; at least 30s), with jitter, "
    "logging one line per sync on stderr; stops only on a verification failure (exit 3).",
)
@hub_options
@json_option
@reports_errors
def sync(
    names: tuple[str, ...],
    interval: str | None,
    server: str | None,
    token: str | None,
    home: Path | None,
    as_json: bool,
) -> None:
    """Pull, verify and apply the newest versions (all readable pinned sets by default)."""
    settings = settings_from(server, token, home)
    if interval is None:
        sys.exit(_report(_sync_once(settings, names), as_json))
    seconds = parse_duration(interval)
    failures = 0
    while True:
        # One line per sync on stderr, whatever happened: a log a person
        # reads, and a tool can follow. --json keeps its objects on stdout.
        try:
            results = _sync_once(settings, names)
            code = exit_code_for(r.exit_code for r in results)
            if as_json:
                _report(results, as_json)
            summary = _log_line(results)
        except HashexError as exc:
            code = exit_code(exc)
            summary = describe_error(exc)
        click.echo(f"{datetime.now(UTC):%Y-%m-%dT%H:%M:%SZ} sync exit {code}: {summary}", err=True)
        if code == EXIT_VERIFICATION:
            # A hub serving what the agency did not sign needs a person.
            sys.exit(code)
        failures = failures + 1 if code == EXIT_HUB else 0
        time.sleep(next_wait(seconds, failures))


_UNITS = {
    **dict.fromkeys(("s", "sec", "secs", "second", "seconds"), 1),
    **dict.fromkeys(("m", "min", "mins", "minute", "minutes"), 60),
    **dict.fromkeys(("h", "hr", "hrs", "hour", "hours"), 3600),
}
DURATION_FORMS = "a number with a unit: 30s, 5m, 5min, 1h"
# Below this a loop polls a national hub for nothing: versions come out
# hours or days apart, and a thousand tools at 1 s would be a load test.
MIN_INTERVAL_SECONDS = 30


def min_interval() -> int:
    """The shortest ``--every``; tests of the loop lower it with HASHEX_TEST_MIN_INTERVAL."""
    return int(os.environ.get("HASHEX_TEST_MIN_INTERVAL", MIN_INTERVAL_SECONDS))


def parse_duration(value: str) -> float:
    """Seconds in ``30s``, ``5m``, ``5min``, ``1h`` (a unit is required), at least the minimum."""
    match = re.fullmatch(r"([0-9]{1,7}) ?([a-z]+)", value.strip().lower())
    if match is None or match[2] not in _UNITS:
        hint = " (seconds? minutes?)" if value.strip().isdigit() else ""
        raise InputError(f"--every {value!r}: expected {DURATION_FORMS}{hint}")
    seconds = int(match[1]) * _UNITS[match[2]]
    if seconds < min_interval():
        raise InputError(
            f"--every {value!r}: the shortest interval is {min_interval()} seconds "
            "(a hub publishes new versions hours or days apart)"
        )
    return float(seconds)


def next_wait(interval: float, failures: int) -> float:
    """The pause before the next sync: the interval, or a backoff after hub failures.

    Jitter of a tenth either way keeps a thousand tools started together from
    polling the hub in step.
    """
    base = interval if failures == 0 else min(interval, 5.0 * 2 ** min(failures, 10))
    return base * random.uniform(0.9, 1.1)  # noqa: S311 - jitter, not a secret


def _sync_once(settings: ClientSettings, names: Sequence[str]) -> list[SetResult]:
    with hub_client(settings) as hub, open_store(settings) as store:
        syncer = Syncer(hub, store, Limits())
        targets = list(names) or syncer.readable_pinned_sets()
        return [_sync_one(syncer, name) for name in targets]


def _sync_one(syncer: Syncer, name: str) -> SetResult:
    with progress(f"syncing {name}"):
        return syncer.sync(name)


@click.command()
@click.argument("name", metavar="AGENCY/SET")
@click.option(
    "--key",
    "keys",
    multiple=True,
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A publish key (private PEM); repeat to reach the threshold.",
)
@click.option(
    "--from",
    "content",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The full new content.",
)
@click.option(
    "--add",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Hashes to add (or relabel).",
)
@click.option(
    "--remove",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Hashes to remove (matched by hash, whatever the label).",
)
@click.option(
    "--alg",
    type=click.Choice(["md5", "sha1", "sha256", "sha512", "pdq"]),
    help="Algorithm of bare hex lines.",
)
@click.option("--label", help="One label for every entry without its own.")
@click.option(
    "--expires",
    "expires_days",
    type=click.IntRange(min=1, max=3650),
    default=30,
    show_default=True,
    help="Days until the new version expires.",
)
@click.option(
    "--allow-empty",
    is_flag=True,
    help="Publish even if the new content is empty (withdraws every entry).",
)
@click.option(
    "--refresh",
    is_flag=True,
    help="Publish a new version even if the content did not change, to renew its expiry.",
)
@click.option("--dry-run", is_flag=True, help="Build and sign, but do not upload.")
@hub_options
@json_option
@reports_errors
def publish(
    name: str,
    keys: tuple[Path, ...],
    content: Path | None,
    add: Path | None,
    remove: Path | None,
    alg: str | None,
    label: str | None,
    expires_days: int,
    allow_empty: bool,
    refresh: bool,
    dry_run: bool,
    server: str | None,
    token: str | None,
    home: Path | None,
    as_json: bool,
) -> None:
    """Sign and publish the next version of AGENCY/SET.

    Content equal to the latest version publishes nothing and says so;
    --refresh publishes it anyway, with a new expiry (no file needed).
    """
    if content is not None and (add is not None or remove is not None):
        raise InputError("give either --from FILE, or --add FILE and/or --remove FILE, not both")
    if content is None and add is None and remove is None and not refresh:
        raise InputError(
            "give --from FILE, or --add FILE and/or --remove FILE (or --refresh alone to "
            "renew the latest content's expiry)"
        )
    agency = _set_path(name).split("/")[3]
    settings = settings_from(server, token, home)
    private_keys = [read_private_key(path) for path in keys]
    change = Change(
        content=content,
        add=add,
        remove=remove,
        alg=alg,
        label=label,
        allow_empty=allow_empty,
        refresh=refresh,
    )
    with hub_client(settings) as hub, open_store(settings) as store:
        _require_pin(store, agency)
        with progress(f"publishing {name}: reading, verifying, signing, uploading"):
            outcome = publish_version(
                Syncer(hub, store, Limits()),
                name,
                private_keys,
                change,
                expires_days=expires_days,
                dry_run=dry_run,
            )
    if not outcome.changed:
        emit(
            as_json,
            outcome.to_json(),
            f"nothing to publish: {name} version {outcome.version} already holds this content "
            f"({outcome.count} entries); --refresh publishes it again with a new expiry",
        )
        return
    verb = "would publish" if dry_run else "published"
    emit(
        as_json,
        outcome.to_json(),
        f"{verb} {name} version {outcome.version}: +{outcome.adds} -{outcome.removes}, "
        f"{outcome.count} entries",
    )


def _require_pin(store: Store, agency: str) -> None:
    if store.pin(agency) is None:
        raise InputError(
            f"agency {agency} is not pinned: publish verifies against your own pinned keyset "
            f"first (hashex trust add {agency} KEYSET-FILE)"
        )
