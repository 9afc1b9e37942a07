"""Errors of the client beyond the protocol's, and the exit code of each.

The protocol library's tree (``client.protocol.errors``) covers bad input and
failed verification; the client adds what the network and the clock do::

    HashexError                         (client.protocol.errors)
    ├── InputError                      exit 2: bad flags, files, settings
    ├── VerificationError               exit 3: the hub served something unsigned
    │   └── ResponseError               a response that contradicts the request
    │       │                           (wrong content type, too large, bad JSON)
    │       └── RollbackError           the hub offers less than we already hold
    ├── HubError                        exit 4: the hub cannot be used
    │   ├── HubUnreachableError         connection, TLS or timeout failure
    │   └── HubRefusedError             401, 403, 404, 409, 422, 5xx... with its problem
    └── StaleError                      exit 5: data is past its expiry

When several apply, 3 wins over 4 over 5 over 2 (``exit_code_for``).
"""

from __future__ import annotations

from collections.abc import Iterable

from client.protocol.errors import HashexError, InputError, VerificationError

EXIT_OK = 0
EXIT_NO_MATCH = 1
EXIT_USAGE = 2
EXIT_VERIFICATION = 3
EXIT_HUB = 4
EXIT_STALE = 5

# Lower index wins when several outcomes apply at once.
_PRECEDENCE = (EXIT_VERIFICATION, EXIT_HUB, EXIT_STALE, EXIT_USAGE)


class ResponseError(VerificationError):
    """A hub response that contradicts the request: never used, never skipped."""


class RollbackError(ResponseError):
    """The hub offers an older version than the one already verified here."""


class HubError(HashexError):
    """The hub cannot be used right now; the local store stays as it was."""


class HubUnreachableError(HubError):
    """No answer: connection refused, TLS failure, timeout."""


class HubRefusedError(HubError):
    """The hub answered with an error; ``problem_type`` is its stable cause."""

    def __init__(self, status: int, problem_type: str, detail: str) -> None:
        self.status = status
        self.problem_type = problem_type
        self.detail = detail
        super().__init__(f"hub refused ({status} {problem_type}): {detail}")


class StaleError(HashexError):
    """Data past its ``expires``: kept usable, never reported as fresh."""


def exit_code(error: BaseException) -> int:
    """The exit code one error stands for."""
    if isinstance(error, VerificationError):
        return EXIT_VERIFICATION
    if isinstance(error, HubError):
        return EXIT_HUB
    if isinstance(error, StaleError):
        return EXIT_STALE
    if isinstance(error, InputError):
        return EXIT_USAGE
    raise TypeError(f"no exit code for {type(error).__name__}")


def exit_code_for(codes: Iterable[int]) -> int:
    """Combine the outcomes of several sets: 3 over 4 over 5 over 2, else 0."""
    present = set(codes)
    for code in _PRECEDENCE:
        if code in present:
            return code
    return EXIT_OK
