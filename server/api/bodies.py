"""Reading what a request carries: a small JSON body, or a query string.

Metadata is never megabytes, so a JSON body has a cap of its own,
:data:`MAX_JSON_BYTES`, far below the upload limit.  The cap is set on the
request before its stream is first touched, so Werkzeug enforces it while
reading, for a ``Content-Length`` body (refused before a byte is read), a
chunked one and an inflating gzip one alike: at most the cap is ever held.
Then the bytes are checked for depth (:data:`MAX_JSON_DEPTH`) before the
recursive parser sees them, and parsed strictly: UTF-8 only, no duplicate
member names (two readers of one body must not see two different objects),
no ``NaN`` or ``Infinity``.  A body that breaks any of this is refused with
a problem naming the limit; a body whose fields break their schema is 422
naming each field.
"""

from __future__ import annotations

import json
import re
from typing import Any, NoReturn

from flask import Request
from marshmallow import Schema, ValidationError
from werkzeug.exceptions import RequestEntityTooLarge

from server.errors import (
    BadRequestError,
    InvalidFieldError,
    MalformedBodyError,
    TooLargeError,
    UnsupportedMediaTypeError,
)

MAX_JSON_BYTES = 64 * 1024
MAX_JSON_DEPTH = 16

# A JSON string, which may hold brackets that are not structure.  Possessive
# and with an optional closing quote, so that an unterminated string is
# consumed once, to the end, instead of being retried from every quote in it.
_STRING = re.compile(rb'"(?:[^"\\]++|\\.)*+"?', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def load_json(schema: Schema, request: Request) -> dict[str, Any]:
    """The request's JSON body, loaded through ``schema``; a problem if it cannot be."""
    body = read_json(request)
    if not isinstance(body, dict):
        raise InvalidFieldError.one("body", "must be a JSON object")
    try:
        loaded: dict[str, Any] = schema.load(body)
    except ValidationError as exc:
        raise InvalidFieldError(_messages(exc)) from None
    return loaded


def load_query(schema: Schema, request: Request) -> dict[str, Any]:
    """The query string, loaded through ``schema``; 400 naming each bad parameter."""
    repeated = sorted(name for name, values in request.args.lists() if len(values) > 1)
    if repeated:
        raise BadRequestError(f"query parameter {repeated[0]} is given more than once")
    try:
        loaded: dict[str, Any] = schema.load(request.args.to_dict())
    except ValidationError as exc:
        messages = _messages(exc)
        names = ", ".join(sorted(messages))
        raise BadRequestError(f"invalid query parameter(s): {names}", errors=messages) from None
    return loaded


def read_json(request: Request) -> Any:
    """The parsed JSON body of ``request``, read through the JSON cap."""
    if not request.is_json:
        raise UnsupportedMediaTypeError("expected a JSON body (Content-Type: application/json)")
    charset = request.mimetype_params.get("charset", "utf-8").lower()
    if charset not in ("utf-8", "utf8"):
        raise UnsupportedMediaTypeError(f"a JSON body is UTF-8, not {charset[:40]!r}")
    # One byte over the cap is read, if it is there, to tell a body that
    # fills the cap from one that goes on: Werkzeug stops a stream at its
    # limit without saying whether more was coming.
    request.max_content_length = MAX_JSON_BYTES + 1
    try:
        data = request.get_data(cache=False)
    except RequestEntityTooLarge:
        data = None
    if data is None or len(data) > MAX_JSON_BYTES:
        raise TooLargeError(f"a JSON body is at most {MAX_JSON_BYTES} bytes", limit=MAX_JSON_BYTES)
    return parse_json(data)


def parse_json(data: bytes) -> Any:
    """Parse a JSON document strictly, refusing depth beyond :data:`MAX_JSON_DEPTH` first."""
    if nested_deeper(data, MAX_JSON_DEPTH):
        raise MalformedBodyError(
            f"the JSON body nests arrays and objects more than {MAX_JSON_DEPTH} levels deep"
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedBodyError(f"the body is not UTF-8 (byte {exc.start})") from None
    try:
        return json.loads(text, object_pairs_hook=_unique_members, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise MalformedBodyError(
            f"the body is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        ) from None
    except ValueError:
        # Python refuses to turn integers of thousands of digits into ints.
        raise MalformedBodyError("the body holds a number too long to read") from None


def nested_deeper(data: bytes, limit: int) -> bool:
    """Whether arrays and objects nest more than ``limit`` deep in ``data``, without parsing it.

    Strings are cut out first, so brackets inside them do not count; what is
    left is scanned bracket by bracket.  Malformed input gives some answer;
    the parser refuses it afterwards.
    """
    depth = 0
    for byte in _STRING.sub(b"", data).translate(None, _NOT_BRACKETS):
        depth += 1 if byte in b"[{" else -1
        if depth > limit:
            return True
    return False


def _unique_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for name, value in pairs:
        if name in result:
            raise MalformedBodyError(f"the member {name!r} appears twice in one object")
        result[name] = value
    return result


def _no_constant(name: str) -> NoReturn:
    raise MalformedBodyError(f"{name} is not a JSON number")


def _messages(error: ValidationError) -> dict[str, Any]:
    messages = error.normalized_messages()  # type: ignore[no-untyped-call]
    return {str(name): value for name, value in messages.items()}
