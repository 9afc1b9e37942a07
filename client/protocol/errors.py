"""The one exception tree of the Hashex protocol library.

Callers must be able to tell *bad input* (a person or a program handed us
something malformed: fix it and try again) apart from *failed verification*
(bytes that claim to come from an agency but do not prove it: a security
event).  Everything raised by ``client.protocol`` and ``client.trust`` is one
of these::

    HashexError
    ├── InputError                  bad user input: files, arguments, key files
    │   ├── EntryInputError         lines of a user's hash list (all problems, numbered)
    │   └── KeyFileError            a key or keyset file that cannot be used
    └── VerificationError           received bytes that are not what was signed
        ├── SignatureError          signatures do not reach the threshold
        │   ├── BadSignatureError   a known key's signature does not verify
        │   ├── UnknownKeyError     only keys outside the trusted keyset signed
        │   ├── ThresholdError      too few distinct trusted keys signed
        │   └── TooManySignaturesError  more signatures than a verifier reads
        ├── FormatError             not canonical: wrong line, order, encoding
        │   ├── WrongKindError      a manifest offered as a keyset, or the reverse
        │   └── EntryFormatError    a wire entry or delta line (with its line number)
        ├── DigestMismatchError     bytes whose SHA-256 differs from the signed one
        ├── DeltaApplyError         a delta that does not apply to the content it follows
        ├── ChainError              versions, parents, set or agency that do not link
        ├── SizeLimitError          more bytes than the document or a limit allows
        └── ExpiredError            a document past its ``expires`` time

``InputError`` also derives from ``ValueError`` so generic code that guards
against bad values catches it.  Every message names what is wrong and, where
there is one, the line number and the expected form.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class HashexError(Exception):
    """Root of every error the protocol library raises."""


class InputError(HashexError, ValueError):
    """User input that cannot be used as given."""


@dataclass(frozen=True)
class LineProblem:
    """One bad line of a user's input: where it is and what is wrong."""

    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


class EntryInputError(InputError):
    """A user's hash list has bad lines; ``problems`` lists every one found."""

    def __init__(self, problems: Sequence[LineProblem], source: str = "input") -> None:
        self.problems = list(problems)
        self.source = source
        shown = "\n".join(f"  {source}: {p}" for p in self.problems[:20])
        more = len(self.problems) - 20
        tail = f"\n  ... and {more} more" if more > 0 else ""
        super().__init__(f"{len(self.problems)} bad line(s) in {source}:\n{shown}{tail}")


class KeyFileError(InputError):
    """A key, signature or keyset file that is unreadable or of the wrong kind."""


class VerificationError(HashexError):
    """Bytes that do not prove what they claim; never repaired, never skipped."""


class SignatureError(VerificationError):
    """The signatures on a document do not reach its threshold."""


class BadSignatureError(SignatureError):
    """A signature by a trusted key does not verify over the exact bytes."""


class UnknownKeyError(SignatureError):
    """No signature came from a key of the trusted keyset."""


class ThresholdError(SignatureError):
    """Fewer distinct trusted keys signed than the threshold asks for."""


class TooManySignaturesError(SignatureError):
    """More signatures than the verifier's cap; refused before any is checked."""


class FormatError(VerificationError):
    """A signed document or wire line that is not in canonical form."""


class WrongKindError(FormatError):
    """A document of another kind than the one the verifier was asked for."""


class EntryFormatError(FormatError):
    """A wire entry or delta line that is not canonical, with its line number."""

    def __init__(self, line: int, message: str) -> None:
        self.line = line
        self.reason = message
        super().__init__(f"line {line}: {message}")


class DigestMismatchError(VerificationError):
    """Bytes whose SHA-256 is not the one the signed manifest names."""


class DeltaApplyError(VerificationError):
    """A delta that removes an absent line or adds an identity already present."""


class ChainError(VerificationError):
    """A document that does not link to what is already verified."""


class SizeLimitError(VerificationError):
    """A response or stream larger than what was promised or what a limit allows."""


class ExpiredError(VerificationError):
    """A document whose ``expires`` time has passed."""
