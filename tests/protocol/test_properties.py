"""Properties of the signed documents and deltas, over generated valid inputs."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from client.protocol.documents import (
    Keyset,
    Manifest,
    sign_document,
    verify,
    verify_keyset,
    verify_manifest,
)
from client.protocol.entries import (
    ContentDigest,
    DeltaDigest,
    Entry,
    apply_delta,
    parse_entry,
)
from client.protocol.errors import FormatError, VerificationError, WrongKindError
from client.protocol.keys import Signature, key_id, public_key_raw, sign
from tests.protocol.factories import delta_between, key_from_seed, make_keyset, make_manifest
from tests.protocol.strategies import (
    GeneratedKeyset,
    entries,
    keysets,
    manifests,
    unique_entries,
)

# One keyset whose publish key signs the generated manifests.
PUBLISHER = key_from_seed(bytes(range(32)))


HELD = make_keyset([PUBLISHER])


def _naming_held(manifest: Manifest) -> bytes:
    """Re-point a generated manifest at HELD so that only the bytes decide."""
    named = replace(
        manifest,
        set_name=f"{HELD.agency}/{manifest.set_name.split('/')[1]}",
        keyset_version=HELD.version,
        keyset_digest=HELD.digest,
    )
    return named.encode()


def _keys_summary(keyset: Keyset) -> tuple[list[tuple[str, bytes]], list[tuple[str, bytes]]]:
    return (
        sorted((kid, public_key_raw(k)) for kid, k in keyset.root_keys.items()),
        sorted((kid, public_key_raw(k)) for kid, k in keyset.publish_keys.items()),
    )


@settings(max_examples=150)
@given(manifests())
def test_manifest_round_trip(manifest: Manifest) -> None:
    data = manifest.encode()
    parsed = Manifest.parse(data)
    assert parsed == manifest
    assert parsed.encode() == data


@settings(max_examples=60)
@given(keysets())
def test_keyset_round_trip(generated: GeneratedKeyset) -> None:
    keyset = generated.keyset
    parsed = Keyset.parse(keyset.raw)
    assert parsed.encode() == keyset.raw == keyset.encode()
    assert (parsed.agency, parsed.version, parsed.expires) == (
        keyset.agency,
        keyset.version,
        keyset.expires,
    )
    assert (parsed.root_threshold, parsed.publish_threshold) == (
        keyset.root_threshold,
        keyset.publish_threshold,
    )
    assert _keys_summary(parsed) == _keys_summary(keyset)
    assert set(parsed.root_keys) == {key_id(k) for k in generated.roots}
    assert set(parsed.publish_keys) == {key_id(k) for k in generated.publishers}


@settings(max_examples=100)
@given(manifests(), st.data())
def test_any_single_byte_change_to_a_signed_manifest_fails(
    manifest: Manifest, data: st.DataObject
) -> None:
    original = _naming_held(manifest)
    signatures = [sign(PUBLISHER, original)]
    assert verify_manifest(original, signatures, HELD).encode() == original
    position = data.draw(st.integers(0, len(original) - 1), label="position")
    byte = data.draw(st.integers(0, 255).filter(lambda b: b != original[position]), label="byte")
    changed = original[:position] + bytes([byte]) + original[position + 1 :]
    try:
        verify_manifest(changed, signatures, HELD)
    except VerificationError:
        pass
    else:
        raise AssertionError(f"changed byte {position} to {byte:#04x} and it still verified")


@settings(max_examples=60)
@given(keysets(), st.data())
def test_any_single_byte_change_to_a_signed_keyset_fails(
    generated: GeneratedKeyset, data: st.DataObject
) -> None:
    keyset = generated.keyset
    document = sign_document("keyset", keyset.raw, keyset.version, generated.roots)
    original = document.data
    position = data.draw(st.integers(0, len(original) - 1), label="position")
    byte = data.draw(st.integers(0, 255).filter(lambda b: b != original[position]), label="byte")
    changed = original[:position] + bytes([byte]) + original[position + 1 :]
    # Checked against a previous keyset whose roots are the signers (version n-1),
    # or, for keyset 1, as a registration against its own roots alone.
    previous = _previous_of(generated)
    accepted = verify_keyset(original, document.signatures, previous, agency=keyset.agency)
    assert accepted.raw == original
    try:
        verify_keyset(changed, document.signatures, previous, agency=keyset.agency)
    except VerificationError:
        pass
    else:
        raise AssertionError(f"changed byte {position} to {byte:#04x} and it still verified")


def _previous_of(generated: GeneratedKeyset) -> Keyset | None:
    keyset = generated.keyset
    if keyset.version == 1:
        return None
    return Keyset(
        keyset.agency,
        keyset.version - 1,
        keyset.root_threshold,
        keyset.root_keys,
        1,
        keyset.publish_keys,
        keyset.expires,
    )


@settings(max_examples=60)
@given(manifests(), st.data())
def test_signature_byte_change_fails(manifest: Manifest, data: st.DataObject) -> None:
    original = _naming_held(manifest)
    good = sign(PUBLISHER, original)
    position = data.draw(st.integers(0, 63))
    flip = data.draw(st.integers(1, 255))
    bad = bytearray(good.sig)
    bad[position] ^= flip
    try:
        verify_manifest(original, [Signature(good.keyid, bytes(bad))], HELD)
    except VerificationError:
        pass
    else:
        raise AssertionError("a changed signature verified")


@settings(max_examples=60)
@given(manifests(), keysets())
def test_a_manifest_never_verifies_as_a_keyset_nor_the_reverse(
    manifest: Manifest, generated: GeneratedKeyset
) -> None:
    keyset = generated.keyset
    manifest_bytes = manifest.encode()
    signers = [*generated.roots, *generated.publishers]
    everyone = [sign(k, manifest_bytes) for k in signers]
    try:
        verify("keyset", manifest_bytes, everyone, None, agency=keyset.agency)
    except WrongKindError:
        pass
    else:
        raise AssertionError("a manifest verified as a keyset")
    keyset_sigs = [sign(k, keyset.raw) for k in signers]
    try:
        verify("manifest", keyset.raw, keyset_sigs, keyset)
    except WrongKindError:
        pass
    else:
        raise AssertionError("a keyset verified as a manifest")


@settings(max_examples=100)
@given(manifests(), st.integers(0, 10_000), st.binary(min_size=1, max_size=3))
def test_parse_accepts_only_its_own_encoding(
    manifest: Manifest, position: int, junk: bytes
) -> None:
    """Whatever a mutation does, parse either refuses or gives back exactly the input."""
    data = manifest.encode()
    position %= len(data)
    mutated = data[:position] + junk + data[position + 1 :]
    try:
        parsed = Manifest.parse(mutated)
    except FormatError:
        return
    assert parsed.encode() == mutated


@settings(max_examples=40)
@given(keysets(), st.integers(0, 10_000), st.binary(min_size=1, max_size=3))
def test_keyset_parse_accepts_only_its_own_encoding(
    generated: GeneratedKeyset, position: int, junk: bytes
) -> None:
    data = generated.keyset.raw
    position %= len(data)
    mutated = data[:position] + junk + data[position + 1 :]
    try:
        parsed = Keyset.parse(mutated)
    except FormatError:
        return
    assert parsed.encode() == mutated


@settings(max_examples=100)
@given(unique_entries(), unique_entries())
def test_diff_then_apply_gives_the_new_content(
    old_entries: list[Entry], new_entries: list[Entry]
) -> None:
    old = sorted(e.line() for e in old_entries)
    new = sorted(e.line() for e in new_entries)
    delta = delta_between(old, new)
    checker = DeltaDigest()
    for line in delta:
        checker.add(line)
    assert list(apply_delta(old, delta)) == new
    content = ContentDigest()
    for line in new:
        content.add(line)
    assert content.count == len(new)


@settings(max_examples=100)
@given(entries())
def test_entry_line_round_trip(entry: Entry) -> None:
    assert parse_entry(entry.line(), 1) == entry


def _every_single_byte_change(data: bytes) -> Iterator[bytes]:
    """Each position, changed to a few values: a flipped bit, LF, space, NUL, a high byte."""
    for position, original in enumerate(data):
        for byte in {original ^ 0x01, original ^ 0x20, 0x0A, 0x20, 0x00, 0xFF} - {original}:
            yield data[:position] + bytes([byte]) + data[position + 1 :]


def test_exhaustive_single_byte_changes_to_one_manifest_and_one_keyset() -> None:
    """Not a sample: every byte of one real manifest and one real keyset."""
    other = key_from_seed(bytes(range(1, 33)))
    keyset = make_keyset([PUBLISHER, other], root_threshold=2)
    document = sign_document("keyset", keyset.raw, 1, [PUBLISHER, other])
    held = verify_keyset(document.data, document.signatures, None, agency=keyset.agency)
    manifest = make_manifest(held, version=4, removes=2).encode()
    manifest_sigs = [sign(PUBLISHER, manifest)]
    assert verify_manifest(manifest, manifest_sigs, held).version == 4
    tried = 0
    for changed in _every_single_byte_change(manifest):
        tried += 1
        try:
            verify_manifest(changed, manifest_sigs, held)
        except VerificationError:
            continue
        raise AssertionError(f"changed manifest verified: {changed!r}")
    for changed in _every_single_byte_change(document.data):
        tried += 1
        try:
            verify_keyset(changed, document.signatures, None, agency=keyset.agency)
        except VerificationError:
            continue
        raise AssertionError(f"changed keyset verified: {changed!r}")
    assert tried > 5 * (len(manifest) + len(document.data))
