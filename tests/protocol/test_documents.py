"""Manifests and keysets: every non-canonical shape is refused, after a valid signature.

Each case edits the text of a valid document, signs the edited bytes with
the very key the verifier trusts, and expects a FormatError naming the cause:
the signature passes, so only the format can be what is refused.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from client.protocol import documents
from client.protocol.documents import (
    Keyset,
    Manifest,
    SignedDocument,
    sign_document,
    verify,
    verify_keyset,
    verify_manifest,
)
from client.protocol.errors import (
    BadSignatureError,
    FormatError,
    SignatureError,
    TooManySignaturesError,
    WrongKindError,
)
from client.protocol.keys import Signature, key_id, sign
from tests.protocol.factories import AGENCY, make_keyset, make_manifest, new_key
from tests.synthetic import UNSEEDED, random_hex

ROOT_1, ROOT_2 = sorted([new_key(), new_key()], key=key_id)
PUB_1, PUB_2 = sorted([new_key(), new_key()], key=key_id)
KEYSET = make_keyset([ROOT_1, ROOT_2], [PUB_1, PUB_2])
PIN = Keyset.from_root_key(AGENCY, ROOT_1.public_key())
MANIFEST_1 = make_manifest(KEYSET, version=1, adds=3).encode().decode()
MANIFEST_3 = make_manifest(KEYSET, version=3, adds=3, removes=2, count=10).encode().decode()
KEYSET_TEXT = KEYSET.raw.decode()

Edit = Callable[[str], str]


@dataclass(frozen=True)
class Case:
    id: str
    edit: Edit
    match: str
    error: type[FormatError] = FormatError


def lines_edit(change: Callable[[list[str]], None]) -> Edit:
    """Edit the list of lines (without the final empty one)."""

    def edit(text: str) -> str:
        lines = text.split("\n")[:-1]
        change(lines)
        return "\n".join(lines) + "\n"

    return edit


def swap(i: int, j: int) -> Edit:
    def change(lines: list[str]) -> None:
        lines[i], lines[j] = lines[j], lines[i]

    return lines_edit(change)


def drop(i: int) -> Edit:
    def change(lines: list[str]) -> None:
        del lines[i]

    return lines_edit(change)


def duplicate(i: int) -> Edit:
    return lines_edit(lambda lines: lines.insert(i, lines[i]))


def insert(i: int, line: str) -> Edit:
    return lines_edit(lambda lines: lines.insert(i, line))


def sub(pattern: str, replacement: str) -> Edit:
    """Replace the one match of ``pattern`` (multiline regex)."""

    def edit(text: str) -> str:
        new, count = re.subn(pattern, replacement, text, count=1, flags=re.MULTILINE)
        assert count == 1, f"{pattern!r} not found"
        return new

    return edit


def on_line(i: int, change: Callable[[str], str]) -> Edit:
    def apply(lines: list[str]) -> None:
        lines[i] = change(lines[i])

    return lines_edit(apply)


def sign_manifest(text: str) -> tuple[bytes, list[Signature]]:
    data = text.encode("latin-1")
    return data, [sign(PUB_1, data)]


# --- manifests ---------------------------------------------------------------

MANIFEST_CASES_V3 = [
    Case(
        "order-issued-expires",
        swap(6, 7),
        "manifest line 7: expected 'issued <UTC RFC 3339>', got 'expires ",
    ),
    Case(
        "order-set-version",
        swap(1, 2),
        "manifest line 2: expected 'set <agency>/<set>', got 'version 3'",
    ),
    Case(
        "order-delta-content",
        swap(4, 5),
        "manifest line 5: expected 'delta sha256:<hex> adds <count> removes <count>', "
        "got 'content ",
    ),
    Case("missing-set", drop(1), "manifest line 2: expected 'set <agency>/<set>', got 'version 3'"),
    Case(
        "missing-content",
        drop(5),
        "manifest line 6: expected 'content sha256:<hex> count <count>', got 'issued ",
    ),
    Case("missing-keyset", drop(8), "manifest line 9: missing; expected 'keyset <n> sha256:<hex>'"),
    Case(
        "missing-header", drop(0), "manifest line 1: expected 'hashex-manifest/v1'", WrongKindError
    ),
    Case(
        "duplicated-header",
        duplicate(0),
        "manifest line 2: expected 'set <agency>/<set>', got 'hashex-manifest/v1'",
    ),
    Case(
        "duplicated-version",
        duplicate(2),
        "manifest line 4: expected 'parent 2 sha256:<hex>', got 'version 3'",
    ),
    Case("duplicated-last", duplicate(8), "manifest line 10: unexpected line 'keyset 1 sha256:"),
    Case(
        "extra-line-at-end",
        insert(9, "note hello"),
        "manifest line 10: unexpected line 'note hello'",
    ),
    Case(
        "extra-line-inside",
        insert(2, "title x"),
        "manifest line 3: expected 'version <n>', got 'title x'",
    ),
    Case("blank-line-at-end", lambda t: t + "\n", "manifest line 10: unexpected line ''"),
    Case(
        "blank-line-inside",
        insert(3, ""),
        "manifest line 4: expected 'parent 2 sha256:<hex>', got ''",
    ),
    Case(
        "crlf-everywhere",
        lambda t: t.replace("\n", "\r\n"),
        "line 1: ends with CR; lines must end with LF only",
    ),
    Case(
        "cr-on-one-line",
        on_line(2, lambda s: s + "\r"),
        "manifest: contains CR; lines must end with LF only",
    ),
    Case("trailing-space", on_line(2, lambda s: s + " "), "manifest line 3: trailing whitespace"),
    Case("trailing-tab", on_line(4, lambda s: s + "\t"), "manifest line 5: trailing whitespace"),
    Case(
        "trailing-space-last-line",
        on_line(8, lambda s: s + " "),
        "manifest line 9: trailing whitespace",
    ),
    Case(
        "leading-space",
        on_line(2, lambda s: " " + s),
        "manifest line 3: expected 'version <n>', got ' version 3'",
    ),
    Case(
        "double-space", sub(r"^version 3$", "version  3"), "manifest line 3: expected 'version <n>'"
    ),
    Case(
        "agency-uppercase",
        sub(r"^set example-unit/", "set Example-unit/"),
        "manifest line 2: agency 'Example-unit' must match",
    ),
    Case(
        "agency-leading-dash",
        sub(r"^set example-unit/", "set -example/"),
        "manifest line 2: agency '-example' must match",
    ),
    Case(
        "agency-underscore",
        sub(r"^set example-unit/", "set example_unit/"),
        "manifest line 2: agency 'example_unit' must match",
    ),
    Case(
        "set-underscore",
        sub(r"/known-files$", "/known_files"),
        "manifest line 2: set 'known_files' must match",
    ),
    Case(
        "set-too-long",
        sub(r"/known-files$", "/" + "s" * 64),
        "manifest line 2: set 's{64}' must match",
    ),
    Case("set-empty", sub(r"/known-files$", "/"), "manifest line 2: set '' must match"),
    Case(
        "set-three-parts",
        sub(r"/known-files$", "/known/files"),
        "manifest line 2: set 'known/files' must match",
    ),
    Case(
        "set-without-agency",
        sub(r"^set example-unit/known-files$", "set known-files"),
        "manifest line 2: set name 'known-files' must be <agency>/<set>",
    ),
    Case(
        "parent-0-none-on-v3",
        sub(r"^parent 2 sha256:[0-9a-f]+$", "parent 0 none"),
        "manifest line 4: expected 'parent 2 sha256:<hex>', got 'parent 0 none'",
    ),
    Case(
        "parent-version-too-low",
        sub(r"^parent 2 ", "parent 1 "),
        "manifest line 4: parent must be version 2, got 1",
    ),
    Case(
        "parent-version-too-high",
        sub(r"^parent 2 ", "parent 3 "),
        "manifest line 4: parent must be version 2, got 3",
    ),
    Case(
        "parent-leading-zero",
        sub(r"^parent 2 ", "parent 02 "),
        "manifest line 4: expected 'parent 2 sha256:<hex>'",
    ),
    Case(
        "version-leading-zero",
        sub(r"^version 3$", "version 03"),
        "manifest line 3: expected 'version <n>', got 'version 03'",
    ),
    Case(
        "version-zero",
        sub(r"^version 3$", "version 0"),
        "manifest line 3: version must be at least 1",
    ),
    Case(
        "version-negative",
        sub(r"^version 3$", "version -3"),
        "manifest line 3: expected 'version <n>'",
    ),
    Case(
        "version-plus", sub(r"^version 3$", "version +3"), "manifest line 3: expected 'version <n>'"
    ),
    Case(
        "version-too-many-digits",
        sub(r"^version 3$", "version 1" + "0" * 18),
        "manifest line 3: expected 'version <n>'",
    ),
    Case(
        "adds-leading-zero",
        sub(r" adds 3 ", " adds 03 "),
        "manifest line 5: expected 'delta sha256:<hex> adds <count> removes <count>'",
    ),
    Case(
        "removes-leading-zero",
        sub(r" removes 2$", " removes 002"),
        "manifest line 5: expected 'delta ",
    ),
    Case(
        "count-leading-zero",
        sub(r" count 10$", " count 010"),
        "manifest line 6: expected 'content sha256:<hex> count <count>'",
    ),
    Case(
        "keyset-leading-zero",
        sub(r"^keyset 1 ", "keyset 01 "),
        "manifest line 9: expected 'keyset <n> sha256:<hex>'",
    ),
    Case(
        "keyset-zero",
        sub(r"^keyset 1 ", "keyset 0 "),
        "manifest line 9: keyset version must be at least 1",
    ),
    Case(
        "digest-uppercase",
        on_line(4, lambda s: s.replace(s[13:77], s[13:77].upper())),
        "manifest line 5: expected 'delta sha256:<hex>",
    ),
    Case(
        "digest-short",
        on_line(5, lambda s: s.replace(s[15:79], s[15:78])),
        "manifest line 6: expected 'content sha256:<hex>",
    ),
    Case(
        "digest-other-algorithm",
        sub(r"^delta sha256:", "delta sha512:"),
        "manifest line 5: expected 'delta sha256:<hex>",
    ),
    Case(
        "expires-equals-issued",
        sub(r"^expires .*$", "expires 2026-03-01T12:00:00Z"),
        "manifest line 8: expires must be after issued",
    ),
    Case(
        "expires-before-issued",
        sub(r"^expires .*$", "expires 2026-03-01T11:59:59Z"),
        "manifest line 8: expires must be after issued",
    ),
    Case(
        "issued-feb-30",
        sub(r"^issued .*$", "issued 2026-02-30T12:00:00Z"),
        "manifest line 7: 2026-02-30T12:00:00Z is not a valid date and time",
    ),
    Case(
        "issued-month-13",
        sub(r"^issued .*$", "issued 2026-13-01T12:00:00Z"),
        "manifest line 7: 2026-13-01T12:00:00Z is not a valid date",
    ),
    Case(
        "issued-hour-24",
        sub(r"^issued .*$", "issued 2026-03-01T24:00:00Z"),
        "manifest line 7: 2026-03-01T24:00:00Z is not a valid date",
    ),
    Case(
        "issued-second-60",
        sub(r"^issued .*$", "issued 2026-03-01T12:00:60Z"),
        "manifest line 7: 2026-03-01T12:00:60Z is not a valid date",
    ),
    Case(
        "expires-feb-29-non-leap",
        sub(r"^expires .*$", "expires 2027-02-29T00:00:00Z"),
        "manifest line 8: 2027-02-29T00:00:00Z is not a valid date",
    ),
    Case(
        "issued-offset",
        sub(r"^issued (.*)Z$", r"issued \g<1>+00:00"),
        "manifest line 7: expected 'issued <UTC RFC 3339>'",
    ),
    Case(
        "issued-fraction",
        sub(r"^issued (.*)Z$", r"issued \g<1>.000Z"),
        "manifest line 7: expected 'issued <UTC RFC 3339>'",
    ),
    Case(
        "issued-lowercase-z",
        sub(r"^issued (.*)Z$", r"issued \g<1>z"),
        "manifest line 7: expected 'issued <UTC RFC 3339>'",
    ),
    Case(
        "issued-space-separator",
        sub(r"^issued (.*)T", r"issued \g<1> "),
        "manifest line 7: expected 'issued <UTC RFC 3339>'",
    ),
    Case(
        "non-ascii",
        sub(r"/known-files$", "/known-fil\xe9s"),
        f"manifest: byte {MANIFEST_3.index('known-files') + 9} is not ASCII",
    ),
    Case(
        "nul-byte", sub(r"^version 3$", "version 3\x00"), "manifest line 3: expected 'version <n>'"
    ),
    Case("missing-final-newline", lambda t: t[:-1], "manifest: must end with a newline"),
]

MANIFEST_CASES_V1 = [
    Case(
        "v1-parent-version",
        sub(r"^parent 0 none$", "parent 0 sha256:" + "0" * 64),
        "manifest line 4: expected 'parent 0 none'",
    ),
    Case(
        "v1-parent-1",
        sub(r"^parent 0 none$", "parent 1 none"),
        "manifest line 4: expected 'parent 0 none'",
    ),
    Case(
        "v1-removes",
        sub(r" removes 0$", " removes 1"),
        "manifest line 5: version 1 cannot remove entries",
    ),
    Case(
        "v1-count-above-adds",
        sub(r" count 3$", " count 4"),
        "manifest line 6: version 1 must count exactly its adds",
    ),
    Case(
        "v1-count-below-adds",
        sub(r" count 3$", " count 2"),
        "manifest line 6: version 1 must count exactly its adds",
    ),
]


def _manifest_cases() -> list[Any]:
    return [pytest.param(MANIFEST_3, c, id=c.id) for c in MANIFEST_CASES_V3] + [
        pytest.param(MANIFEST_1, c, id=c.id) for c in MANIFEST_CASES_V1
    ]


def test_base_manifests_verify() -> None:
    for text in (MANIFEST_1, MANIFEST_3):
        data, sigs = sign_manifest(text)
        assert verify_manifest(data, sigs, KEYSET).encode() == data


@pytest.mark.parametrize(("text", "case"), _manifest_cases())
def test_malformed_manifest_is_refused_after_a_good_signature(text: str, case: Case) -> None:
    edited = case.edit(text)
    assert edited != text
    data, sigs = sign_manifest(edited)
    with pytest.raises(case.error, match=case.match):
        verify_manifest(data, sigs, KEYSET)
    with pytest.raises(case.error, match=case.match):
        Manifest.parse(data)


def test_malformed_manifest_with_a_bad_signature_fails_on_the_signature_first() -> None:
    data = (MANIFEST_3 + "note hello\n").encode()
    with pytest.raises(BadSignatureError):
        verify_manifest(data, [sign(PUB_1, MANIFEST_3.encode())], KEYSET)


def test_manifest_reencoding_difference_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """If the encoder ever disagreed with the parser, the comparison would catch it."""
    data, sigs = sign_manifest(MANIFEST_3)
    monkeypatch.setattr(documents, "format_time", lambda moment: "2099-01-01T00:00:00Z")
    with pytest.raises(
        FormatError, match="manifest: not in canonical form \\(re-encoding differs\\)"
    ):
        verify_manifest(data, sigs, KEYSET)


def test_manifest_encode_parse_round_trip() -> None:
    manifest = Manifest.parse(MANIFEST_3.encode())
    assert manifest.encode().decode() == MANIFEST_3
    assert manifest.version == 3
    assert manifest.agency == AGENCY
    assert (manifest.adds, manifest.removes, manifest.count) == (3, 2, 10)


# --- keysets -----------------------------------------------------------------

# Lines of KEYSET_TEXT:
#  0 hashex-keyset/v1          5 root <k2> <b2>          9 expires ...
#  1 agency example-unit       6 publish-threshold 1
#  2 version 1                 7 publish <p1> <b1>
#  3 root-threshold 1          8 publish <p2> <b2>
#  4 root <k1> <b1>
K1, K2 = key_id(ROOT_1), key_id(ROOT_2)
P1, P2 = key_id(PUB_1), key_id(PUB_2)


def _noncanonical_base64(line: str) -> str:
    """Flip the unused low bits of the last base64 digit: same bytes, other spelling."""
    role, kid, b64 = line.split(" ")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    last = alphabet.index(b64[42])
    spelled = b64[:42] + alphabet[last ^ 0b01] + "="
    assert base64.b64decode(spelled) == base64.b64decode(b64)
    return f"{role} {kid} {spelled}"


KEYSET_CASES = [
    Case("order-root-keys", swap(4, 5), f"keyset line 6: root key {K1} not sorted by key id"),
    Case("order-publish-keys", swap(7, 8), f"keyset line 9: publish key {P1} not sorted by key id"),
    Case(
        "order-agency-version",
        swap(1, 2),
        "keyset line 2: expected 'agency <slug>', got 'version 1'",
    ),
    Case(
        "order-thresholds",
        swap(3, 6),
        "keyset line 4: expected 'root-threshold <t>', got 'publish-threshold 1'",
    ),
    Case(
        "order-root-after-publish-keys",
        lines_edit(lambda ls: ls.insert(8, ls.pop(5))),
        "keyset line 9: expected 'expires <UTC RFC 3339>', got 'root ",
    ),
    Case(
        "order-root-after-publish-threshold",
        lines_edit(lambda ls: ls.insert(6, ls.pop(5))),
        "keyset: at least one publish key is required",
    ),
    Case("missing-agency", drop(1), "keyset line 2: expected 'agency <slug>', got 'version 1'"),
    Case(
        "missing-root-threshold",
        drop(3),
        "keyset line 4: expected 'root-threshold <t>', got 'root ",
    ),
    Case(
        "missing-root-keys",
        lines_edit(lambda ls: ls.__delitem__(slice(4, 6))),
        "keyset: at least one root key is required",
    ),
    Case(
        "missing-publish-threshold",
        drop(6),
        "keyset line 7: expected 'publish-threshold <t>', got 'publish ",
    ),
    Case(
        "missing-publish-keys",
        lines_edit(lambda ls: ls.__delitem__(slice(7, 9))),
        "keyset: at least one publish key is required",
    ),
    Case("missing-expires", drop(9), "keyset line 10: missing; expected 'expires <UTC RFC 3339>'"),
    Case("missing-header", drop(0), "keyset line 1: expected 'hashex-keyset/v1'", WrongKindError),
    Case("duplicated-root-line", duplicate(5), f"keyset line 7: root key {K2} repeated"),
    Case("duplicated-first-root-line", duplicate(4), f"keyset line 6: root key {K1} repeated"),
    Case("duplicated-publish-line", duplicate(7), f"keyset line 9: publish key {P1} repeated"),
    Case(
        "duplicated-version",
        duplicate(2),
        "keyset line 4: expected 'root-threshold <t>', got 'version 1'",
    ),
    Case("duplicated-expires", duplicate(9), "keyset line 11: unexpected line 'expires "),
    Case(
        "extra-line-at-end", insert(10, "comment x"), "keyset line 11: unexpected line 'comment x'"
    ),
    Case(
        "extra-line-after-roots",
        insert(6, "comment x"),
        "keyset line 7: expected 'publish-threshold <t>', got 'comment x'",
    ),
    Case(
        "extra-line-after-header",
        insert(1, "comment x"),
        "keyset line 2: expected 'agency <slug>', got 'comment x'",
    ),
    Case("blank-line-at-end", lambda t: t + "\n", "keyset line 11: unexpected line ''"),
    Case(
        "crlf-everywhere",
        lambda t: t.replace("\n", "\r\n"),
        "line 1: ends with CR; lines must end with LF only",
    ),
    Case(
        "cr-on-one-line",
        on_line(4, lambda s: s + "\r"),
        "keyset: contains CR; lines must end with LF only",
    ),
    Case("trailing-space", on_line(1, lambda s: s + " "), "keyset line 2: trailing whitespace"),
    Case(
        "trailing-space-key-line",
        on_line(5, lambda s: s + " "),
        "keyset line 6: trailing whitespace",
    ),
    Case(
        "trailing-space-last-line",
        on_line(9, lambda s: s + " "),
        "keyset line 10: trailing whitespace",
    ),
    Case(
        "agency-uppercase",
        sub(r"^agency .*$", "agency Example-unit"),
        "keyset line 2: agency 'Example-unit' must match",
    ),
    Case(
        "agency-underscore",
        sub(r"^agency .*$", "agency example_unit"),
        "keyset line 2: agency 'example_unit' must match",
    ),
    Case(
        "agency-leading-dash",
        sub(r"^agency .*$", "agency -example"),
        "keyset line 2: agency '-example' must match",
    ),
    Case(
        "agency-too-long",
        sub(r"^agency .*$", "agency " + "a" * 64),
        "keyset line 2: agency 'a{64}' must match",
    ),
    Case(
        "agency-with-slash",
        sub(r"^agency .*$", "agency example/unit"),
        "keyset line 2: agency 'example/unit' must match",
    ),
    Case(
        "version-leading-zero",
        sub(r"^version 1$", "version 01"),
        "keyset line 3: expected 'version <n>', got 'version 01'",
    ),
    Case(
        "version-zero",
        sub(r"^version 1$", "version 0"),
        "keyset line 3: version must be at least 1",
    ),
    Case(
        "root-threshold-zero",
        sub(r"^root-threshold 1$", "root-threshold 0"),
        "keyset: root-threshold 0 must be between 1 and the number of root keys \\(2\\)",
    ),
    Case(
        "root-threshold-above-keys",
        sub(r"^root-threshold 1$", "root-threshold 3"),
        "keyset: root-threshold 3 must be between 1 and the number of root keys \\(2\\)",
    ),
    Case(
        "root-threshold-leading-zero",
        sub(r"^root-threshold 1$", "root-threshold 01"),
        "keyset line 4: expected 'root-threshold <t>'",
    ),
    Case(
        "publish-threshold-zero",
        sub(r"^publish-threshold 1$", "publish-threshold 0"),
        "keyset: publish-threshold 0 must be between 1 and the number of publish keys \\(2\\)",
    ),
    Case(
        "publish-threshold-above-keys",
        sub(r"^publish-threshold 1$", "publish-threshold 3"),
        "keyset: publish-threshold 3 must be between 1 and the number of publish keys \\(2\\)",
    ),
    Case(
        "key-id-of-another-key",
        on_line(4, lambda s: s.replace(K1, K2)),
        f"keyset line 5: key id {K2} is not the SHA-256 of the key",
    ),
    Case(
        "key-id-random",
        on_line(7, lambda s: s.replace(P1, "0" * 64)),
        f"keyset line 8: key id {'0' * 64} is not the SHA-256 of the key",
    ),
    Case(
        "key-id-uppercase",
        on_line(4, lambda s: s.replace(K1, K1.upper())),
        "keyset line 5: expected 'root <keyid> <base64 of the raw public key>'",
    ),
    Case(
        "key-base64-noncanonical",
        on_line(4, _noncanonical_base64),
        "keyset line 5: key is not canonical base64",
    ),
    Case(
        "key-base64-unpadded",
        on_line(4, lambda s: s[:-1]),
        "keyset line 5: expected 'root <keyid> <base64 of the raw public key>'",
    ),
    Case(
        "key-base64-urlsafe",
        on_line(4, lambda s: s[:-2].replace("+", "-").replace("/", "_") + "-="),
        "keyset line 5: expected 'root <keyid>",
    ),
    Case(
        "key-missing-base64",
        on_line(4, lambda s: s.rsplit(" ", 1)[0]),
        "keyset line 5: expected 'root <keyid>",
    ),
    Case(
        "key-extra-field",
        on_line(4, lambda s: s + " extra"),
        "keyset line 5: expected 'root <keyid>",
    ),
    Case(
        "expires-feb-30",
        sub(r"^expires .*$", "expires 2026-02-30T12:00:00Z"),
        "keyset line 10: 2026-02-30T12:00:00Z is not a valid date and time",
    ),
    Case(
        "expires-offset",
        sub(r"^expires (.*)Z$", r"expires \g<1>+00:00"),
        "keyset line 10: expected 'expires <UTC RFC 3339>'",
    ),
    Case("non-ascii", sub(r"^agency .*$", "agency \xe9"), "keyset: byte 24 is not ASCII"),
    Case("missing-final-newline", lambda t: t[:-1], "keyset: must end with a newline"),
]


def sign_keyset_text(text: str) -> tuple[bytes, list[Signature]]:
    data = text.encode("latin-1")
    return data, [sign(ROOT_1, data), sign(ROOT_2, data)]


def test_base_keyset_verifies_with_the_pin() -> None:
    data, sigs = sign_keyset_text(KEYSET_TEXT)
    assert verify_keyset(data, sigs, PIN, agency=AGENCY).raw == data
    assert verify_keyset(data, sigs, None, agency=AGENCY).raw == data


@pytest.mark.parametrize("case", KEYSET_CASES, ids=[c.id for c in KEYSET_CASES])
def test_malformed_keyset_is_refused_after_a_good_signature(case: Case) -> None:
    edited = case.edit(KEYSET_TEXT)
    assert edited != KEYSET_TEXT
    data, sigs = sign_keyset_text(edited)
    # The pinned root signed these very bytes: the previous-root check passes first.
    with pytest.raises(case.error, match=case.match):
        verify_keyset(data, sigs, PIN, agency=AGENCY)
    with pytest.raises(case.error, match=case.match):
        Keyset.parse(data)


def test_malformed_keyset_with_a_bad_signature_fails_on_the_signature_first() -> None:
    data = (KEYSET_TEXT + "comment x\n").encode()
    with pytest.raises(BadSignatureError):
        verify_keyset(data, [sign(ROOT_1, KEYSET_TEXT.encode())], PIN, agency=AGENCY)


def test_keyset_reencoding_difference_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    data, sigs = sign_keyset_text(KEYSET_TEXT)
    monkeypatch.setattr(documents, "format_time", lambda moment: "2099-01-01T00:00:00Z")
    with pytest.raises(
        FormatError, match="keyset: not in canonical form \\(re-encoding differs\\)"
    ):
        verify_keyset(data, sigs, PIN, agency=AGENCY)


def test_keyset_too_large_is_refused_before_signatures() -> None:
    data = KEYSET_TEXT.encode() + b"x" * documents.MAX_DOCUMENT_BYTES
    with pytest.raises(FormatError, match="keyset: larger than 65536 bytes"):
        verify_keyset(data, [], PIN, agency=AGENCY)


def test_keyset_build_refuses_bad_thresholds() -> None:
    with pytest.raises(
        FormatError, match="root-threshold 2 must be between 1 and the number of root keys \\(1\\)"
    ):
        make_keyset([ROOT_1], root_threshold=2)
    with pytest.raises(FormatError, match="publish-threshold 0 must be between"):
        make_keyset([ROOT_1], publish_threshold=0)


def test_same_key_in_both_roles_is_allowed() -> None:
    keyset = make_keyset([ROOT_1])
    assert set(keyset.root_keys) == set(keyset.publish_keys) == {K1}


# --- kinds -------------------------------------------------------------------


def test_manifest_is_refused_as_a_keyset_and_keyset_as_a_manifest() -> None:
    manifest, msigs = sign_manifest(MANIFEST_3)
    keyset, ksigs = sign_keyset_text(KEYSET_TEXT)
    with pytest.raises(WrongKindError, match="expected a keyset, got a manifest"):
        verify("keyset", manifest, msigs + ksigs, PIN, agency=AGENCY)
    with pytest.raises(WrongKindError, match="expected a manifest, got a keyset"):
        verify("manifest", keyset, msigs + ksigs, KEYSET)
    with pytest.raises(WrongKindError, match="expected a keyset, got a manifest"):
        Keyset.parse(manifest)
    with pytest.raises(WrongKindError, match="expected a manifest, got a keyset"):
        Manifest.parse(keyset)


# --- SignedDocument (the API object and keyset file) ---------------------------


def _keyset_object() -> dict[str, Any]:
    return sign_document("keyset", KEYSET.raw, 1, [ROOT_1, ROOT_2]).to_json()


def test_signed_document_round_trip() -> None:
    document = sign_document("keyset", KEYSET.raw, 1, [ROOT_2, ROOT_1, ROOT_1])
    loaded = SignedDocument.loads("keyset", document.dumps())
    assert loaded == document
    assert [s.keyid for s in loaded.signatures] == sorted([K1, K2])
    assert verify_keyset(loaded.data, loaded.signatures, None, agency=AGENCY).raw == KEYSET.raw


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda o: o.update(extra=1), "exactly 'version', 'keyset' and 'signatures'"),
        (lambda o: o.pop("signatures"), "exactly 'version', 'keyset' and 'signatures'"),
        (
            lambda o: o.update(manifest=o.pop("keyset")),
            "exactly 'version', 'keyset' and 'signatures'",
        ),
        (lambda o: o.update(version=2), "'version' 2 differs from the text"),
        (lambda o: o.update(version="1"), "'version' must be a positive integer"),
        (lambda o: o.update(version=True), "'version' must be a positive integer"),
        (lambda o: o.update(version=0), "'version' must be a positive integer"),
        (lambda o: o.update(keyset=o["keyset"] + "\xe9"), "'keyset' must be ASCII text"),
        (lambda o: o.update(keyset=["x"]), "'keyset' must be ASCII text"),
        (lambda o: o.update(signatures={}), "signatures: expected a JSON array"),
    ],
)
def test_signed_document_object_is_strict(
    change: Callable[[dict[str, Any]], object], match: str
) -> None:
    obj = _keyset_object()
    change(obj)
    with pytest.raises(FormatError, match=match):
        SignedDocument.from_json("keyset", obj)


def test_signed_document_too_many_signatures_is_its_own_error() -> None:
    obj = _keyset_object()
    obj["signatures"] = obj["signatures"] * 9
    with pytest.raises(TooManySignaturesError):
        SignedDocument.loads("keyset", json.dumps(obj))


def test_signed_document_bad_json() -> None:
    with pytest.raises(FormatError, match="keyset object: not valid JSON"):
        SignedDocument.loads("keyset", "{")
    with pytest.raises(FormatError, match="keyset object: not valid JSON"):
        SignedDocument.loads("keyset", b"\xff\xfe")


def test_verify_dispatch_needs_trust() -> None:
    data, sigs = sign_manifest(MANIFEST_3)
    with pytest.raises(SignatureError, match="needs a trusted keyset"):
        verify("manifest", data, sigs, None)
    keyset, ksigs = sign_keyset_text(KEYSET_TEXT)
    with pytest.raises(TypeError, match="needs the agency"):
        verify("keyset", keyset, ksigs, PIN)
    assert isinstance(verify("keyset", keyset, ksigs, PIN, agency=AGENCY), Keyset)
    assert isinstance(verify("manifest", data, sigs, KEYSET), Manifest)


def test_random_parent_digest_is_kept() -> None:
    digest = random_hex(UNSEEDED, 64)
    text = re.sub(
        r"^parent 2 sha256:[0-9a-f]+$", f"parent 2 sha256:{digest}", MANIFEST_3, flags=re.M
    )
    assert Manifest.parse(text.encode()).parent_digest == digest
