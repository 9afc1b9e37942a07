"""Every refused publish: its status and problem ``type``, nothing stored, one audit row.

Each test starts from ``alpha/list`` at version 2 (published through the API
with real signatures) and sends one publish that is wrong in exactly one way.
The hub must answer with the cause's stable problem ``type``, leave the
``sets``, ``versions`` and ``entries`` tables byte for byte as they were, and
append exactly one audit row, ``set.publish`` with ``outcome = 'refused'``
naming that type.

Refusals that must get past the signature check are signed with the
agency's real key: a malformed manifest is signed as it stands, a bad delta
comes with a manifest whose delta digest and counts match it, so the check
under test is the one that fires.  A manifest naming an older keyset is out
of scope (the hub has no keyset rotation API yet).
"""

from __future__ import annotations

import base64
import dataclasses
import gc
import gzip
import json
import random
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from client.protocol.documents import SignedDocument, sha256_hex
from client.protocol.keys import Signature, generate_private_key
from server.config import MAX_REQUEST_BYTES_VAR
from server.errors import PROBLEM_CONTENT_TYPE, problem_type
from server.services.callers import Role
from server.services.publishing import MAX_DELTA_LINE_BYTES
from tests.conftest import make_app
from tests.server.dbstate import SET_TABLES, audit_events, last_audit_id, latest_version, snapshot
from tests.server.seeding import (
    BOUNDARY,
    AgencyKeys,
    Candidate,
    SetChain,
    add_agency,
    add_set,
    for_delta,
    multipart,
    publish_body,
    resign,
    sign_bytes,
)
from tests.synthetic import LABELS, now, random_line, random_lines


@dataclass(frozen=True)
class Attempt:
    """One publish request: the three parts as bytes, sent to ``chain``'s URL."""

    chain: SetChain
    manifest: bytes
    signatures: bytes
    delta: bytes

    @classmethod
    def of(cls, chain: SetChain, candidate: Candidate) -> Attempt:
        return cls(
            chain, candidate.document.data, candidate.signatures_json().encode(), candidate.delta
        )

    def body(self) -> tuple[bytes, str]:
        return multipart(
            {"manifest": self.manifest, "signatures": self.signatures}, {"delta": self.delta}
        )


@dataclass
class Hub:
    """The seeded hub: alpha/list at version 2, alpha/other empty, beta unrelated."""

    database_url: str
    client: FlaskClient
    rng: random.Random
    alpha: AgencyKeys
    beta: AgencyKeys
    chain: SetChain
    other: SetChain

    def post(
        self,
        attempt: Attempt | Candidate,
        *,
        headers: dict[str, str] | None = None,
        client: FlaskClient | None = None,
        gzipped: bool = False,
    ) -> TestResponse:
        """Publish ``attempt`` (a candidate goes to alpha/list) as alpha's publisher."""
        if isinstance(attempt, Candidate):
            attempt = Attempt.of(self.chain, attempt)
        body, content_type = attempt.body()
        sent = dict(self.alpha.auth() if headers is None else headers)
        if gzipped:
            body = gzip.compress(body, mtime=0)
            sent["Content-Encoding"] = "gzip"
        return (client or self.client).post(
            attempt.chain.url, data=body, content_type=content_type, headers=sent
        )

    def next_candidate(self) -> Candidate:
        """A valid version 3: two adds, one remove, one relabel."""
        lines = list(self.chain.lines)
        dropped = lines.pop(0)
        relabelled = lines.pop(0)
        identity = relabelled.split(b" ")[0]
        new = [*lines, identity + b" relabelled", *random_lines(self.rng, 2)]
        assert dropped not in new
        return self.chain.build(new)

    def refused(
        self, status: int, slug: str, send: Callable[[], TestResponse], *, audited: bool = True
    ) -> dict[str, Any]:
        """Send, then check the problem, that no set data changed, and the audit row."""
        before = snapshot(self.database_url, SET_TABLES)
        audit_before = last_audit_id(self.database_url)
        response = send()
        # Collect now, so a database cursor the refusal left open is reported
        # (as an unraisable ResourceWarning) by this test, not by a later one.
        gc.collect()
        body = response.get_data(as_text=True)
        assert response.status_code == status, body
        assert response.mimetype == PROBLEM_CONTENT_TYPE, body
        found = response.get_json()
        assert found["type"] == problem_type(slug), body
        assert found["status"] == status
        assert snapshot(self.database_url, SET_TABLES) == before
        events = audit_events(self.database_url, audit_before)
        if audited:
            assert [(e.action, e.outcome) for e in events] == [("set.publish", "refused")]
            assert json.loads(events[0].detail)["type"] == problem_type(slug)
        else:
            assert events == []
        return dict(found)


def _publish(hub: Hub, chain: SetChain, candidate: Candidate, agency: AgencyKeys) -> None:
    body, content_type = publish_body(candidate)
    response = hub.client.post(
        chain.url, data=body, content_type=content_type, headers=agency.auth()
    )
    assert response.status_code == 201, response.get_data(as_text=True)
    chain.accept(candidate)


def _seed(database_url: str, client: FlaskClient) -> Hub:
    rng = random.Random()
    alpha = add_agency(database_url, "alpha")
    beta = add_agency(database_url, "beta")
    chain = add_set(database_url, alpha, "list")
    other = add_set(database_url, alpha, "other")
    seeded = Hub(database_url, client, rng, alpha, beta, chain, other)
    # Three labelled lines: version 3 changes two lines at most, one stays.
    first = [
        *random_lines(rng, 6),
        *(random_line(rng, label=rng.choice(LABELS)) for _ in range(3)),
        random_line(rng, label=None),
    ]
    _publish(seeded, chain, chain.build(first), alpha)
    second = [*first[2:], *random_lines(rng, 3)]
    _publish(seeded, chain, chain.build(second), alpha)
    assert latest_version(database_url, chain) == 2
    return seeded


@pytest.fixture
def hub(database_url: str, client: FlaskClient) -> Hub:
    """A hub of this test's own, for tests that publish."""
    return _seed(database_url, client)


@pytest.fixture(scope="module")
def shared_hub(shared_database_url: str) -> Iterator[Hub]:
    """One hub for every refusal case: each case checks that it changed nothing."""
    with make_app(shared_database_url) as app:
        yield _seed(shared_database_url, app.test_client())


def _replace_line(data: bytes, prefix: bytes, new: bytes) -> bytes:
    lines = data.split(b"\n")
    (index,) = [i for i, line in enumerate(lines) if line.startswith(prefix)]
    lines[index] = new
    return b"\n".join(lines)


def _line(data: bytes, prefix: bytes) -> bytes:
    (found,) = [line for line in data.split(b"\n") if line.startswith(prefix)]
    return found


# -- Refusals of the manifest and its signatures -------------------------------


def _signed_raw(hub: Hub, data: bytes) -> Attempt:
    """``data`` as the manifest, validly signed by alpha's key, with version 3's delta."""
    candidate = hub.next_candidate()
    document = sign_bytes(data, 3, hub.alpha.keys)
    return Attempt.of(hub.chain, dataclasses.replace(candidate, document=document))


def _malformed(edit: Callable[[bytes], bytes]) -> Callable[[Hub], Attempt]:
    def make(hub: Hub) -> Attempt:
        return _signed_raw(hub, edit(hub.next_candidate().document.data))

    return make


def _upper_hex(line: bytes) -> bytes:
    head, digest, tail = re.fullmatch(
        rb"(content sha256:)([0-9a-f]{64})( count \d+)", line
    ).groups()
    return head + digest.upper() + tail


def _swap_times(data: bytes) -> bytes:
    issued, expires = _line(data, b"issued "), _line(data, b"expires ")
    return data.replace(issued, b"@").replace(expires, issued).replace(b"@", expires)


MALFORMED: dict[str, Callable[[bytes], bytes]] = {
    "trailing-space": lambda d: d.replace(b"\nversion 3\n", b"\nversion 3 \n"),
    "crlf": lambda d: d.replace(b"\n", b"\r\n"),
    "missing-line": lambda d: d.replace(_line(d, b"expires ") + b"\n", b""),
    "extra-line": lambda d: d + b"note hello\n",
    "duplicated-line": lambda d: d + _line(d, b"keyset ") + b"\n",
    "swapped-lines": _swap_times,
    "uppercase-hex": lambda d: _replace_line(d, b"content ", _upper_hex(_line(d, b"content "))),
    "no-final-newline": lambda d: d[:-1],
    "leading-zero": lambda d: d.replace(b"\nversion 3\n", b"\nversion 03\n"),
    "non-ascii": lambda d: d.replace(b"set alpha/list", "set alpha/lïst".encode()),
    "not-a-manifest": lambda _d: b"hello\n",
    "wrong-parent-version": lambda d: d.replace(b"\nparent 2 sha256:", b"\nparent 1 sha256:"),
    "expires-before-issued": lambda d: _replace_line(
        d, b"expires ", _line(d, b"issued ").replace(b"issued", b"expires")
    ),
}


def _keyset_as_manifest(hub: Hub) -> Attempt:
    return _signed_raw(hub, hub.alpha.keyset.raw)


def _resigned(**changes: Any) -> Callable[[Hub], Attempt]:
    def make(hub: Hub) -> Attempt:
        return Attempt.of(hub.chain, resign(hub.next_candidate(), hub.alpha.keys, **changes))

    return make


def _with_signatures(signatures: Callable[[Hub, Candidate], bytes]) -> Callable[[Hub], Attempt]:
    def make(hub: Hub) -> Attempt:
        candidate = hub.next_candidate()
        attempt = Attempt.of(hub.chain, candidate)
        return dataclasses.replace(attempt, signatures=signatures(hub, candidate))

    return make


def _sigs(*signatures: Signature) -> bytes:
    return json.dumps([s.to_json() for s in signatures]).encode()


def _flipped(hub: Hub, candidate: Candidate) -> bytes:
    (good,) = candidate.document.signatures
    raw = bytearray(good.sig)
    raw[10] ^= 0x01
    return _sigs(Signature(good.keyid, bytes(raw)))


def _signed_by(*make_keys: Callable[[Hub], Any]) -> Callable[[Hub], Attempt]:
    def make(hub: Hub) -> Attempt:
        candidate = hub.next_candidate()
        keys = [make_key(hub) for make_key in make_keys]
        document = sign_bytes(candidate.document.data, 3, keys)
        return Attempt.of(hub.chain, dataclasses.replace(candidate, document=document))

    return make


def _edited_after_signing(hub: Hub) -> Attempt:
    candidate = hub.next_candidate()
    later = resign(candidate, hub.alpha.keys, expires=candidate.manifest.expires + timedelta(1))
    return dataclasses.replace(
        Attempt.of(hub.chain, later), signatures=_sigs(*candidate.document.signatures)
    )


def _gap(hub: Hub) -> Attempt:
    # Version 4 with a parent line "3 sha256:<version 2's digest>": a skipped version.
    return Attempt.of(hub.chain, resign(hub.next_candidate(), hub.alpha.keys, version=4))


def _replay(hub: Hub) -> Attempt:
    return Attempt.of(hub.chain, hub.chain.accepted[-1])


def _replay_first(hub: Hub) -> Attempt:
    return Attempt.of(hub.chain, hub.chain.accepted[0])


def _another_second(hub: Hub) -> Attempt:
    first = hub.chain.accepted[0]
    rival = SetChain(hub.alpha, "list", 1, first.document.data, first.lines)
    candidate = rival.build([*first.lines, random_line(hub.rng)])
    assert candidate.version == 2
    return Attempt.of(hub.chain, candidate)


def _parent_of_first(hub: Hub) -> Attempt:
    digest = sha256_hex(hub.chain.accepted[0].document.data)
    return _resigned(parent_digest=digest)(hub)


def _issued(issued: timedelta, expires: timedelta) -> Callable[[Hub], Attempt]:
    def make(hub: Hub) -> Attempt:
        candidate = hub.next_candidate()
        moment = now()
        return Attempt.of(
            hub.chain,
            resign(candidate, hub.alpha.keys, issued=moment + issued, expires=moment + expires),
        )

    return make


# -- Refusals of the delta ----------------------------------------------------


def _with_delta(edit: Callable[[Hub, Candidate], bytes]) -> Callable[[Hub], Attempt]:
    """The manifest as signed for the true delta, sent with edited delta bytes."""

    def make(hub: Hub) -> Attempt:
        candidate = hub.next_candidate()
        return dataclasses.replace(Attempt.of(hub.chain, candidate), delta=edit(hub, candidate))

    return make


def _signed_delta(edit: Callable[[Hub, list[bytes]], list[bytes]]) -> Callable[[Hub], Attempt]:
    """A delta edited line by line, under a manifest signed for exactly those bytes."""

    def make(hub: Hub) -> Attempt:
        candidate = hub.next_candidate()
        lines = edit(hub, candidate.delta.split(b"\n")[:-1])
        delta = b"".join(line + b"\n" for line in lines)
        return Attempt.of(hub.chain, for_delta(candidate, hub.alpha.keys, delta))

    return make


def _raw_delta(edit: Callable[[bytes], bytes]) -> Callable[[Hub], Attempt]:
    def make(hub: Hub) -> Attempt:
        candidate = hub.next_candidate()
        delta = edit(candidate.delta)
        return Attempt.of(hub.chain, for_delta(candidate, hub.alpha.keys, delta))

    return make


def _adds(lines: list[bytes]) -> list[bytes]:
    return [line for line in lines if line.startswith(b"+")]


def _removes(lines: list[bytes]) -> list[bytes]:
    return [line for line in lines if line.startswith(b"-")]


def _swap_first_adds(_hub: Hub, lines: list[bytes]) -> list[bytes]:
    adds = _adds(lines)
    assert len(adds) >= 2
    return [adds[1], adds[0], *adds[2:], *_removes(lines)]


def _other_label(line: bytes) -> bytes:
    identity = line.split(b" ")[0]
    return identity + (b" other" if line == identity else b"")


def _sorted(lines: list[bytes]) -> list[bytes]:
    return sorted(lines)


def _present(hub: Hub) -> bytes:
    return hub.chain.lines[-1]


def _present_labelled(hub: Hub) -> bytes:
    # Version 3 changes lines 0 and 1; the seed made three lines with labels.
    return next(line for line in hub.chain.lines[2:] if b" " in line)


INVALID_DELTAS: dict[str, Callable[[Hub, list[bytes]], list[bytes]]] = {
    "unsorted": _swap_first_adds,
    "removes-before-adds": lambda _h, d: [*_removes(d), *_adds(d)],
    "duplicated-line": lambda _h, d: _sorted([*d, _adds(d)[0]]),
    "added-twice-with-two-labels": lambda _h, d: _sorted([*d, _other_label(_adds(d)[0])]),
    "removed-twice-with-two-labels": lambda _h, d: _sorted([*d, _other_label(_removes(d)[0])]),
    "uppercase-hex": lambda _h, d: _sorted([*d, b"+sha256:" + b"AB" * 32]),
    "not-hex": lambda _h, d: _sorted([*d, b"+sha256:" + b"g" * 64]),
    "short-hex": lambda _h, d: _sorted([*d, b"+sha256:" + b"a" * 63]),
    "long-hex": lambda _h, d: _sorted([*d, b"+md5:" + b"a" * 33]),
    "unknown-algorithm": lambda _h, d: _sorted([*d, b"+sha3:" + b"a" * 64]),
    "unknown-algorithm-crc32": lambda _h, d: _sorted([*d, b"+crc32:" + b"0" * 8]),
    "no-sign": lambda _h, d: [*d, b"sha256:" + b"c" * 64],
    "bad-label": lambda _h, d: _sorted([*d, b"+sha256:" + b"d" * 64 + b" cat/a"]),
    "long-label": lambda _h, d: _sorted([*d, b"+sha256:" + b"d" * 64 + b" " + b"x" * 65]),
    "two-spaces": lambda _h, d: _sorted([*d, b"+sha256:" + b"d" * 64 + b"  cat-a"]),
    "trailing-space": lambda _h, d: _sorted([*d, b"+sha256:" + b"d" * 64 + b" "]),
    "empty-line": lambda _h, d: [b"", *d],
}

RAW_INVALID_DELTAS: dict[str, Callable[[bytes], bytes]] = {
    "crlf": lambda d: d.replace(b"\n", b"\r\n"),
    "no-final-newline": lambda d: d[:-1],
    "nul-byte": lambda d: d.replace(b"\n", b"\x00\n", 1),
}


def _count_off(**field: int) -> Callable[[Hub], Attempt]:
    def make(hub: Hub) -> Attempt:
        candidate = hub.next_candidate()
        manifest = candidate.manifest
        changes = {name: getattr(manifest, name) + step for name, step in field.items()}
        return Attempt.of(hub.chain, resign(candidate, hub.alpha.keys, **changes))

    return make


def _not_applicable(extra: Callable[[Hub], bytes]) -> Callable[[Hub], Attempt]:
    """Version 3's delta plus one line that does not apply to version 2."""

    def make(hub: Hub) -> Attempt:
        candidate = hub.next_candidate()
        lines = candidate.delta.split(b"\n")[:-1]
        delta = b"".join(line + b"\n" for line in sorted({*lines, extra(hub)}))
        return Attempt.of(hub.chain, for_delta(candidate, hub.alpha.keys, delta))

    return make


def _remove_and_add_same(hub: Hub) -> Attempt:
    candidate = hub.next_candidate()
    kept = hub.chain.lines[-1]
    assert kept in candidate.lines
    lines = candidate.delta.split(b"\n")[:-1]
    delta = b"".join(line + b"\n" for line in sorted({*lines, b"+" + kept, b"-" + kept}))
    return Attempt.of(hub.chain, for_delta(candidate, hub.alpha.keys, delta))


def _random_digest(hub: Hub) -> str:
    return hub.rng.randbytes(32).hex()


def _resigned_with(make_changes: Callable[[Hub], dict[str, Any]]) -> Callable[[Hub], Attempt]:
    def make(hub: Hub) -> Attempt:
        return _resigned(**make_changes(hub))(hub)

    return make


Case = tuple[int, str, Callable[[Hub], Attempt]]

CASES: dict[str, Case] = {
    **{
        f"manifest-{name}": (422, "invalid-manifest", _malformed(edit))
        for name, edit in MALFORMED.items()
    },
    "manifest-is-a-keyset": (422, "invalid-manifest", _keyset_as_manifest),
    "set-line-names-another-set": (422, "set-mismatch", _resigned(set_name="alpha/other")),
    "set-line-names-a-missing-set": (422, "set-mismatch", _resigned(set_name="alpha/nothing")),
    "signature-bit-flipped": (422, "bad-signature", _with_signatures(_flipped)),
    "manifest-edited-after-signing": (422, "bad-signature", _edited_after_signing),
    "signed-by-another-agency": (422, "unknown-key", _signed_by(lambda h: h.beta.keys[0])),
    "signed-by-a-key-outside-the-keyset": (
        422,
        "unknown-key",
        _signed_by(lambda _h: generate_private_key()),
    ),
    "no-signatures": (422, "threshold-not-met", _with_signatures(lambda _h, _c: b"[]")),
    "signatures-not-json": (
        422,
        "invalid-signatures",
        _with_signatures(lambda _h, _c: b"not json"),
    ),
    "signatures-an-object": (
        422,
        "invalid-signatures",
        _with_signatures(lambda _h, c: json.dumps(c.document.signatures[0].to_json()).encode()),
    ),
    "signature-not-base64": (
        422,
        "invalid-signatures",
        _with_signatures(
            lambda _h, c: json.dumps(
                [{"keyid": c.document.signatures[0].keyid, "sig": "not base64!"}]
            ).encode()
        ),
    ),
    "too-many-signatures": (
        422,
        "too-many-signatures",
        _with_signatures(lambda _h, c: _sigs(*c.document.signatures * 17)),
    ),
    "wrong-keyset-digest": (
        422,
        "keyset-mismatch",
        _resigned_with(lambda h: {"keyset_digest": _random_digest(h)}),
    ),
    "newer-keyset-version": (422, "keyset-mismatch", _resigned(keyset_version=2)),
    "version-gap": (409, "version-conflict", _gap),
    "replayed-version": (409, "version-conflict", _replay),
    "replayed-first-version": (409, "version-conflict", _replay_first),
    "another-version-2": (409, "version-conflict", _another_second),
    "parent-is-version-1": (422, "parent-mismatch", _parent_of_first),
    "parent-random": (
        422,
        "parent-mismatch",
        _resigned_with(lambda h: {"parent_digest": _random_digest(h)}),
    ),
    "issued-in-future": (
        422,
        "issued-in-future",
        _issued(timedelta(hours=1), timedelta(days=30)),
    ),
    "expired": (422, "expired", _issued(-timedelta(days=2), -timedelta(days=1))),
    "expired-just-now": (422, "expired", _issued(-timedelta(days=2), -timedelta(seconds=5))),
    "delta-extra-line": (
        422,
        "delta-digest-mismatch",
        _with_delta(lambda h, c: c.delta + b"+" + random_line(h.rng) + b"\n"),
    ),
    "delta-byte-flipped": (
        422,
        "delta-digest-mismatch",
        _with_delta(lambda _h, c: c.delta[:9] + bytes([c.delta[9] ^ 1]) + c.delta[10:]),
    ),
    "delta-truncated": (
        422,
        "delta-digest-mismatch",
        _with_delta(lambda _h, c: c.delta[: c.delta.rindex(b"\n", 0, -1) + 1]),
    ),
    "delta-empty": (422, "delta-digest-mismatch", _with_delta(lambda _h, _c: b"")),
    **{
        f"delta-{name}": (422, "invalid-delta", _signed_delta(edit))
        for name, edit in INVALID_DELTAS.items()
    },
    **{
        f"delta-{name}": (422, "invalid-delta", _raw_delta(edit))
        for name, edit in RAW_INVALID_DELTAS.items()
    },
    "adds-count": (422, "count-mismatch", _count_off(adds=1)),
    "removes-count": (422, "count-mismatch", _count_off(removes=1)),
    "content-count": (422, "count-mismatch", _count_off(count=1)),
    "content-count-low": (422, "count-mismatch", _count_off(count=-1)),
    "removes-an-absent-line": (
        422,
        "delta-not-applicable",
        _not_applicable(lambda h: b"-" + random_line(h.rng)),
    ),
    "removes-a-line-with-another-label": (
        422,
        "delta-not-applicable",
        _not_applicable(lambda h: b"-" + _other_label(_present_labelled(h))),
    ),
    "adds-a-present-line": (
        422,
        "delta-not-applicable",
        _not_applicable(lambda h: b"+" + _present(h)),
    ),
    "adds-a-present-identity-with-another-label": (
        422,
        "delta-not-applicable",
        _not_applicable(lambda h: b"+" + _other_label(_present(h))),
    ),
    "removes-and-adds-the-same-line": (422, "delta-not-applicable", _remove_and_add_same),
    "content-digest": (
        422,
        "content-digest-mismatch",
        _resigned_with(lambda h: {"content_digest": _random_digest(h)}),
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_refused_publish(shared_hub: Hub, case: str) -> None:
    status, slug, make = CASES[case]
    attempt = make(shared_hub)
    shared_hub.refused(status, slug, lambda: shared_hub.post(attempt))


def test_the_valid_version_of_every_case_is_accepted(shared_hub: Hub) -> None:
    # The control, run after every case on the shared hub: without the one wrong
    # thing, version 3 publishes, so no refusal left the set stuck or changed.
    response = shared_hub.post(shared_hub.next_candidate())
    assert response.status_code == 201, response.get_data(as_text=True)
    assert latest_version(shared_hub.database_url, shared_hub.chain) == 3


def test_issued_within_the_clock_skew_is_accepted(hub: Hub) -> None:
    moment = now()
    candidate = hub.chain.build(
        hub.next_candidate().lines,
        issued=moment + timedelta(minutes=2),
        expires=moment + timedelta(days=1),
    )
    response = hub.post(candidate)
    assert response.status_code == 201, response.get_data(as_text=True)


def test_a_manifest_for_another_agencys_set_is_a_set_mismatch(hub: Hub) -> None:
    # The manifest's set line names beta's set; alpha signed it and posts it to
    # alpha/list.  The cause is the set line, whatever else follows from it.
    attempt = _resigned(set_name="beta/list")(hub)
    hub.refused(422, "set-mismatch", lambda: hub.post(attempt))


# -- Thresholds ---------------------------------------------------------------------


@pytest.fixture
def gamma(hub: Hub) -> tuple[AgencyKeys, SetChain]:
    """gamma: two publish keys, threshold 2; gamma/list at version 1, signed by both."""
    agency = add_agency(hub.database_url, "gamma", keys=2, publish_threshold=2)
    chain = add_set(hub.database_url, agency, "list")
    _publish(hub, chain, chain.build(random_lines(hub.rng, 5)), agency)
    return agency, chain


def _gamma_next(hub: Hub, chain: SetChain) -> Candidate:
    return chain.build([*chain.lines, random_line(hub.rng)])


def test_one_of_two_keys_does_not_meet_the_threshold(
    hub: Hub, gamma: tuple[AgencyKeys, SetChain]
) -> None:
    agency, chain = gamma
    for key in agency.keys:
        candidate = chain.build([*chain.lines, random_line(hub.rng)], keys=[key])
        assert len(candidate.document.signatures) == 1
        hub.refused(
            422,
            "threshold-not-met",
            lambda c=candidate: hub.post(Attempt.of(chain, c), headers=agency.auth()),
        )
    response = hub.post(Attempt.of(chain, _gamma_next(hub, chain)), headers=agency.auth())
    assert response.status_code == 201, response.get_data(as_text=True)


def test_one_key_signing_twice_does_not_meet_the_threshold(
    hub: Hub, gamma: tuple[AgencyKeys, SetChain]
) -> None:
    agency, chain = gamma
    candidate = chain.build([*chain.lines, random_line(hub.rng)], keys=agency.keys[:1])
    (signature,) = candidate.document.signatures
    attempt = dataclasses.replace(
        Attempt.of(chain, candidate), signatures=_sigs(signature, signature)
    )
    hub.refused(422, "threshold-not-met", lambda: hub.post(attempt, headers=agency.auth()))


def test_one_key_and_an_outsider_do_not_meet_the_threshold(
    hub: Hub, gamma: tuple[AgencyKeys, SetChain]
) -> None:
    agency, chain = gamma
    candidate = chain.build(
        [*chain.lines, random_line(hub.rng)], keys=[agency.keys[0], hub.alpha.keys[0]]
    )
    assert len(candidate.document.signatures) == 2
    hub.refused(
        422,
        "threshold-not-met",
        lambda: hub.post(Attempt.of(chain, candidate), headers=agency.auth()),
    )


# -- Who may publish -------------------------------------------------------------------


@pytest.mark.parametrize("role", [Role.READER, Role.ADMIN])
def test_a_token_without_the_publisher_role_is_forbidden(hub: Hub, role: Role) -> None:
    candidate = hub.next_candidate()
    hub.refused(403, "forbidden", lambda: hub.post(candidate, headers=hub.alpha.auth(role)))


def test_the_agency_admin_may_publish(hub: Hub) -> None:
    response = hub.post(hub.next_candidate(), headers=hub.alpha.auth(Role.AGENCY_ADMIN))
    assert response.status_code == 201, response.get_data(as_text=True)


@pytest.mark.parametrize("role", [Role.PUBLISHER, Role.AGENCY_ADMIN])
def test_another_agencys_publisher_cannot_see_an_ungranted_set(hub: Hub, role: Role) -> None:
    candidate = hub.next_candidate()
    hub.refused(404, "not-found", lambda: hub.post(candidate, headers=hub.beta.auth(role)))


@pytest.mark.parametrize("role", [Role.PUBLISHER, Role.AGENCY_ADMIN])
def test_another_agencys_publisher_is_forbidden_on_a_granted_set(hub: Hub, role: Role) -> None:
    granted = hub.client.put(
        "/v1/sets/alpha/list/grants",
        json={"readers": ["beta"]},
        headers=hub.alpha.auth(Role.AGENCY_ADMIN),
    )
    assert granted.status_code == 200, granted.get_data(as_text=True)
    readable = hub.client.get("/v1/sets/alpha/list/versions", headers=hub.beta.auth(Role.READER))
    assert readable.status_code == 200
    candidate = hub.next_candidate()
    hub.refused(403, "forbidden", lambda: hub.post(candidate, headers=hub.beta.auth(role)))
    # Beta signing with its own key changes nothing: the owner decides.
    own_key = resign(candidate, hub.beta.keys)
    hub.refused(403, "forbidden", lambda: hub.post(own_key, headers=hub.beta.auth(role)))


# -- The request itself ---------------------------------------------------------------


@pytest.mark.parametrize("part", ["manifest", "signatures", "delta"])
def test_a_missing_part_is_a_bad_request_naming_it(hub: Hub, part: str) -> None:
    attempt = Attempt.of(hub.chain, hub.next_candidate())
    fields = {"manifest": attempt.manifest, "signatures": attempt.signatures}
    files = {"delta": attempt.delta}
    fields.pop(part, None)
    files.pop(part, None)
    body, content_type = multipart(fields, files)
    found = hub.refused(
        400,
        "bad-request",
        lambda: hub.client.post(
            hub.chain.url, data=body, content_type=content_type, headers=hub.alpha.auth()
        ),
    )
    assert repr(part) in found["detail"]
    assert found["field"] == part


def test_the_manifest_and_signatures_may_come_as_files(hub: Hub) -> None:
    attempt = Attempt.of(hub.chain, hub.next_candidate())
    body, content_type = multipart(
        {},
        {"manifest": attempt.manifest, "signatures": attempt.signatures, "delta": attempt.delta},
    )
    response = hub.client.post(
        hub.chain.url, data=body, content_type=content_type, headers=hub.alpha.auth()
    )
    assert response.status_code == 201, response.get_data(as_text=True)


SMALL_LIMIT = 16 * 1024


@pytest.fixture
def small_client(database_url: str) -> Iterator[FlaskClient]:
    """A second app on the same database whose request limit is SMALL_LIMIT bytes."""
    with make_app(database_url, {MAX_REQUEST_BYTES_VAR: str(SMALL_LIMIT)}) as app:
        yield app.test_client()


def _big_candidate(hub: Hub, count: int) -> Candidate:
    return hub.chain.build([*hub.chain.lines, *random_lines(hub.rng, count, "sha256")])


def test_an_oversized_body_is_too_large(hub: Hub, small_client: FlaskClient) -> None:
    candidate = _big_candidate(hub, 400)
    assert len(publish_body(candidate)[0]) > SMALL_LIMIT
    hub.refused(413, "too-large", lambda: hub.post(candidate, client=small_client))
    # The same limit lets a small version through.
    small = hub.next_candidate()
    assert hub.post(small, client=small_client).status_code == 201


def test_a_gzip_delta_that_inflates_past_what_its_manifest_counts_allow_is_too_large(
    hub: Hub, small_client: FlaskClient
) -> None:
    candidate = hub.next_candidate()
    manifest = candidate.manifest
    # A delta part of a megabyte of one repeated byte: tiny compressed, far
    # over what the signed counts allow once inflated.
    bomb = dataclasses.replace(Attempt.of(hub.chain, candidate), delta=b"+" * (1 << 20))
    compressed = gzip.compress(bomb.body()[0], mtime=0)
    assert len(compressed) < SMALL_LIMIT // 4
    problem = hub.refused(
        413, "too-large", lambda: hub.post(bomb, client=small_client, gzipped=True)
    )
    assert problem["limit"] == (manifest.adds + manifest.removes) * MAX_DELTA_LINE_BYTES
    assert f"{manifest.adds} adds and {manifest.removes} removes" in problem["detail"]


def test_a_gzip_upload_may_inflate_far_past_the_wire_limit(hub: Hub) -> None:
    # The wire limit bounds what is sent; what it inflates to is bounded by
    # the signed counts, so a big first version fits a small upload limit.
    candidate = _big_candidate(hub, 2000)
    body, _ = publish_body(candidate)
    assert len(gzip.compress(body)) < SMALL_LIMIT * 5 < len(body)
    with make_app(hub.database_url, {MAX_REQUEST_BYTES_VAR: str(SMALL_LIMIT * 5)}) as app:
        response = hub.post(candidate, client=app.test_client(), gzipped=True)
    assert response.status_code == 201, response.get_data(as_text=True)


def test_a_gzip_upload_over_the_wire_limit_is_too_large(
    hub: Hub, small_client: FlaskClient
) -> None:
    candidate = _big_candidate(hub, 2000)
    body, _ = publish_body(candidate)
    assert len(gzip.compress(body)) > SMALL_LIMIT
    problem = hub.refused(
        413, "too-large", lambda: hub.post(candidate, client=small_client, gzipped=True)
    )
    assert problem["limit"] == SMALL_LIMIT


@pytest.mark.parametrize(
    ("order", "expected"),
    [
        (("manifest", "manifest", "delta"), "found part 'manifest'"),
        (("delta", "manifest", "delta"), "found part 'delta'"),
        (("manifest", "signatures", "other"), "found part 'other'"),
        (("manifest", "signatures", "delta", "extra"), "exactly the parts"),
        (("manifest", "signatures"), "found the end of the body"),
    ],
    ids=["manifest-twice", "delta-twice", "unknown-part", "part-after-delta", "no-delta"],
)
def test_publish_parts_out_of_order_are_refused(
    hub: Hub, order: tuple[str, ...], expected: str
) -> None:
    candidate = hub.next_candidate()
    data = {
        "manifest": candidate.document.data,
        "signatures": candidate.signatures_json().encode(),
        "delta": candidate.delta,
    }
    body = bytearray()
    for name in order:
        body += f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
        body += data.get(name, b"x") + b"\r\n"
    body += f"--{BOUNDARY}--\r\n".encode()
    problem = hub.refused(
        400,
        "bad-request",
        lambda: hub.client.post(
            hub.chain.url,
            data=bytes(body),
            content_type=f"multipart/form-data; boundary={BOUNDARY}",
            headers=hub.alpha.auth(),
        ),
    )
    assert expected in problem["detail"]


def test_a_delta_before_the_manifest_is_held_to_the_upload_limit(
    hub: Hub, small_client: FlaskClient
) -> None:
    candidate = hub.next_candidate()
    first, _ = multipart({}, {"delta": candidate.delta, "manifest": candidate.document.data})
    body = first.replace(
        f"--{BOUNDARY}--\r\n".encode(),
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="signatures"\r\n\r\n'.encode()
        + candidate.signatures_json().encode()
        + f"\r\n--{BOUNDARY}--\r\n".encode(),
    )
    content_type = f"multipart/form-data; boundary={BOUNDARY}"
    accepted = hub.client.post(
        hub.chain.url, data=body, content_type=content_type, headers=hub.alpha.auth()
    )
    assert accepted.status_code == 201, accepted.get_data(as_text=True)
    hub.chain.accept(candidate)
    big = _big_candidate(hub, 260)
    late, _ = multipart({}, {"delta": big.delta, "manifest": big.document.data})
    # Within the wire limit, over it once inflated.
    assert len(gzip.compress(late)) < SMALL_LIMIT < len(big.delta)
    problem = hub.refused(
        413,
        "too-large",
        lambda: small_client.post(
            hub.chain.url,
            data=gzip.compress(late),
            content_type=content_type,
            headers={**hub.alpha.auth(), "Content-Encoding": "gzip"},
        ),
    )
    assert "send the manifest and signatures first" in problem["detail"]


def test_a_publish_that_is_not_multipart_is_refused(hub: Hub) -> None:
    problem = hub.refused(
        400,
        "bad-request",
        lambda: hub.client.post(hub.chain.url, json={"manifest": "x"}, headers=hub.alpha.auth()),
    )
    assert "multipart/form-data" in problem["detail"]


def test_a_gzip_body_within_the_limit_publishes(hub: Hub, small_client: FlaskClient) -> None:
    candidate = _big_candidate(hub, 150)
    body, _ = publish_body(candidate)
    assert len(gzip.compress(body)) < SMALL_LIMIT < len(body) * 2
    response = hub.post(candidate, client=small_client, gzipped=True)
    assert response.status_code == 201, response.get_data(as_text=True)
    assert response.get_json() == {
        "version": 3,
        "manifest": candidate.document.data.decode(),
        "signatures": json.loads(candidate.signatures_json()),
    }
    content = hub.client.get("/v1/sets/alpha/list/versions/3/content", headers=hub.alpha.auth())
    assert content.get_data() == b"".join(line + b"\n" for line in candidate.lines)


def test_a_gzip_upload_publishes(hub: Hub) -> None:
    candidate = hub.next_candidate()
    response = hub.post(candidate, gzipped=True)
    assert response.status_code == 201, response.get_data(as_text=True)
    assert latest_version(hub.database_url, hub.chain) == 3
    delta = hub.client.get("/v1/sets/alpha/list/versions/3/delta", headers=hub.alpha.auth())
    assert delta.get_data() == candidate.delta


def test_a_body_that_is_not_gzip_is_a_bad_request(hub: Hub) -> None:
    body, content_type = Attempt.of(hub.chain, hub.next_candidate()).body()
    hub.refused(
        400,
        "bad-request",
        lambda: hub.client.post(
            hub.chain.url,
            data=body,
            content_type=content_type,
            headers={**hub.alpha.auth(), "Content-Encoding": "gzip"},
        ),
    )


def test_a_truncated_gzip_body_is_a_bad_request(hub: Hub) -> None:
    body, content_type = Attempt.of(hub.chain, hub.next_candidate()).body()
    packed = gzip.compress(body, mtime=0)
    hub.refused(
        400,
        "bad-request",
        lambda: hub.client.post(
            hub.chain.url,
            data=packed[: len(packed) // 2],
            content_type=content_type,
            headers={**hub.alpha.auth(), "Content-Encoding": "gzip"},
        ),
    )


@pytest.mark.parametrize("as_file", [False, True], ids=["field", "file"])
def test_a_manifest_over_64_kb_is_413_unread(hub: Hub, as_file: bool) -> None:
    candidate = hub.next_candidate()
    padded = candidate.document.data + b"x" * (64 * 1024)
    document = sign_bytes(padded, 3, hub.alpha.keys)
    fields = {"signatures": json.dumps([s.to_json() for s in document.signatures]).encode()}
    files: dict[str, bytes] = {}
    (files if as_file else fields)["manifest"] = padded
    files["delta"] = candidate.delta
    body, content_type = multipart(fields, files)
    problem = hub.refused(
        413,
        "too-large",
        lambda: hub.client.post(
            hub.chain.url, data=body, content_type=content_type, headers=hub.alpha.auth()
        ),
    )
    assert problem["limit"] == 64 * 1024


def test_a_signature_document_round_trips_as_sent(hub: Hub) -> None:
    # The version object carries the signatures exactly as the publisher made them.
    candidate = hub.next_candidate()
    response = hub.post(candidate)
    assert response.status_code == 201
    (signature,) = response.get_json()["signatures"]
    (sent,) = candidate.document.signatures
    assert signature == {"keyid": sent.keyid, "sig": base64.b64encode(sent.sig).decode()}
    assert SignedDocument.from_json("manifest", response.get_json()) == candidate.document
