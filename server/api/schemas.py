"""Marshmallow schemas: they validate every request and describe every answer.

The OpenAPI document (``/v1/openapi.json``) is generated from these same
classes, so what the hub checks and what it documents cannot drift apart.
"""

from __future__ import annotations

from typing import Any

from flask import Request
from marshmallow import Schema, ValidationError, fields, validate

from client.protocol.names import SLUG_RE
from server.errors import BadRequestError

# Versions and row ids are 32-bit integers on every database.
MAX_ID = 2**31 - 1
SET_NAME_PATTERN = rf"^{SLUG_RE.pattern}/{SLUG_RE.pattern}$"
READER_PATTERN = rf"^(group:)?{SLUG_RE.pattern}$"


class CreateSetSchema(Schema):
    """Body of ``POST /v1/sets``."""

    name = fields.String(
        required=True,
        validate=validate.Regexp(SET_NAME_PATTERN, error="must be <agency>/<set> (slugs)"),
        metadata={"description": "<agency>/<set>; the agency must be the caller's own"},
    )
    title = fields.String(load_default="", validate=validate.Length(max=200))


class GrantsSchema(Schema):
    """Body of ``PUT /v1/sets/{agency}/{set}/grants``: the complete list of readers."""

    readers = fields.List(
        fields.String(
            validate=validate.Regexp(READER_PATTERN, error="must be <agency> or group:<slug>")
        ),
        required=True,
        validate=validate.Length(max=500),
    )


class AfterQuerySchema(Schema):
    """``?after=N``: only items newer than N."""

    after = fields.Integer(load_default=0, validate=validate.Range(min=0, max=MAX_ID))


class PageQuerySchema(AfterQuerySchema):
    """``?after=N&limit=L``: a page of items newer than N."""

    limit = fields.Integer(load_default=100, validate=validate.Range(min=1, max=1000))


class SetSchema(Schema):
    """A set as the caller sees it; ``grants`` appears for its owner's agency only."""

    name = fields.String(required=True)
    owner = fields.String(required=True)
    title = fields.String(required=True)
    latest_version = fields.Integer(
        required=True, metadata={"description": "0 until the first version is published"}
    )
    created_at = fields.String(required=True)
    grants = fields.List(fields.String(), metadata={"description": "owner only"})


class SetListSchema(Schema):
    """``GET /v1/sets``."""

    sets = fields.List(fields.Nested(SetSchema), required=True)


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
    keyset = fields.String(required=True)
    signatures = fields.List(fields.Nested(SignatureSchema), required=True)


class KeysetListSchema(Schema):
    """``GET /v1/agencies/{agency}/keysets``."""

    keysets = fields.List(fields.Nested(KeysetObjectSchema), required=True)


class AuditEventSchema(Schema):
    """One audit event with its chain hashes."""

    id = fields.Integer(required=True)
    at = fields.String(required=True)
    actor = fields.String(required=True)
    actor_agency = fields.String(allow_none=True)
    action = fields.String(required=True)
    target = fields.String(allow_none=True)
    subject_agency = fields.String(allow_none=True)
    remote_addr = fields.String(allow_none=True)
    outcome = fields.String(required=True)
    detail = fields.Dict(required=True)
    prev_hash = fields.String(required=True)
    hash = fields.String(required=True)


class AuditListSchema(Schema):
    """``GET /v1/audit``."""

    events = fields.List(fields.Nested(AuditEventSchema), required=True)


class VersionObjectSchema(Schema):
    """One published version: the manifest's exact text and its signatures."""

    version = fields.Integer(required=True)
    manifest = fields.String(required=True)
    signatures = fields.List(fields.Nested(SignatureSchema), required=True)


class VersionListSchema(Schema):
    """``GET /v1/sets/{agency}/{set}/versions``."""

    versions = fields.List(fields.Nested(VersionObjectSchema), required=True)


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


class StatusSchema(Schema):
    """``GET /v1/health`` and ``/v1/ready``."""

    status = fields.String(required=True)


class ProblemSchema(Schema):
    """An RFC 9457 problem; ``errors`` maps fields to messages on a 400."""

    type = fields.String(required=True)
    title = fields.String(required=True)
    status = fields.Integer(required=True)
    detail = fields.String(required=True)
    errors = fields.Dict()


def load_json(schema: Schema, request: Request) -> dict[str, Any]:
    """Validate the request's JSON body; 400 naming each bad field otherwise."""
    if not request.is_json:
        raise BadRequestError("expected a JSON body (Content-Type: application/json)")
    body = request.get_json(silent=True)
    if body is None:
        raise BadRequestError("the body is not valid JSON")
    return _load(schema, body, "body")


def load_query(schema: Schema, request: Request) -> dict[str, Any]:
    """Validate the query string; 400 naming each bad parameter otherwise."""
    return _load(schema, request.args.to_dict(), "query")


def _load(schema: Schema, data: Any, where: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise BadRequestError(f"the {where} must be a JSON object")
    try:
        loaded: dict[str, Any] = schema.load(data)
    except ValidationError as exc:
        messages = exc.normalized_messages()  # type: ignore[no-untyped-call]
        names = ", ".join(sorted(str(name) for name in messages))
        raise BadRequestError(f"invalid {where} field(s): {names}", errors=messages) from None
    return loaded
