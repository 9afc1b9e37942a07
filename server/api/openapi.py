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

from server.api import schemas
from server.api.responses import json_response
from server.errors import PROBLEM_CONTENT_TYPE

bp = Blueprint("openapi", __name__, url_prefix="/v1")

_PROBLEM = {"content": {PROBLEM_CONTENT_TYPE: {"schema": "Problem"}}}
_VERSION = {
    "name": "version",
    "in": "path",
    "required": True,
    "schema": {"type": "integer", "minimum": 1},
}
_SET_PATH = [
    {"name": "agency", "in": "path", "required": True, "schema": {"type": "string"}},
    {"name": "set", "in": "path", "required": True, "schema": {"type": "string"}},
]


def _ok(schema: Any, description: str, status: int = 200) -> dict[int | str, Any]:
    return {
        status: {"description": description, "content": {"application/json": {"schema": schema}}},
        "4XX": {"description": "a problem (RFC 9457)", **_PROBLEM},
    }


def _entries(description: str) -> dict[int | str, Any]:
    return {
        200: {
            "description": description + " (gzip when asked; strong ETag per encoding)",
            "content": {"text/plain; charset=us-ascii": {"schema": {"type": "string"}}},
        },
        304: {"description": "not modified"},
        "4XX": {"description": "a problem (RFC 9457)", **_PROBLEM},
    }


def _body(schema: Any) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _query(schema: Any) -> list[dict[str, Any]]:
    return [{"in": "query", "schema": schema}]


@cache
def build_spec() -> dict[str, Any]:
    """The OpenAPI document of the hub's API."""
    spec = APISpec(
        title="Hashex hub",
        version="1",
        openapi_version="3.0.3",
        plugins=[MarshmallowPlugin()],
        info={"description": "Signed, versioned hash sets shared between agencies."},
    )
    spec.components.security_scheme("bearer", {"type": "http", "scheme": "bearer"})
    spec.components.schema("Problem", schema=schemas.ProblemSchema)
    secured: dict[str, Any] = {"security": [{"bearer": []}]}
    spec.path("/v1/health", operations={"get": {"responses": _ok(schemas.StatusSchema, "up")}})
    spec.path("/v1/ready", operations={"get": {"responses": _ok(schemas.StatusSchema, "ready")}})
    spec.path(
        "/v1/sets",
        operations={
            "get": {**secured, "responses": _ok(schemas.SetListSchema, "readable sets")},
            "post": {
                **secured,
                "requestBody": _body(schemas.CreateSetSchema),
                "responses": _ok(schemas.SetSchema, "created", 201),
            },
        },
    )
    spec.path(
        "/v1/sets/{agency}/{set}",
        parameters=_SET_PATH,
        operations={"get": {**secured, "responses": _ok(schemas.SetSchema, "set metadata")}},
    )
    spec.path(
        "/v1/sets/{agency}/{set}/grants",
        parameters=_SET_PATH,
        operations={
            "put": {
                **secured,
                "requestBody": _body(schemas.GrantsSchema),
                "responses": _ok(schemas.GrantsResultSchema, "the new readers"),
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
                "responses": _ok(schemas.VersionListSchema, "versions, oldest first"),
            },
            "post": {
                **secured,
                "requestBody": {
                    "required": True,
                    "content": {"multipart/form-data": {"schema": schemas.PublishSchema}},
                },
                "responses": _ok(schemas.VersionObjectSchema, "published", 201),
            },
        },
    )
    spec.path(
        versions + "/{version}",
        parameters=version_path,
        operations={"get": {**secured, "responses": _ok(schemas.VersionObjectSchema, "a version")}},
    )
    for kind in ("delta", "content"):
        spec.path(
            f"{versions}/{{version}}/{kind}",
            parameters=version_path,
            operations={"get": {**secured, "responses": _entries(f"the {kind} bytes")}},
        )
    spec.path(
        "/v1/agencies/{agency}/keysets",
        parameters=[_SET_PATH[0]],
        operations={
            "get": {
                **secured,
                "parameters": _query(schemas.AfterQuerySchema),
                "responses": _ok(schemas.KeysetListSchema, "keysets, oldest first"),
            }
        },
    )
    spec.path(
        "/v1/audit",
        operations={
            "get": {
                **secured,
                "parameters": _query(schemas.PageQuerySchema),
                "responses": _ok(schemas.AuditListSchema, "audit events, oldest first"),
            }
        },
    )
    document: dict[str, Any] = spec.to_dict()
    return document


@bp.get("/openapi.json")
def openapi() -> Response:
    """The OpenAPI document (no token needed: it holds no data)."""
    return json_response(build_spec())
