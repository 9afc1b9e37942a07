"""A hostile hub: every attack refused with its exact error and exit code, the store untouched.

Each test builds an honest hub (``tests.client.simhub``) with real keys, lets
a consumer sync to version 2, then makes the hub serve one modified answer
and syncs again, twice: through the Python API (``Syncer.sync``, whose
``SetResult`` carries the typed error) and through the ``hashex sync`` verb
(whose exit code is the contract).  After each, everything the store holds --
every set's version, manifest bytes, signatures and entries, every keyset,
and the whole database dumped as SQL -- must equal what it held before.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from client.cli import main
from client.commands import hub as hub_commands
from client.errors import HubRefusedError, HubUnreachableError, ResponseError, RollbackError
from client.limits import Limits
from client.pins import read_pin
from client.protocol.documents import Keyset, sha256_hex, sign_document
from client.protocol.errors import (
    BadSignatureError,
    ChainError,
    DeltaApplyError,
    DigestMismatchError,
    FormatError,
    ThresholdError,
    UnknownKeyError,
    VerificationError,
)
from client.protocol.keys import Signature, generate_private_key, public_key_to_pem, sign
from client.store import Store
from client.sync import SetResult, Syncer
from client.transport import HubClient
from tests.client.simhub import (
    HUB_URL,
    LIMITS,
    TOKEN,
    SimAgency,
    SimHub,
    SimSet,
    SimVersion,
    Snapshot,
    json_response,
    serve_on_socket,
    set_rows,
    snapshot,
    socket_client,
    text_response,
)
from tests.synthetic import now, random_line, random_lines, wire

NAME = "alpha/list"
QUORUM = "gamma/list"
AGENCIES = ("alpha", "beta", "gamma")
EXIT_VERIFICATION, EXIT_HUB, EXIT_STALE = 3, 4, 5
# Every HASHEX_* variable of the test's own environment, cleared for the CLI.
CLEAN_ENV: dict[str, str | None] = {name: None for name in os.environ if name.startswith("HASHEX_")}


@dataclass
class World:
    """An honest hub, and a consumer already synced to version 2 of both sets."""

    hub: SimHub
    home: Path
    tmp: Path
    rng: random.Random
    alpha: SimAgency
    beta: SimAgency
    gamma: SimAgency
    list: SimSet
    quorum: SimSet

    def new_home(self, name: str) -> Path:
        """A consumer that pinned every agency but holds no set."""
        home = self.tmp / name
        pin_all(self, home)
        return home

    def sync(
        self,
        name: str = NAME,
        *,
        home: Path | None = None,
        limits: Limits = LIMITS,
        hub: HubClient | None = None,
        now_offset: timedelta | None = None,
    ) -> SetResult:
        """Sync ``name`` through the Python API."""
        store = Store.open(home or self.home)
        client = hub or self.hub.client(limits)
        try:
            moment = None if now_offset is None else now() + now_offset
            return Syncer(client, store, limits, now=moment).sync(name)
        finally:
            client.close()
            store.close()

    def snapshot(self, home: Path | None = None) -> Snapshot:
        """Everything the consumer's store holds."""
        return snapshot(home or self.home, (NAME, QUORUM), AGENCIES)

    def next_lines(self, simset: SimSet | None = None) -> list[bytes]:
        """A plausible next content: two removed, three added, one relabelled."""
        lines = list((simset or self.list).lines)
        relabelled = lines[0].split(b" ")[0] + f" r{self.rng.randrange(10**9)}".encode()
        kept = [relabelled, *lines[3:]]
        return kept + [random_line(self.rng) for _ in range(3)]


def pin_all(world: World, home: Path) -> None:
    """Pin every agency with its keyset 1 file, as ``hashex trust add`` does."""
    store = Store.open(home)
    try:
        for agency in (world.alpha, world.beta, world.gamma):
            path = agency.keyset_file(world.tmp / f"{agency.slug}-{home.name}.json", 1)
            store.add_pin(*read_pin(agency.slug, str(path)))
    finally:
        store.close()


@pytest.fixture
def world(tmp_path: Path) -> World:
    rng = random.Random(20260501)
    hub = SimHub()
    alpha = hub.add_agency("alpha")
    beta = hub.add_agency("beta")
    gamma = hub.add_agency("gamma", keys=2, publish_threshold=2)
    state = World(
        hub,
        tmp_path / "home",
        tmp_path,
        rng,
        alpha,
        beta,
        gamma,
        hub.add_set(NAME),
        hub.add_set(QUORUM),
    )
    pin_all(state, state.home)
    for simset in (state.list, state.quorum):
        simset.publish(random_lines(rng, 40))
        first = state.sync(simset.name)
        assert (first.error, first.version, first.bootstrapped) == (None, 1, True)
        simset.publish(state.next_lines(simset))
        second = state.sync(simset.name)
        assert (second.error, second.applied, second.exit_code) == (None, [2], 0)
    assert state.snapshot().sets[NAME][3] == state.list.lines
    return state


def cli_sync(
    world: World,
    monkeypatch: pytest.MonkeyPatch,
    name: str = NAME,
    *,
    home: Path | None = None,
    hub: HubClient | None = None,
    limits: Limits = LIMITS,
) -> tuple[int, dict[str, object]]:
    """Run ``hashex sync NAME --json`` against the simulated hub: exit code and report.

    The verb builds its hub client and limits itself; both are swapped for
    the simulated hub's and ``limits``.
    """
    monkeypatch.setattr(
        hub_commands, "hub_client", lambda _settings: hub or world.hub.client(limits)
    )
    monkeypatch.setattr(hub_commands, "Limits", lambda: limits)
    args = ["sync", name, "--json", "--server", HUB_URL, "--token", TOKEN]
    args += ["--home", str(home or world.home)]
    result = CliRunner(env=CLEAN_ENV).invoke(main, args, catch_exceptions=False)
    return result.exit_code, json.loads(result.stdout)


def refused(
    world: World,
    monkeypatch: pytest.MonkeyPatch,
    error: type[Exception],
    code: int,
    name: str = NAME,
    *,
    home: Path | None = None,
    limits: Limits = LIMITS,
) -> SetResult:
    """Sync must fail with exactly ``error`` and ``code``, twice, and change nothing."""
    before = world.snapshot(home)
    result = world.sync(name, home=home, limits=limits)
    assert type(result.error) is error, repr(result.error)
    assert result.exit_code == code
    assert world.snapshot(home) == before
    exit_code, report = cli_sync(world, monkeypatch, name, home=home, limits=limits)
    assert exit_code == code
    assert report["exit"] == code
    assert report["error"] == str(result.error)
    assert world.snapshot(home) == before
    return result


# -- manifests that do not link ----------------------------------------------------------


def test_a_manifest_of_another_set(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    honest = world.list.build(world.next_lines())
    world.list.versions.append(honest.resigned(world.alpha.keys, set_name="alpha/other"))
    result = refused(world, monkeypatch, ChainError, EXIT_VERIFICATION)
    assert "alpha/other" in str(result.error)


def test_a_set_left_out_of_the_listing_that_the_hub_still_shows(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    world.list.publish(world.next_lines())
    listing = {"sets": []}
    world.hub.routes["/v1/sets"] = lambda _r: json_response(listing)
    result = refused(world, monkeypatch, ResponseError, EXIT_VERIFICATION)
    assert "leaves it out of its listing" in str(result.error)


@pytest.mark.parametrize(
    "item",
    [
        {"name": NAME, "latest_version": "3", "keyset": 1},
        {"name": NAME, "latest_version": 3},
        {"name": NAME, "latest_version": 3, "keyset": True},
        {"name": "alpha/../list", "latest_version": 3, "keyset": 1},
        "alpha/list",
    ],
    ids=["version-as-text", "no-keyset", "keyset-as-bool", "bad-name", "not-an-object"],
)
def test_a_malformed_listing(world: World, monkeypatch: pytest.MonkeyPatch, item: Any) -> None:
    world.list.publish(world.next_lines())
    world.hub.routes["/v1/sets"] = lambda _r: json_response({"sets": [item]})
    refused(world, monkeypatch, ResponseError, EXIT_VERIFICATION)


def test_a_304_to_a_poll_that_named_no_etag(
    world: World, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # A new consumer remembers no listing: a 304 answers nothing it asked.
    home = tmp_path / "new-consumer"
    pin_all(world, home)
    world.hub.routes["/v1/sets"] = lambda _r: httpx.Response(304)
    result = refused(world, monkeypatch, ResponseError, EXIT_VERIFICATION, home=home)
    assert "304" in str(result.error)


def test_an_old_version_offered_as_the_next(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    v1, v2 = world.list.versions
    v3 = world.list.publish(world.next_lines())
    listing = {"versions": [v.document.to_json() for v in (v2, v1, v3)]}
    world.hub.routes["/v1/sets/alpha/list/versions"] = lambda _r: json_response(listing)
    refused(world, monkeypatch, ChainError, EXIT_VERIFICATION)


def test_an_old_manifest_under_the_next_number(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    v1, v2 = world.list.versions
    world.list.publish(world.next_lines())
    relabelled = v1.document.to_json() | {"version": 3}
    listing = {"versions": [v2.document.to_json(), relabelled]}
    world.hub.routes["/v1/sets/alpha/list/versions"] = lambda _r: json_response(listing)
    refused(world, monkeypatch, FormatError, EXIT_VERIFICATION)


def test_a_skipped_version(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    v3 = world.list.build(world.next_lines())
    v4 = world.list.build([*v3.lines, random_line(world.rng)], after=v3)
    world.list.versions.append(v4)
    world.list.latest = 4
    deltas = world.hub.paths("/delta")
    refused(world, monkeypatch, ChainError, EXIT_VERIFICATION)
    assert world.hub.paths("/delta") == deltas


def test_versions_published_after_the_listing_wait_for_the_next_sync(world: World) -> None:
    # Versions 3 and 4 are genuine, but the listing (read first) says 3: a
    # publish landed between the two requests, as on any busy hub.  The sync
    # stops at what the listing vouches for; the next one takes version 4.
    world.list.publish(world.next_lines())
    world.list.publish(world.next_lines())
    world.list.latest = 3
    first = world.sync()
    assert (first.error, first.version, first.applied) == (None, 3, [3])
    world.list.latest = None
    second = world.sync()
    assert (second.error, second.version, second.applied) == (None, 4, [4])


def test_a_listing_that_never_advances_is_refused_at_once(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The hub answers every ?after= with the same page, whose last version is
    # below the latest it claims: a client that pages by the last version it
    # got asks the same question again and again, piling up the same
    # manifests until its deadline.  The page contradicts the request.
    v1, v2 = world.list.versions
    world.list.publish(world.next_lines())
    listing = {"versions": [v2.document.to_json(), v1.document.to_json()]}
    world.hub.routes["/v1/sets/alpha/list/versions"] = lambda _r: json_response(listing)
    before = world.snapshot()
    asked_before = len(world.hub.paths("/alpha/list/versions"))
    started = time.monotonic()
    result = world.sync(limits=Limits(connect_timeout=2.0, read_timeout=2.0, sync_deadline=3.0))
    assert type(result.error) is ResponseError, repr(result.error)
    assert result.exit_code == EXIT_VERIFICATION
    assert world.snapshot() == before
    listings = world.hub.paths("/alpha/list/versions")[asked_before:]
    assert len(listings) <= 2, (
        f"asked for the same listing {len(listings)} times in "
        f"{time.monotonic() - started:.1f} s before giving up: {result.error}"
    )


def test_an_endless_unsigned_history_is_refused_on_its_first_page(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The hub claims a billion versions and lists a full page of them for
    # every ?after=, each advancing, none signed.  A client that gathers the
    # whole listing before checking a signature keeps every page in memory
    # until its deadline; the first page already proves the hub a liar.
    v2 = world.list.versions[1]
    text = v2.document.data.decode("ascii")
    signatures = [s.to_json() for s in v2.document.signatures]
    world.list.latest = 10**9

    def endless_history(request: httpx.Request) -> httpx.Response:
        after = int(request.url.params["after"])
        limit = int(request.url.params["limit"])
        page = [
            {
                "version": n,
                "manifest": text.replace("\nversion 2\n", f"\nversion {n}\n"),
                "signatures": signatures,
            }
            for n in range(after + 1, after + 1 + limit)
        ]
        return json_response({"versions": page})

    world.hub.routes["/v1/sets/alpha/list/versions"] = endless_history
    before = world.snapshot()
    asked_before = len(world.hub.paths("/alpha/list/versions"))
    result = world.sync(limits=Limits(connect_timeout=2.0, read_timeout=2.0, sync_deadline=3.0))
    assert isinstance(result.error, VerificationError), repr(result.error)
    assert result.exit_code == EXIT_VERIFICATION
    assert world.snapshot() == before
    pages = len(world.hub.paths("/alpha/list/versions")) - asked_before
    assert pages == 1, f"gathered {pages} pages of unsigned manifests: {result.error}"


def test_a_forged_parent_digest_signed_by_the_agency(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    honest = world.list.build(world.next_lines())
    world.list.versions.append(honest.resigned(world.alpha.keys, parent_digest="0" * 64))
    refused(world, monkeypatch, ChainError, EXIT_VERIFICATION)


def test_a_forged_parent_digest_keeping_the_old_signature(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    honest = world.list.build(world.next_lines())
    forged = honest.resigned(world.alpha.keys, parent_digest="0" * 64)
    world.list.versions.append(forged.with_signatures(honest.document.signatures))
    refused(world, monkeypatch, BadSignatureError, EXIT_VERIFICATION)


def test_counts_that_do_not_follow_from_the_parent(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    honest = world.list.build(world.next_lines())
    lying = honest.resigned(world.alpha.keys, count=honest.manifest.count + 1)
    world.list.versions.append(lying)
    refused(world, monkeypatch, ChainError, EXIT_VERIFICATION)


# -- signatures ------------------------------------------------------------------------------


def test_a_manifest_signed_by_another_agencys_key(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    # beta is pinned too: its keys are trusted for beta's sets, never for alpha's.
    honest = world.list.build(world.next_lines())
    world.list.versions.append(honest.resigned(world.beta.keys))
    refused(world, monkeypatch, UnknownKeyError, EXIT_VERIFICATION)


def test_a_manifest_naming_another_agencys_keyset(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    beta = world.beta.keyset
    honest = world.list.build(world.next_lines())
    forged = honest.resigned(world.beta.keys, keyset_digest=beta.digest)
    world.list.versions.append(forged)
    refused(world, monkeypatch, UnknownKeyError, EXIT_VERIFICATION)


def test_a_manifest_signed_by_a_key_never_pinned(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    honest = world.list.build(world.next_lines())
    world.list.versions.append(honest.resigned([generate_private_key()]))
    refused(world, monkeypatch, UnknownKeyError, EXIT_VERIFICATION)


def test_a_stranger_signing_under_the_agencys_key_id(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    honest = world.list.build(world.next_lines())
    stolen_id = honest.document.signatures[0].keyid
    forged = sign(generate_private_key(), honest.document.data)
    world.list.versions.append(honest.with_signatures([Signature(stolen_id, forged.sig)]))
    refused(world, monkeypatch, BadSignatureError, EXIT_VERIFICATION)


def test_too_few_signatures_for_the_threshold(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    first_key = world.gamma.keys[0]
    honest = world.quorum.build(world.next_lines(world.quorum))
    world.quorum.versions.append(honest.resigned([first_key]))
    refused(world, monkeypatch, ThresholdError, EXIT_VERIFICATION, QUORUM)


def test_one_key_counted_twice(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    honest = world.quorum.build(world.next_lines(world.quorum))
    once = sign(world.gamma.keys[0], honest.document.data)
    world.quorum.versions.append(honest.with_signatures([once, once]))
    refused(world, monkeypatch, ThresholdError, EXIT_VERIFICATION, QUORUM)


def test_one_key_counted_twice_with_two_signatures_of_its_own(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Ed25519 signing is deterministic, but a second valid-looking entry under
    # the same key id (a different encoding of a signature) must not count.
    honest = world.quorum.build(world.next_lines(world.quorum))
    once = sign(world.gamma.keys[0], honest.document.data)
    garbage = Signature(once.keyid, bytes(64))
    world.quorum.versions.append(honest.with_signatures([once, garbage]))
    refused(world, monkeypatch, ThresholdError, EXIT_VERIFICATION, QUORUM)


# -- bytes that are not what was signed ------------------------------------------------------


def test_a_flipped_byte_in_a_delta(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    v3 = world.list.build(world.next_lines())
    flipped = bytearray(v3.delta)
    flipped[10] ^= 0x01
    world.list.versions.append(SimVersion(v3.document, bytes(flipped), v3.content))
    refused(world, monkeypatch, DigestMismatchError, EXIT_VERIFICATION)


def test_a_truncated_delta(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    v3 = world.list.build(world.next_lines())
    cut = v3.delta[: v3.delta.rindex(b"\n", 0, -1) + 1]
    world.list.versions.append(SimVersion(v3.document, cut, v3.content))
    refused(world, monkeypatch, DigestMismatchError, EXIT_VERIFICATION)


def test_a_signed_delta_with_a_malformed_line(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The digest matches because the agency signed these very bytes: the
    # lines are still parsed strictly, and refused rather than repaired.
    v3 = world.list.build(world.next_lines())
    upper = b"+sha256:" + random_line(world.rng, "sha256", None)[7:].upper() + b"\n"
    bad = upper + v3.delta
    forged = v3.resigned(
        world.alpha.keys,
        delta=bad,
        delta_digest=sha256_hex(bad),
        adds=v3.manifest.adds + 1,
        count=v3.manifest.count + 1,
    )
    world.list.versions.append(forged)
    refused(world, monkeypatch, ResponseError, EXIT_VERIFICATION)


def test_a_signed_delta_with_other_counts_than_its_manifest(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    v3 = world.list.build(world.next_lines())
    extra = b"+" + random_line(world.rng) + b"\n"
    bad = b"".join(sorted([*v3.delta.splitlines(keepends=True), extra]))
    world.list.versions.append(
        v3.resigned(world.alpha.keys, delta=bad, delta_digest=sha256_hex(bad))
    )
    refused(world, monkeypatch, ChainError, EXIT_VERIFICATION)


def test_a_signed_delta_that_does_not_apply(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    # Well formed and signed, but it removes a line the set does not hold.
    # Its first remove (an md5 line, held) applies; its second does not: the
    # version is rolled back whole.
    held = world.list.lines
    absent = random_line(world.rng, "md5", None)
    assert held[0].startswith(b"md5:")
    new = [*held[1:], absent]
    honest = world.list.build(new)
    bad = b"".join(
        sorted([b"+" + absent + b"\n", b"-" + held[0] + b"\n", b"-" + b"sha1:" + b"0" * 40 + b"\n"])
    )
    forged = honest.resigned(
        world.alpha.keys,
        delta=bad,
        delta_digest=sha256_hex(bad),
        adds=1,
        removes=2,
        count=len(held) - 1,
    )
    world.list.versions.append(forged)
    refused(world, monkeypatch, DeltaApplyError, EXIT_VERIFICATION)


def test_a_wrong_content_digest_on_bootstrap(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    fresh = world.new_home("fresh")
    v2 = world.list.versions[1]
    lines = v2.lines
    world.list.versions[1] = SimVersion(v2.document, v2.delta, wire(lines[:-1]))
    contents = len(world.hub.paths("/2/content"))
    refused(world, monkeypatch, DigestMismatchError, EXIT_VERIFICATION, home=fresh)
    assert set_rows(fresh) == []
    assert len(world.hub.paths("/2/content")) == contents + 2


def test_a_bootstrap_whose_chain_has_a_broken_link(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Version 2 of 3 names a forged parent (and is signed): the new consumer
    # takes only version 3's content, but must still check every link.
    fresh = world.new_home("fresh")
    v2 = world.list.versions[1]
    broken = v2.resigned(world.alpha.keys, parent_digest="f" * 64)
    world.list.versions[1] = broken
    world.list.publish(world.next_lines())
    contents = world.hub.paths("/content")
    refused(world, monkeypatch, ChainError, EXIT_VERIFICATION, home=fresh)
    assert set_rows(fresh) == []
    assert world.hub.paths("/content") == contents


def test_a_bootstrap_content_that_is_not_canonical(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Signed for these bytes, yet unsorted: never stored, never repaired.
    fresh = world.new_home("fresh")
    v1 = world.list.versions[0]
    lines = v1.lines
    unsorted = wire([lines[1], lines[0], *lines[2:]])
    forged = v1.resigned(world.alpha.keys, content=unsorted, content_digest=sha256_hex(unsorted))
    world.list.versions[:] = [forged]
    refused(world, monkeypatch, ResponseError, EXIT_VERIFICATION, home=fresh)
    assert set_rows(fresh) == []


# -- responses beyond their limits, in the wrong form, or never finished -----------------------


def _endless(piece: bytes, served: list[int]) -> Iterator[bytes]:
    for _ in range(10_000_000):
        served[0] += 1
        yield piece


def test_a_json_answer_larger_than_the_limit(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    world.list.publish(world.next_lines())
    served = [0]
    world.hub.routes["/v1/sets/alpha/list/versions"] = lambda _r: httpx.Response(
        200,
        headers={"Content-Type": "application/json"},
        content=_endless(b'{"versions": [' + b" " * 1000, served),
    )
    limits = Limits(connect_timeout=2.0, read_timeout=2.0, max_json_bytes=4096)
    refused(world, monkeypatch, ResponseError, EXIT_VERIFICATION, limits=limits)
    # Reading stopped at the limit (two runs, a few chunks each), not at the end.
    assert served[0] < 20


def test_an_honest_listing_over_a_small_json_limit(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    world.list.publish(world.next_lines())
    keysets = len(json.dumps({"keysets": [k.to_json() for k in world.alpha.keysets]}))
    limits = Limits(connect_timeout=2.0, read_timeout=2.0, max_json_bytes=keysets + 10)
    refused(world, monkeypatch, ResponseError, EXIT_VERIFICATION, limits=limits)
    assert world.hub.paths()[-1] == "/v1/sets/alpha/list/versions"


def test_a_delta_larger_than_its_manifest_allows(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    v3 = world.list.publish(world.next_lines())
    served = [0]
    line = b"+" + random_line(world.rng, "sha512", "cat-a") + b"\n"
    world.hub.routes["/v1/sets/alpha/list/versions/3/delta"] = lambda _r: text_response(
        _endless(line, served)
    )
    manifest = v3.manifest
    allowed = LIMITS.max_delta_bytes(manifest.adds, manifest.removes)
    refused(world, monkeypatch, ResponseError, EXIT_VERIFICATION)
    # Each of the two runs stopped reading at the cap, not at the end.
    assert served[0] <= 2 * (allowed // len(line) + 3)


def test_a_bootstrap_content_larger_than_its_manifest_allows(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    fresh = world.new_home("fresh")
    served = [0]
    line = random_line(world.rng, "sha512", None) + b"\n"
    world.hub.routes["/v1/sets/alpha/list/versions/2/content"] = lambda _r: text_response(
        _endless(line, served)
    )
    allowed = LIMITS.max_content_bytes(world.list.versions[1].manifest.count)
    refused(world, monkeypatch, ResponseError, EXIT_VERIFICATION, home=fresh)
    assert set_rows(fresh) == []
    assert served[0] <= 2 * (allowed // len(line) + 3)


def test_a_hub_that_stops_responding_mid_stream(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    world.list.publish(world.next_lines())
    limits = Limits(connect_timeout=1.0, read_timeout=1.0, sync_deadline=30.0)
    before = world.snapshot()
    with serve_on_socket(world.hub) as sock:
        sock.stall.add("/v1/sets/alpha/list/versions/3/delta")
        started = time.monotonic()
        result = world.sync(hub=socket_client(sock, limits), limits=limits)
        took = time.monotonic() - started
        assert sock.stalled.is_set()
        assert type(result.error) is HubUnreachableError, repr(result.error)
        assert result.exit_code == EXIT_HUB
        assert took < 5.0
        assert world.snapshot() == before
        exit_code, report = cli_sync(world, monkeypatch, hub=socket_client(sock, limits))
    assert (exit_code, report["exit"]) == (EXIT_HUB, EXIT_HUB)
    assert world.snapshot() == before


@pytest.mark.parametrize(
    "path",
    ["/v1/sets/alpha/list/versions/3/delta", "/v1/sets/alpha/list/versions"],
    ids=["delta", "listing"],
)
def test_a_hub_that_drips_is_stopped_by_the_sync_deadline(world: World, path: str) -> None:
    # One byte every 0.1 s: no read ever times out, only the deadline of the
    # whole sync (2 s here) can end it.
    world.list.publish(world.next_lines())
    limits = Limits(connect_timeout=1.0, read_timeout=1.0, sync_deadline=2.0)
    before = world.snapshot()
    with serve_on_socket(world.hub) as sock:
        sock.drip.add(path)
        started = time.monotonic()
        result = world.sync(hub=socket_client(sock, limits), limits=limits)
        took = time.monotonic() - started
    assert type(result.error) is HubUnreachableError, (repr(result.error), f"{took:.1f} s")
    assert result.exit_code == EXIT_HUB
    assert took < 4.0
    assert world.snapshot() == before


def test_a_sync_past_its_deadline_is_a_hub_failure_not_a_forgery(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every answer is honest, just slow (well inside the read timeout); the
    # deadline of the sync passes between two requests.  That is the hub
    # being unavailable (exit 4), not the hub serving something unsigned
    # (exit 3, which tools treat as an alarm and ``sync --every`` stops on).
    world.list.publish(world.next_lines())

    def slow(request: httpx.Request, response: httpx.Response) -> httpx.Response:
        if request.url.path.endswith("/versions"):
            time.sleep(0.6)
        return response

    world.hub.tamper = slow
    limits = Limits(connect_timeout=1.0, read_timeout=1.0, sync_deadline=0.5)
    before = world.snapshot()
    result = world.sync(limits=limits)
    assert type(result.error) is HubUnreachableError, repr(result.error)
    assert result.exit_code == EXIT_HUB
    assert world.snapshot() == before


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/v1/sets/alpha/list/versions/3/delta", "application/octet-stream"),
        ("/v1/sets/alpha/list/versions/3/delta", "text/plain; charset=utf-8"),
        ("/v1/sets/alpha/list/versions", "text/html"),
        ("/v1/sets", "text/plain; charset=us-ascii"),
        ("/v1/agencies/alpha/keysets", "application/problem+json"),
    ],
)
def test_a_200_with_the_wrong_content_type(
    world: World, monkeypatch: pytest.MonkeyPatch, path: str, content_type: str
) -> None:
    world.list.publish(world.next_lines())
    if path.endswith("/keysets"):
        # A new keyset in the listing, so the keysets are asked for.
        world.alpha.rotate(world.alpha.keys)

    def retyped(request: httpx.Request, response: httpx.Response) -> httpx.Response:
        if request.url.path != path:
            return response
        return httpx.Response(200, headers={"Content-Type": content_type}, content=response.read())

    world.hub.tamper = retyped
    refused(world, monkeypatch, ResponseError, EXIT_VERIFICATION)
    assert path in world.hub.paths()


@pytest.mark.parametrize(("status", "slug"), [(401, "unauthorized"), (404, "not-found")])
def test_a_refusing_hub(
    world: World, monkeypatch: pytest.MonkeyPatch, status: int, slug: str
) -> None:
    world.list.publish(world.next_lines())
    world.hub.routes["/v1/sets/alpha/list/versions/3/delta"] = lambda _r: json_response(
        {"type": f"https://hashex.example/problems/{slug}", "title": slug},
        status,
        "application/problem+json",
    )
    result = refused(world, monkeypatch, HubRefusedError, EXIT_HUB)
    assert isinstance(result.error, HubRefusedError)
    assert result.error.status == status


# -- going backwards, and equivocation ---------------------------------------------------------


def test_a_hub_latest_below_the_local_version(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    world.list.latest = 1
    refused(world, monkeypatch, RollbackError, EXIT_VERIFICATION)


def test_an_equal_version_with_other_bytes(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    # Version 2 again, validly signed, but not the bytes verified before.
    v1, v2 = world.list.versions
    other = world.list.build(v2.lines, after=v1, issued=now() - timedelta(minutes=5))
    assert other.document.data != v2.document.data
    world.list.versions[1] = other
    world.list.publish(world.next_lines())
    refused(world, monkeypatch, RollbackError, EXIT_VERIFICATION)


# -- keysets -------------------------------------------------------------------------------------


def test_a_keyset_2_not_signed_by_keyset_1s_roots(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    world.alpha.rotate(signers=[])
    world.list.publish(world.next_lines())
    result = refused(world, monkeypatch, UnknownKeyError, EXIT_VERIFICATION)
    assert "previous root" in str(result.error)
    assert [k.version for k in world.snapshot().keysets["alpha"]] == [1]


def test_a_keyset_2_not_signed_by_its_own_roots(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = list(world.alpha.keys)
    world.alpha.rotate()
    only_old = sign_document("keyset", world.alpha.keysets[-1].data, 2, old)
    world.alpha.keysets[-1] = only_old
    result = refused(world, monkeypatch, UnknownKeyError, EXIT_VERIFICATION)
    assert "previous root" not in str(result.error)


def test_a_rewritten_keyset_1(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    # Keyset 1 again, validly self-signed, but not the one pinned.
    rewritten = Keyset.build(
        "alpha",
        1,
        [world.alpha.keys[0].public_key()],
        1,
        [world.alpha.keys[0].public_key(), generate_private_key().public_key()],
        1,
        world.alpha.keyset.expires,
    )
    world.alpha.keysets[0] = sign_document("keyset", rewritten.raw, 1, world.alpha.keys)
    # A new keyset in the listing, so the consumer asks for keysets again.
    world.alpha.rotate(world.alpha.keys)
    world.hub.routes["/v1/agencies/alpha/keysets"] = lambda _r: json_response(
        {"keysets": [k.to_json() for k in world.alpha.keysets]}
    )
    refused(world, monkeypatch, RollbackError, EXIT_VERIFICATION)


@pytest.mark.parametrize("form", ["key id", "key"])
def test_a_root_key_pin_with_no_keyset_1_offered(
    world: World, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, form: str
) -> None:
    # Pinned by a root key, the consumer needs keyset 1 from the hub to learn
    # the publish keys; a hub that withholds it is refused, not trusted.
    root = world.alpha.keys[0]
    if form == "key id":
        source = sign(root, b"").keyid
    else:
        source = str(tmp_path / "root.pub.pem")
        Path(source).write_bytes(public_key_to_pem(root.public_key()))
    first, second = tmp_path / "first", tmp_path / "second"
    for home in (first, second):
        store = Store.open(home)
        try:
            store.add_pin(*read_pin("alpha", source))
        finally:
            store.close()
    honest = world.sync(home=first)
    assert (honest.error, honest.version) == (None, 2)
    world.hub.routes["/v1/agencies/alpha/keysets"] = lambda _r: json_response({"keysets": []})
    refused(world, monkeypatch, ResponseError, EXIT_VERIFICATION, home=second)
    assert set_rows(second) == []


# -- stale, but kept -----------------------------------------------------------------------------


def test_an_expired_held_manifest_is_stale_and_kept(world: World) -> None:
    before = world.snapshot()
    result = world.sync(now_offset=timedelta(days=31))
    assert result.error is None
    assert result.exit_code == EXIT_STALE
    assert any("expired" in reason for reason in result.stale)
    assert world.snapshot() == before
    fresh = world.sync(now_offset=timedelta(days=29))
    assert (fresh.exit_code, fresh.stale) == (0, [])


def test_an_expired_newest_manifest_is_synced_but_stale(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Version 3 expired a day ago: it is signed and newer than version 2, so
    # it is applied (going back is never an option), and reported stale.
    moment = now()
    v3 = world.list.publish(
        world.next_lines(), issued=moment - timedelta(days=10), expires=moment - timedelta(days=1)
    )
    exit_code, report = cli_sync(world, monkeypatch)
    assert exit_code == EXIT_STALE
    assert report["error"] is None
    assert report["version"] == 3
    assert report["stale"] is True
    held = world.snapshot().sets[NAME]
    assert held[:2] == (3, v3.document.data)
    assert held[3] == v3.lines
    result = world.sync()
    assert (result.error, result.version, result.exit_code) == (None, 3, EXIT_STALE)


def test_a_newest_manifest_under_an_older_keyset_is_withheld_and_stale(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The agency rotates to keyset 2 (new keys); the hub's newest version is
    # still signed under keyset 1, perhaps by a key the rotation revoked.  It
    # verifies as history, but a head must name the newest keyset: it is not
    # applied, the last good list stays, and the set is stale until the
    # agency publishes under keyset 2.
    old_keys, old_keyset = list(world.alpha.keys), world.alpha.keyset
    before = world.snapshot()
    world.alpha.rotate()
    world.list.publish(world.next_lines(), keys=old_keys, keyset=old_keyset)
    result = world.sync()
    assert result.error is None
    assert (result.version, result.exit_code) == (2, EXIT_STALE)
    assert any("not applied" in reason for reason in result.stale)
    held = world.snapshot()
    assert [k.version for k in held.keysets["alpha"]] == [1, 2]
    assert held.sets == before.sets
    exit_code, report = cli_sync(world, monkeypatch)
    assert (exit_code, report["stale"]) == (EXIT_STALE, True)
    v4 = world.list.publish(world.next_lines())
    result = world.sync()
    assert (result.error, result.version, result.exit_code) == (None, 4, 0)
    assert world.snapshot().sets[NAME][3] == v4.lines


def test_a_head_signed_by_a_revoked_key_naming_the_new_keyset_is_refused(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    # After the rotation the old key signs for keyset 1 only: a manifest
    # naming keyset 2 under its signature does not verify as keyset 2's.
    old_keys = list(world.alpha.keys)
    world.alpha.rotate()
    assert world.sync().exit_code == EXIT_STALE
    honest = world.list.build(world.next_lines())
    world.list.versions.append(honest.resigned(old_keys))
    result = refused(world, monkeypatch, ChainError, EXIT_VERIFICATION)
    assert "names keyset 2" in str(result.error)


def test_a_malformed_set_name_in_the_hubs_listing_is_the_hubs_fault(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    # ``hashex sync`` with no names syncs what the hub lists: a name that is
    # not a set name contradicts the protocol (exit 3), it is no usage error
    # of the person who typed ``hashex sync`` (exit 2).
    world.hub.routes["/v1/sets"] = lambda _r: json_response(
        {"sets": [{"name": "alpha/Not A Set"}, {"name": NAME}]}
    )
    monkeypatch.setattr(hub_commands, "hub_client", lambda _settings: world.hub.client())
    args = ["sync", "--json", "--server", HUB_URL, "--token", TOKEN, "--home", str(world.home)]
    result = CliRunner(env=CLEAN_ENV).invoke(main, args, catch_exceptions=False)
    assert result.exit_code == EXIT_VERIFICATION, result.stdout
    assert "alpha/Not A Set" not in set_rows(world.home)


# -- several sets at once: 3 wins over 4 over 5 ---------------------------------------------------


@pytest.mark.parametrize(
    ("alpha", "gamma", "code"),
    [
        ("forged", "missing", 3),
        ("stale", "missing", 4),
        ("stale", "fresh", 5),
        ("fresh", "fresh", 0),
    ],
)
def test_the_exit_code_of_several_sets(
    world: World, monkeypatch: pytest.MonkeyPatch, alpha: str, gamma: str, code: int
) -> None:
    moment = now()
    if alpha == "forged":
        honest = world.list.build(world.next_lines())
        world.list.versions.append(honest.resigned([generate_private_key()]))
    elif alpha == "stale":
        world.list.publish(
            world.next_lines(),
            issued=moment - timedelta(days=2),
            expires=moment - timedelta(days=1),
        )
    if gamma == "missing":
        del world.hub.sets[QUORUM]
    monkeypatch.setattr(hub_commands, "hub_client", lambda _settings: world.hub.client())
    args = ["sync", NAME, QUORUM, "--json", "--server", HUB_URL, "--token", TOKEN]
    result = CliRunner(env=CLEAN_ENV).invoke(
        main, [*args, "--home", str(world.home)], catch_exceptions=False
    )
    assert result.exit_code == code
    reports = [json.loads(line) for line in result.stdout.splitlines()]
    expected = {"forged": 3, "stale": 5, "fresh": 0, "missing": 4}
    assert [(r["set"], r["exit"]) for r in reports] == [
        (NAME, expected[alpha]),
        (QUORUM, expected[gamma]),
    ]


# -- the poll: one request when nothing changed -------------------------------------------------


def _sync_all(world: World) -> list[SetResult]:
    store = Store.open(world.home)
    client = world.hub.client()
    try:
        syncer = Syncer(client, store, LIMITS)
        return [syncer.sync(name) for name in syncer.readable_pinned_sets()]
    finally:
        client.close()
        store.close()


def test_a_no_change_sync_of_every_set_is_one_request_answered_304(world: World) -> None:
    _sync_all(world)  # the listing is remembered from here on
    world.hub.requests.clear()
    results = _sync_all(world)
    assert [(r.name, r.version, r.error) for r in results] == [(NAME, 2, None), (QUORUM, 2, None)]
    assert [(r.method, r.url.path) for r in world.hub.requests] == [("GET", "/v1/sets")]
    assert world.hub.requests[0].headers["if-none-match"].startswith('"')


def test_a_sync_asks_only_for_what_the_listing_shows_changed(world: World) -> None:
    _sync_all(world)
    world.list.publish(world.next_lines())
    world.hub.requests.clear()
    results = _sync_all(world)
    assert [(r.name, r.applied) for r in results] == [(NAME, [3]), (QUORUM, [])]
    assert world.hub.paths() == [
        "/v1/sets",
        "/v1/sets/alpha/list/versions",
        "/v1/sets/alpha/list/versions/3/delta",
    ]
    # A new keyset of gamma: its keysets are asked for, nothing of alpha's.
    world.gamma.rotate(world.gamma.keys[:2], publish_threshold=2)
    world.hub.requests.clear()
    _sync_all(world)
    assert world.hub.paths() == ["/v1/sets", "/v1/agencies/gamma/keysets"]
