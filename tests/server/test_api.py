"""The HTTP skeleton: health, readiness, and problem+json for every error."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, abort, request
from flask.testing import FlaskClient

from server.api.bodies import MAX_JSON_BYTES
from server.api.problems import render_problem
from server.api.schemas import ProblemSchema
from server.app import create_app
from server.config import DATABASE_URL_VAR, MAX_REQUEST_BYTES_VAR
from server.errors import (
    BLANK_TYPE,
    INTERNAL_DETAIL,
    PROBLEM_CONTENT_TYPE,
    BadRequestError,
    ConflictError,
    ForbiddenError,
    HubError,
    MethodNotAllowedError,
    NotFoundError,
    PreconditionFailedError,
    ProblemExtensions,
    TooLargeError,
    UnauthorizedError,
    UnavailableError,
    UnprocessableError,
    problem_type,
)
from tests.conftest import sqlite_url


def _problem(response: Any, status: int, slug: str) -> dict[str, Any]:
    """Check ``response`` is an RFC 9457 problem of ``slug`` and give its body."""
    assert response.status_code == status
    assert response.mimetype == PROBLEM_CONTENT_TYPE
    body = response.get_json(force=True)
    assert body["type"] == problem_type(slug)
    assert body["status"] == status
    assert isinstance(body["title"], str)
    assert isinstance(body["detail"], str)
    return dict(body)


def _unreachable_app(tmp_path: Path, **settings: str) -> Flask:
    # A SQLite file in a directory that does not exist can never be opened.
    url = sqlite_url(tmp_path / "missing" / "hashex.db")
    app = create_app({DATABASE_URL_VAR: url, **settings})
    app.config["TESTING"] = True
    return app


def test_health_answers_ok(client: FlaskClient) -> None:
    response = client.get("/v1/health")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert response.get_json() == {"status": "ok"}
    assert response.headers["Cache-Control"] == "no-store"


def test_health_does_not_touch_the_database(tmp_path: Path) -> None:
    response = _unreachable_app(tmp_path).test_client().get("/v1/health")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}


def test_ready_checks_the_database(client: FlaskClient) -> None:
    response = client.get("/v1/ready")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ready"}


def test_ready_is_unavailable_without_a_database(tmp_path: Path) -> None:
    response = _unreachable_app(tmp_path).test_client().get("/v1/ready")
    body = _problem(response, 503, "unavailable")
    assert "sqlite" not in body["detail"].lower()
    assert response.headers["Cache-Control"] == "no-store"


def test_unknown_route_is_a_problem_not_html(client: FlaskClient) -> None:
    response = client.get("/v1/no-such-thing")
    body = _problem(response, 404, "not-found")
    assert set(body) == {"type", "title", "status", "detail"}
    assert b"<" not in response.data


def test_wrong_method_is_a_problem_with_allow(client: FlaskClient) -> None:
    response = client.delete("/v1/health")
    _problem(response, 405, "method-not-allowed")
    assert "GET" in response.headers["Allow"]


def _echo_app(tmp_path: Path, **settings: str) -> Flask:
    app = _unreachable_app(tmp_path, **settings)

    @app.post("/test/echo")
    def echo() -> bytes:
        return request.get_data()

    return app


def test_every_body_is_read_through_the_json_cap_unless_its_view_raises_it(
    tmp_path: Path,
) -> None:
    # The upload limit is for publishes: a view that does not raise the cap
    # for itself reads at most the JSON cap, whatever the upload limit is.
    client = _echo_app(tmp_path, **{MAX_REQUEST_BYTES_VAR: str(10 * MAX_JSON_BYTES)}).test_client()
    exactly = b"x" * MAX_JSON_BYTES
    assert client.post("/test/echo", data=exactly).data == exactly
    _problem(client.post("/test/echo", data=exactly + b"x"), 413, "too-large")


@pytest.mark.parametrize(
    ("error", "status", "slug"),
    [
        (HubError, 500, "internal-error"),
        (BadRequestError, 400, "bad-request"),
        (UnauthorizedError, 401, "unauthorized"),
        (ForbiddenError, 403, "forbidden"),
        (NotFoundError, 404, "not-found"),
        (MethodNotAllowedError, 405, "method-not-allowed"),
        (ConflictError, 409, "conflict"),
        (PreconditionFailedError, 412, "precondition-failed"),
        (TooLargeError, 413, "too-large"),
        (UnprocessableError, 422, "unprocessable"),
        (UnavailableError, 503, "unavailable"),
    ],
)
def test_hub_errors_answer_their_problem(
    tmp_path: Path, error: type[HubError], status: int, slug: str
) -> None:
    app = _unreachable_app(tmp_path)

    @app.get("/test/raise")
    def raise_it() -> str:
        raise error("what went wrong", headers={"Retry-After": "5"}, field="an extension")

    response = app.test_client().get("/test/raise")
    body = _problem(response, status, slug)
    assert body["detail"] == "what went wrong"
    assert body["field"] == "an extension"
    assert body["title"] == error.title
    assert response.headers["Retry-After"] == "5"


def test_extensions_cannot_replace_the_standard_members_nor_go_undocumented() -> None:
    undeclared: Any = {"status": 200, "type": "x", "set": "a/b"}
    problem = json.loads(render_problem(NotFoundError("gone", **undeclared).to_problem()))
    assert problem == {
        "type": problem_type("not-found"),
        "title": NotFoundError.title,
        "status": 404,
        "detail": "gone",
    }


def test_the_problem_schema_documents_every_extension() -> None:
    standard = {"type", "title", "status", "detail"}
    assert set(ProblemSchema().fields) - standard == set(ProblemExtensions.__annotations__)


def test_a_subclass_names_its_own_cause(tmp_path: Path) -> None:
    class VersionConflictError(ConflictError):
        slug = "version-conflict"

    app = _unreachable_app(tmp_path)

    @app.get("/test/raise")
    def raise_it() -> str:
        raise VersionConflictError("version 3 exists")

    _problem(app.test_client().get("/test/raise"), 409, "version-conflict")


def test_a_crash_is_a_500_problem_that_leaks_nothing(tmp_path: Path) -> None:
    app = _unreachable_app(tmp_path)
    # Outside testing mode, as in production: Flask turns the crash into a 500.
    app.config["TESTING"] = False

    @app.get("/test/crash")
    def crash() -> str:
        raise RuntimeError("secret internals: /etc/hashex password=hunter2")

    response = app.test_client().get("/test/crash")
    body = _problem(response, 500, "internal-error")
    assert body["detail"] == INTERNAL_DETAIL
    assert b"hunter2" not in response.data
    assert b"Traceback" not in response.data


def test_an_http_status_without_a_cause_is_about_blank(tmp_path: Path) -> None:
    app = _unreachable_app(tmp_path)

    @app.get("/test/teapot")
    def teapot() -> str:
        abort(418)

    response = app.test_client().get("/test/teapot")
    assert response.status_code == 418
    assert response.mimetype == PROBLEM_CONTENT_TYPE
    assert response.get_json(force=True)["type"] == BLANK_TYPE


def test_services_and_errors_do_not_import_flask() -> None:
    code = (
        "import sys\n"
        "import server.config, server.engine, server.errors, server.migrate, server.models\n"
        "import server.services.hub_keys\n"
        "assert 'flask' not in sys.modules, 'flask was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
