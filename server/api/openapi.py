"""``/v1/openapi.json``: the OpenAPI 3 document, generated from the schemas.

Request and response bodies are the marshmallow classes of
:mod:`server.api.schemas`, the ones the views validate with.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Blueprint, Response

from client.protocol.names import SLUG_RE
from server.api import schemas
from server.api.responses import json_response
from server.errors import PROBLEM_CONTENT_TYPE

bp = Blueprint("openapi", __name__, url_prefix="/v1")

_PROBLEM = {"content": {PROBLEM_CONTENT_TYPE: {"schema": "Problem"}}}
_VERSION = {
    "name": "version",
    "in": "path",
    "required": True,
    "schema": {"type": "integer", "minimum": 1, "maximum": schemas.MAX_ID},
}
_SLUG = {"type": "string", "pattern": f"^{SLUG_RE.pattern}$"}
_SET_PATH = [
    {"name": "agency", "in": "path", "required": True, "schema": _SLUG},
    {"name": "set", "in": "path", "required": True, "schema": _SLUG},
]
# What each refusal means, said once for the whole document.
_REFUSALS = {
    400: "a malformed request: bad query parameters, a body that does not parse",
    401: "no token, or a malformed, expired or revoked one",
    403: "a valid token whose role does not allow this",
    404: "no such resource, or one the token may not see",
    409: "the request conflicts with the current state",
    412: "If-Match does not match the current ETag",
    413: "a body over its limit (the problem names it)",
    415: "a body of another media type than the endpoint takes",
    422: "a well-formed body or document the hub refuses (the problem type says why)",
    405: "a method the resource does not support",
    408: "the request did not arrive in time",
    414: "a request line over the limit",
    417: "an Expect header other than 100-continue",
    431: "request headers over the limits",
    501: "a transfer coding the hub does not implement",
    503: "the hub cannot reach its database",
}
# Refusals any request may meet before its endpoint sees it.
_ANY_REQUEST = (400, 405, 408, 414, 417, 431, 501)
_NOT_MODIFIED: dict[int | str, Any] = {
    304: {"description": "not modified (If-None-Match matched the ETag)"}
}


def _problems(*statuses: int) -> dict[int | str, Any]:
    return {status: {"description": _REFUSALS[status], **_PROBLEM} for status in statuses}


def _ok(schema: Any, description: str, *refusals: int, status: int = 200) -> dict[int | str, Any]:
    answers: dict[int | str, Any] = {
        status: {"description": description, "content": {"application/json": {"schema": schema}}}
    }
    if status == 200:
        answers.update(_NOT_MODIFIED)
    return answers | _problems(*sorted({*refusals, *_ANY_REQUEST}))


def _entries(description: str) -> dict[int | str, Any]:
    return {
        200: {
            "description": description + " (gzip when asked; strong ETag per encoding)",
            "content": {"text/plain; charset=us-ascii": {"schema": {"type": "string"}}},
        },
        **_NOT_MODIFIED,
        **_problems(401, 404, *_ANY_REQUEST),
    }


def _body(schema: Any) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _query(schema: Any) -> list[dict[str, Any]]:
    return [{"in": "query", "schema": schema}]


@cache
def build_spec() -> dict[str, Any]:
    """The OpenAPI document of the hub's API."""
    plugin = MarshmallowPlugin()
    spec = APISpec(
        title="Hashex hub",
        version="1",
        openapi_version="3.0.3",
        plugins=[plugin],
        info={"description": "Signed, versioned hash sets shared between agencies."},
    )
    plugin.map_to_openapi_type(schemas.Timestamp, "string", "date-time")  # type: ignore[no-untyped-call]
    spec.components.security_scheme("bearer", {"type": "http", "scheme": "bearer"})
    spec.components.schema("Problem", schema=schemas.ProblemSchema)
    secured: dict[str, Any] = {"security": [{"bearer": []}]}
    spec.path(
        "/v1/health",
        operations={"get": {"responses": _ok(schemas.StatusSchema, "the process answers")}},
    )
    spec.path(
        "/v1/ready",
        operations={"get": {"responses": _ok(schemas.StatusSchema, "the database answers", 503)}},
    )
    spec.path(
        "/v1/sets",
        operations={
            "get": {**secured, "responses": _ok(schemas.SetListSchema, "readable sets", 401)},
            "post": {
                **secured,
                "requestBody": _body(schemas.CreateSetSchema),
                "responses": _ok(
                    schemas.SetSchema, "created", 400, 401, 403, 409, 413, 415, 422, status=201
                ),
            },
        },
    )
    spec.path(
        "/v1/sets/{agency}/{set}",
        parameters=_SET_PATH,
        operations={
            "get": {**secured, "responses": _ok(schemas.SetSchema, "set metadata", 401, 404)}
        },
    )
    spec.path(
        "/v1/sets/{agency}/{set}/grants",
        parameters=_SET_PATH,
        operations={
            "put": {
                **secured,
                "requestBody": _body(schemas.GrantsSchema),
                "responses": _ok(
                    schemas.GrantsResultSchema,
                    "the new readers",
                    400,
                    401,
                    403,
                    404,
                    412,
                    413,
                    415,
                    422,
                ),
            }
        },
    )
    versions = "/v1/sets/{agency}/{set}/versions"
    version_path = [*_SET_PATH, _VERSION]
    spec.path(
        versions,
        parameters=_SET_PATH,
        operations={
            "get": {
                **secured,
                "parameters": _query(schemas.PageQuerySchema),
                "responses": _ok(
                    schemas.VersionListSchema, "versions, oldest first", 400, 401, 404
                ),
            },
            "post": {
                **secured,
                "requestBody": {
                    "required": True,
                    "content": {"multipart/form-data": {"schema": schemas.PublishSchema}},
                },
                "responses": _ok(
                    schemas.VersionObjectSchema,
                    "published",
                    400,
                    401,
                    403,
                    404,
                    409,
                    413,
                    422,
                    status=201,
                ),
            },
        },
    )
    spec.path(
        versions + "/{version}",
        parameters=version_path,
        operations={
            "get": {
                **secured,
                "responses": _ok(schemas.VersionObjectSchema, "a version", 401, 404),
            }
        },
    )
    for kind in ("delta", "content"):
        spec.path(
            f"{versions}/{{version}}/{kind}",
            parameters=version_path,
            operations={"get": {**secured, "responses": _entries(f"the {kind} bytes")}},
        )
    spec.path(
        "/v1/cache/authorize",
        operations={
            "get": {
                **secured,
                "description": "nginx's auth_request for its cache of delta and content "
                "responses (docs/DEPLOY.md): whether the client's token may have the URL, "
                "audited as a download when it may. Not for clients.",
                "parameters": [
                    {"name": name, "in": "header", "required": True, "schema": {"type": "string"}}
                    for name in ("X-Hashex-Cache-Secret", "X-Original-URI", "X-Original-Method")
                ],
                "responses": {
                    204: {"description": "the cache may answer the request (audited)"},
                    **_problems(401),
                    403: {
                        "description": "anything else: no cache secret, not a delta or content "
                        "URL, or a version the token may not read",
                        **_PROBLEM,
                    },
                    **_problems(*_ANY_REQUEST),
                },
            }
        },
    )
    spec.path(
        "/v1/agencies/{agency}/keysets",
        parameters=[_SET_PATH[0]],
        operations={
            "get": {
                **secured,
                "parameters": _query(schemas.AfterQuerySchema),
                "responses": _ok(schemas.KeysetListSchema, "keysets, oldest first", 400, 401, 404),
            }
        },
    )
    spec.path(
        "/v1/audit",
        operations={
            "get": {
                **secured,
                "parameters": _query(schemas.PageQuerySchema),
                "responses": _ok(schemas.AuditListSchema, "audit events, oldest first", 400, 401),
            }
        },
    )
    document: dict[str, Any] = spec.to_dict()
    return document


@bp.get("/openapi.json")
def openapi() -> Response:
    """The OpenAPI document (no token needed: it holds no data)."""
    return json_response(build_spec())
