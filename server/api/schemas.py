"""Marshmallow schemas: they validate every request and render every answer.

Request schemas load what clients send; response schemas dump the hub's
domain objects (set views, version and keyset rows, audit events, tokens)
into exactly the JSON that goes on the wire, and the OpenAPI document
(``/v1/openapi.json``) is generated from these same classes.  So what the
hub checks, what it sends and what it documents cannot drift apart.  The
admin CLI prints its ``--json`` output with them too.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from marshmallow import Schema, ValidationError, fields, post_dump, validate

from client.protocol.names import SLUG_RE
from server.services.text import MAX_TITLE_LENGTH, text_problem

# Versions and row ids are 32-bit integers on every database.
MAX_ID = 2**31 - 1
SET_NAME_PATTERN = rf"^{SLUG_RE.pattern}/{SLUG_RE.pattern}$"
READER_PATTERN = rf"^(group:)?{SLUG_RE.pattern}$"
# The times of the signed documents: RFC 3339, UTC, whole seconds.
SECONDS = "%Y-%m-%dT%H:%M:%SZ"
# Audit events keep microseconds: the chain hashes them exactly.
MICROSECONDS = "%Y-%m-%dT%H:%M:%S.%fZ"


class StrictSchema(Schema):
    """A request schema: unknown fields are refused (marshmallow's default), never dropped."""


def _text(max_length: int, *, required: bool) -> Callable[[str], None]:
    """A validator of free text: the hub's one rule (no control characters, a length cap)."""

    def check(value: str) -> None:
        problem = text_problem(value, max_length=max_length, required=required)
        if problem is not None:
            raise ValidationError(problem)

    return check


def _unique(values: Sequence[str]) -> None:
    """A validator of a list whose items must each appear once."""
    seen: set[str] = set()
    for value in values:
        if value in seen:
            raise ValidationError(f"{value!r} is listed twice")
        seen.add(value)


class Timestamp(fields.Field):  # type: ignore[type-arg]
    """A UTC time written with a fixed strftime pattern (an RFC 3339 date-time on the wire).

    Marshmallow's DateTime with a custom format documents no format at all;
    this field is mapped to ``string``/``date-time`` in the OpenAPI document
    (:func:`server.api.openapi.build_spec`) and carries the exact pattern.
    """

    def __init__(self, pattern: str, **kwargs: Any) -> None:
        fraction = r"\.\d{6}" if "%f" in pattern else ""
        regex = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}" + fraction + "Z$"
        super().__init__(metadata={"pattern": regex}, **kwargs)
        self.pattern = pattern

    def _serialize(self, value: Any, attr: str | None, obj: Any, **kwargs: Any) -> str | None:
        return None if value is None else str(value.strftime(self.pattern))


# -- Requests -------------------------------------------------------------------


class CreateSetSchema(StrictSchema):
    """Body of ``POST /v1/sets``."""

    name = fields.String(
        required=True,
        validate=validate.Regexp(SET_NAME_PATTERN, error="must be <agency>/<set> (slugs)"),
        metadata={"description": "<agency>/<set>; the agency must be the caller's own"},
    )
    title = fields.String(
        load_default="",
        validate=_text(MAX_TITLE_LENGTH, required=False),
        metadata={
            "description": f"at most {MAX_TITLE_LENGTH} characters, no control characters",
            "maxLength": MAX_TITLE_LENGTH,
        },
    )


class GrantsSchema(StrictSchema):
    """Body of ``PUT /v1/sets/{agency}/{set}/grants``: the complete list of readers."""

    readers = fields.List(
        fields.String(
            validate=validate.Regexp(READER_PATTERN, error="must be <agency> or group:<slug>")
        ),
        required=True,
        validate=[validate.Length(max=500), _unique],
        metadata={"uniqueItems": True},
    )


class QueryNumber(fields.Integer):
    """A whole number in a query string, spelled in ASCII digits only.

    Python's ``int`` also reads ``1_0``, `` 1`` and other scripts' digits:
    one number would have many spellings, and caches many keys.
    """

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> int:
        if not isinstance(value, str) or not re.fullmatch(r"0|[1-9][0-9]{0,9}", value):
            raise ValidationError("must be a whole number in decimal digits, without a sign")
        return int(value)


class AfterQuerySchema(StrictSchema):
    """``?after=N``: only items newer than N."""

    after = QueryNumber(load_default=0, validate=validate.Range(min=0, max=MAX_ID))


class PageQuerySchema(AfterQuerySchema):
    """``?after=N&limit=L``: a page of items newer than N."""

    limit = QueryNumber(load_default=100, validate=validate.Range(min=1, max=1000))


class PublishSchema(Schema):
    """The multipart parts of a publish."""

    manifest = fields.String(required=True, metadata={"description": "the manifest text"})
    signatures = fields.String(
        required=True, metadata={"description": 'JSON array of {"keyid", "sig"}'}
    )
    delta = fields.Raw(
        required=True,
        metadata={"type": "string", "format": "binary", "description": "the delta bytes"},
    )


# -- Responses ------------------------------------------------------------------


class SetSchema(Schema):
    """A set as the caller sees it; ``grants`` appears for its owner's agency only."""

    name = fields.String(required=True)
    owner = fields.String(required=True)
    title = fields.String(required=True)
    latest_version = fields.Integer(
        required=True, metadata={"description": "0 until the first version is published"}
    )
    created_at = Timestamp(SECONDS, required=True)
    grants = fields.List(fields.String(), metadata={"description": "owner only"})

    @post_dump
    def _owner_only_grants(self, data: dict[str, Any], **_kwargs: Any) -> dict[str, Any]:
        if data.get("grants") is None:
            data.pop("grants", None)
        return data


class ListedSetSchema(SetSchema):
    """A set in the poll's listing."""

    keyset = fields.Integer(
        required=True,
        metadata={
            "description": "the newest keyset version of the set's owner: a client fetches "
            "keysets only when this is above the newest it holds"
        },
    )


class SetListSchema(Schema):
    """``GET /v1/sets``: the poll."""

    sets = fields.List(fields.Nested(ListedSetSchema), required=True)


class GrantsResultSchema(Schema):
    """Answer of a grants update."""

    name = fields.String(required=True)
    readers = fields.List(fields.String(), required=True)


class SignatureSchema(Schema):
    """A detached Ed25519 signature."""

    keyid = fields.String(required=True)
    sig = fields.String(required=True, metadata={"description": "padded base64, 64 bytes"})


class KeysetObjectSchema(Schema):
    """One signed keyset: its exact text and signatures."""

    version = fields.Integer(required=True)
    keyset = fields.String(required=True, attribute="body")
    signatures = fields.List(
        fields.Nested(SignatureSchema), required=True, attribute="signature_list"
    )


class KeysetListSchema(Schema):
    """``GET /v1/agencies/{agency}/keysets``."""

    keysets = fields.List(fields.Nested(KeysetObjectSchema), required=True)


class VersionObjectSchema(Schema):
    """One published version: the manifest's exact text and its signatures."""

    version = fields.Integer(required=True)
    manifest = fields.String(required=True)
    signatures = fields.List(
        fields.Nested(SignatureSchema), required=True, attribute="signature_list"
    )


class VersionListSchema(Schema):
    """``GET /v1/sets/{agency}/{set}/versions``."""

    versions = fields.List(fields.Nested(VersionObjectSchema), required=True)


class AuditEventSchema(Schema):
    """One audit event with its chain hashes."""

    id = fields.Integer(required=True)
    at = Timestamp(MICROSECONDS, required=True)
    actor = fields.String(required=True)
    actor_agency = fields.String(required=True, allow_none=True)
    action = fields.String(required=True)
    target = fields.String(required=True, allow_none=True)
    subject_agency = fields.String(required=True, allow_none=True)
    remote_addr = fields.String(required=True, allow_none=True)
    outcome = fields.String(required=True)
    detail = fields.Dict(required=True, attribute="detail_object")
    prev_hash = fields.String(required=True)
    hash = fields.String(required=True)


class AuditListSchema(Schema):
    """``GET /v1/audit``."""

    events = fields.List(fields.Nested(AuditEventSchema), required=True)


class KeysetSummarySchema(Schema):
    """An agency's newest keyset, named by version and digest."""

    version = fields.Integer(required=True)
    sha256 = fields.String(required=True)
    expires_at = Timestamp(SECONDS, required=True)


class AgencySchema(Schema):
    """An agency with its newest keyset (``hashex-server agency list --json``)."""

    slug = fields.String(required=True)
    name = fields.String(required=True)
    created_at = Timestamp(SECONDS, required=True)
    keyset = fields.Nested(KeysetSummarySchema, required=True)


class TokenSchema(Schema):
    """A token as its managers see it: never its secret."""

    id = fields.Integer(required=True)
    agency = fields.String(required=True)
    role = fields.String(required=True)
    name = fields.String(required=True, allow_none=True)
    created_at = Timestamp(SECONDS, required=True)
    expires_at = Timestamp(SECONDS, required=True, allow_none=True)
    revoked_at = Timestamp(SECONDS, required=True, allow_none=True)
    last_used_at = Timestamp(SECONDS, required=True, allow_none=True)


class StatusSchema(Schema):
    """``GET /v1/health`` and ``/v1/ready``."""

    status = fields.String(required=True)


class ProblemSchema(Schema):
    """An RFC 9457 problem, with every extension member the hub may add."""

    type = fields.String(required=True, metadata={"description": "the cause, stable"})
    title = fields.String(required=True)
    status = fields.Integer(required=True)
    detail = fields.String(required=True)
    errors = fields.Dict(
        keys=fields.String(),
        metadata={"description": "invalid-field, bad-request: each bad field with its messages"},
    )
    field = fields.String(metadata={"description": "the (first) field or part at fault"})
    readers = fields.List(
        fields.String(), metadata={"description": "unknown-reader: the readers not known"}
    )
    line = fields.Integer(metadata={"description": "the line of the delta at fault"})
    limit = fields.Integer(metadata={"description": "too-large: the limit, in bytes"})
