"""Pinning an agency: what ``hashex trust add AGENCY FILE`` accepts.

FILE is one of: the agency's keyset 1 file (the JSON keyset object that
``keyset init`` wrote, obtained out of band), a root public key PEM of keyset
1, or such a key's id (64 hex characters, given in place of a file name).  A
keyset file must verify against its own root keys, for that agency, before
it is trusted; a key or key id acts as an implied keyset 0 holding that one
root key with threshold 1.  Later keysets are then verified forward, one
from the next, so every manifest of a set's history can be checked.
"""

from __future__ import annotations

import re
from pathlib import Path

from client.protocol.documents import SignedDocument, verify_keyset
from client.protocol.errors import InputError, VerificationError
from client.protocol.keys import key_id, load_public_key_pem, public_key_to_pem, read_public_key
from client.protocol.names import check_slug
from client.protocol.usertext import read_small_file
from client.store import Pin

_KEY_ID = re.compile(r"[0-9a-f]{64}")
# A keyset file is a few kilobytes, even with many keys and signatures.
MAX_KEYSET_FILE_BYTES = 1024 * 1024


def read_pin(agency: str, source: str) -> tuple[Pin, SignedDocument | None]:
    """The pin ``source`` stands for, and the keyset to store with it, if any."""
    try:
        check_slug(agency, "agency")
    except ValueError as exc:
        raise InputError(str(exc)) from None
    if _KEY_ID.fullmatch(source) and not Path(source).exists():
        return Pin(agency, "keyid", source), None
    path = Path(source)
    expected = "expected a keyset file, a root public key PEM or a 64-hex key id"
    try:
        data = read_small_file(path, MAX_KEYSET_FILE_BYTES)
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror}); {expected}") from None
    except ValueError as exc:
        raise InputError(f"{path}: {exc}; {expected}") from None
    if data.lstrip().startswith(b"{"):
        try:
            document = SignedDocument.loads("keyset", data)
            verify_keyset(document.data, document.signatures, None, agency=agency)
        except VerificationError as exc:
            raise InputError(f"{path}: not a valid keyset file of {agency}: {exc}") from None
        return Pin(agency, "keyset", document.dumps()), document
    key = read_public_key(path)
    return Pin(agency, "key", public_key_to_pem(key).decode("ascii")), None


def describe(pin: Pin) -> str:
    """One line saying what a pin trusts."""
    if pin.kind == "keyid":
        return f"root key id {pin.value}"
    if pin.kind == "key":
        return f"root key {key_id(load_public_key_pem(pin.value.encode()))}"
    return "keyset file"
