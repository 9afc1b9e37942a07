"""Free text that people type: titles, names, reasons, notes.

One rule for every such field, checked by the request schemas and again by
the services (which the admin CLI calls directly), before anything reaches
a database: a value holds no control or format characters and is at most
so many characters long.  Control characters would forge lines in a log or
a terminal table, a NUL is stored by SQLite but refused by PostgreSQL (so
the same request would get two answers), lone surrogates cannot be encoded
at all, and bidirectional overrides make one text read as another.  Refused
values are named, with the position of the first bad character.
"""

from __future__ import annotations

import unicodedata

from server.errors import InvalidFieldError

MAX_TITLE_LENGTH = 200
MAX_NAME_LENGTH = 200

# Unicode categories refused anywhere in a text field: controls (Cc: C0, DEL,
# C1), format characters (Cf: bidirectional overrides, zero-width joiners),
# surrogates (Cs), and the line and paragraph separators (Zl, Zp).
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


def text_problem(value: str, *, max_length: int, required: bool) -> str | None:
    """Why ``value`` cannot be stored as a text field, or None if it can."""
    if len(value) > max_length:
        return f"must be at most {max_length} characters (got {len(value)})"
    for position, character in enumerate(value):
        if unicodedata.category(character) in _REFUSED_CATEGORIES:
            return (
                f"must not contain control or format characters "
                f"(U+{ord(character):04X} at position {position})"
            )
    if required and not value.strip():
        return "must not be empty"
    return None


def check_text(field: str, value: str, *, max_length: int, required: bool = True) -> str:
    """``value`` without surrounding spaces, or InvalidFieldError naming ``field``."""
    problem = text_problem(value, max_length=max_length, required=required)
    if problem is not None:
        raise InvalidFieldError.one(field, problem)
    return value.strip()
