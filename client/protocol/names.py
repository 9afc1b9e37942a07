"""Agency and set names: slugs ``[a-z0-9][a-z0-9-]{0,62}``, sets ``<agency>/<set>``."""

from __future__ import annotations

import re

SLUG_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")


def check_slug(value: str, what: str = "slug") -> str:
    """Return ``value`` if it is a valid slug, else raise ValueError naming ``what``."""
    if not SLUG_RE.fullmatch(value):
        raise ValueError(f"{what} {value[:80]!r} must match [a-z0-9][a-z0-9-]{{0,62}}")
    return value


def check_set_name(value: str) -> tuple[str, str]:
    """Split ``<agency>/<set>`` into its two slugs, or raise ValueError."""
    agency, slash, set_slug = value.partition("/")
    if not slash:
        raise ValueError(f"set name {value[:80]!r} must be <agency>/<set>")
    return check_slug(agency, "agency"), check_slug(set_slug, "set")
