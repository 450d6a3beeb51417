"""JSON-RPC 2.0 messages of the local protocol: parsing and encoding, pure and I/O-free.

Both sides use this module: the daemon parses requests with :func:`parse_line`, a client parses
replies and notifications with :func:`parse_incoming`. The rules (PROTOCOL.md, "Messages"):

- A line is UTF-8 (strictly; no BOM) holding one JSON value. Invalid UTF-8, invalid JSON,
  ``NaN``/``Infinity``, duplicate object keys, or nesting deeper than Python's parser allows is
  ``-32700`` with ``id: null``.
- It must be an object with exactly the members of JSON-RPC 2.0: ``"jsonrpc": "2.0"``,
  ``"method"`` (string), optional ``"params"`` (object or array) and optional ``"id"``
  (string or integer; ``null``, booleans and fractions are refused). Anything else is ``-32600``.
  Unknown members are refused too. When the id itself was valid it is echoed in the error
  (so that a client can correlate); otherwise the error has ``id: null``.
- Batches (a JSON array) are not supported: ``-32600`` with ``id: null``.
- A message without ``"id"`` is a notification.
"""

from __future__ import annotations

import json
from typing import Any, TypeGuard

import attrs

from .errors import INVALID_REQUEST, PARSE_ERROR
from .jsoncodec import dumps_fast, loads_strict_fast

JSONRPC = "2.0"
Id = int | str


@attrs.frozen(slots=True)
class Request:
    id: Id
    method: str
    params: dict[str, Any] | list[Any] | None = None


@attrs.frozen(slots=True)
class Notification:
    method: str
    params: dict[str, Any] | list[Any] | None = None


@attrs.frozen(slots=True)
class Response:
    id: Id
    result: Any


@attrs.frozen(slots=True)
class ErrorResponse:
    id: Id | None
    code: int
    message: str
    data: Any = None


@attrs.frozen(slots=True)
class RpcFault:
    """A line that is not a valid request: reply with this error (``id`` may be None)."""

    id: Id | None
    code: int
    message: str
    data: Any = None

    def encode(self) -> bytes:
        return encode_error(self.id, self.code, self.message, self.data)


class ProtocolViolation(ValueError):
    """A client received a line from the daemon that is not a valid reply or notification."""


class _Duplicate(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for k, _ in pairs:
            if k in seen:
                raise _Duplicate(f"duplicate key {k!r}")
            seen.add(k)
    return obj


def _bad_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def loads(line: bytes | str) -> Any:
    """Strict JSON: UTF-8 only, no NaN/Infinity, no duplicate keys. Raises ValueError.

    orjson answers first when it provably agrees (``jsoncodec.loads_strict_fast``); the stdlib
    parser below is the rule, and gives every error."""
    if isinstance(line, bytes | bytearray):
        fast = loads_strict_fast(line)
        if fast is not None:
            return fast
        line = line.decode("utf-8")  # UnicodeDecodeError is a ValueError
    try:
        return json.loads(line, object_pairs_hook=_no_duplicates, parse_constant=_bad_constant)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def dumps(obj: Any) -> bytes:
    """Compact UTF-8 JSON plus ``\\n``. Lone surrogates (which a peer can smuggle in through
    ``\\ud800`` escapes) cannot be UTF-8 encoded; such objects fall back to ASCII escapes."""
    fast = dumps_fast(obj, newline=True)
    if fast is not None:
        return fast
    try:
        text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        return text.encode("utf-8") + b"\n"
    except UnicodeEncodeError:
        text = json.dumps(obj, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
        return text.encode("ascii") + b"\n"


def valid_id(value: Any) -> TypeGuard[Id]:
    return (isinstance(value, str) or isinstance(value, int)) and not isinstance(value, bool)


_REQUEST_KEYS = frozenset({"jsonrpc", "method", "params", "id"})


def parse_line(line: bytes) -> Request | Notification | RpcFault:
    """Parse one framed line (without ``\\n``) received by the daemon."""
    try:
        obj = loads(line)
    except ValueError as exc:
        return RpcFault(None, PARSE_ERROR, "parse error", {"reason": str(exc)[:200]})
    return parse_message(obj)


def parse_message(obj: Any) -> Request | Notification | RpcFault:
    if isinstance(obj, list):
        return RpcFault(None, INVALID_REQUEST, "batch requests are not supported")
    if not isinstance(obj, dict):
        return RpcFault(None, INVALID_REQUEST, "a request must be a JSON object")
    has_id = "id" in obj
    rid = obj.get("id")
    id_ok = has_id and valid_id(rid)
    echo = rid if id_ok else None

    def fault(msg: str, field: str) -> RpcFault:
        return RpcFault(echo, INVALID_REQUEST, msg, {"field": field})

    if obj.get("jsonrpc") != JSONRPC:
        return fault('"jsonrpc" must be "2.0"', "jsonrpc")
    if has_id and not id_ok:
        return fault('"id" must be a string or an integer', "id")
    extra = sorted(set(obj) - _REQUEST_KEYS)
    if extra:
        return fault(f"unexpected member {extra[0]!r}", extra[0])
    method = obj.get("method")
    if not isinstance(method, str):
        return fault('"method" must be a string', "method")
    params = obj.get("params")
    if "params" in obj and not isinstance(params, dict | list):
        return fault('"params" must be an object or an array', "params")
    if has_id and valid_id(rid):  # an invalid id was answered with a fault above
        return Request(rid, method, params)
    return Notification(method, params)


# -- encoding -------------------------------------------------------------------------------


def encode_request(id: Id, method: str, params: dict[str, Any] | None = None) -> bytes:
    msg: dict[str, Any] = {"jsonrpc": JSONRPC, "id": id, "method": method}
    if params is not None:
        msg["params"] = params
    return dumps(msg)


def encode_response(id: Id, result: Any) -> bytes:
    return dumps({"jsonrpc": JSONRPC, "id": id, "result": result})


def encode_error(id: Id | None, code: int, message: str, data: Any = None) -> bytes:
    err: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        err["data"] = data
    return dumps({"jsonrpc": JSONRPC, "id": id, "error": err})


# -- client side ----------------------------------------------------------------------------


def parse_incoming(line: bytes) -> Response | ErrorResponse | Notification:
    """Parse one line received from the daemon. Raises :class:`ProtocolViolation`."""
    try:
        obj = loads(line)
    except ValueError as exc:
        raise ProtocolViolation(f"daemon sent invalid JSON: {exc}") from None
    if not isinstance(obj, dict) or obj.get("jsonrpc") != JSONRPC:
        raise ProtocolViolation("daemon sent a line that is not a JSON-RPC 2.0 object")
    if "method" in obj:
        method, params = obj["method"], obj.get("params")
        if not isinstance(method, str) or "id" in obj:
            raise ProtocolViolation("daemon sent a request; only notifications are expected")
        if params is not None and not isinstance(params, dict | list):
            raise ProtocolViolation("notification params must be an object or an array")
        return Notification(method, params)
    if "id" not in obj:
        raise ProtocolViolation("daemon reply has no id")
    rid = obj["id"]
    if rid is not None and not valid_id(rid):
        raise ProtocolViolation("daemon reply has an invalid id")
    if "error" in obj:
        err = obj["error"]
        if (
            "result" in obj
            or not isinstance(err, dict)
            or not isinstance(err.get("code"), int)
            or isinstance(err.get("code"), bool)
            or not isinstance(err.get("message"), str)
        ):
            raise ProtocolViolation("daemon sent a malformed error object")
        return ErrorResponse(rid, err["code"], err["message"], err.get("data"))
    if "result" not in obj or rid is None:
        raise ProtocolViolation("daemon reply has neither result nor error")
    return Response(rid, obj["result"])
