"""The JSON library behind the hot paths: orjson when it is installed, else the stdlib.

Why: per relayed audio chunk the daemon parses one client line, encodes one upstream frame and
one ack; with the stdlib that was about a third of the daemon's CPU per chunk (README,
"Performance and reliability"). orjson does the same work 5-10x faster.

Why a fallback and not a swap: the local protocol's rules (``jsonrpc`` module docstring:
strict UTF-8, no NaN/Infinity, no duplicate keys, integers of any size) and the stdlib's
error messages are what the tests and clients know. So orjson is only ever a *fast path*
whose answer is used when it provably equals the stdlib's; in every other case (orjson
missing, orjson refusing the input, or a result it might have produced differently) the
caller's stdlib code runs as before and decides. What the fast paths may do differently is
listed on each function.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

_orjson: Any  # the module, or None; Any so that tests can switch the fast paths off
try:
    import orjson as _orjson_module
except ImportError:  # pragma: no cover - orjson is a declared dependency
    _orjson = None
else:
    _orjson = _orjson_module

#: Whether the fast paths are in use (benchmarks print it).
FAST = _orjson is not None

#: Deeper documents take the stdlib path, which owns the "nested too deeply" refusal.
_MAX_DEPTH = 64


def _strict_equivalent(obj: Any, colons: int) -> bool:
    """True when orjson's parse of a text with ``colons`` ``:`` bytes is what the strict
    stdlib parser returns.

    Every object member has exactly one ``:`` outside strings, so ``members == colons`` proves
    both that no key was repeated (orjson keeps the last of duplicates silently) and that no
    string holds a ``:``. Floats are refused because orjson reads an integer beyond 64 bits as
    a float, where the stdlib keeps it an ``int``; documents nested past ``_MAX_DEPTH`` are
    left to the stdlib's own depth rule.
    """
    members = 0
    stack: list[tuple[Any, int]] = [(obj, 0)]
    pop, push = stack.pop, stack.append
    while stack:
        value, depth = pop()
        t = type(value)
        if t is dict or t is list:
            if depth > _MAX_DEPTH:
                return False
            children: Iterable[Any] = value
            if t is dict:
                members += len(value)
                children = value.values()
            for v in children:
                tv = type(v)
                if tv is dict or tv is list:
                    push((v, depth + 1))
                elif tv is float:
                    return False
        elif t is float:
            return False
    return members == colons


def loads_strict_fast(line: bytes) -> Any | None:
    """The strict parse of ``line`` if orjson can prove it, else None (use the strict stdlib).

    orjson itself refuses invalid UTF-8, a BOM, NaN/Infinity and lone surrogate escapes, as the
    strict parser does; duplicates, integers past 64 bits and depth are checked by
    :func:`_strict_equivalent`. A line holding ``:`` inside a string takes the stdlib path
    (correct, only slower).
    """
    if _orjson is None:
        return None
    try:
        obj = _orjson.loads(line)
    except _orjson.JSONDecodeError:
        return None
    if _strict_equivalent(obj, line.count(b":")):
        return obj
    return None


def loads_fast(data: bytes | str) -> Any | None:
    """A lenient parse (server frames) if orjson takes it, else None (use ``json.loads``).

    Differences from ``json.loads``, accepted for upstream frames only: an integer past 64 bits
    becomes a float (proto3 JSON sends 64-bit integers as strings anyway). What orjson refuses
    (NaN literals, which ``json.loads`` accepts) falls back to the stdlib.
    """
    if _orjson is None:
        return None
    try:
        return _orjson.loads(data)
    except _orjson.JSONDecodeError:
        return None


def dumps_fast(obj: Any, *, newline: bool = False, nan_as_null: bool = False) -> bytes | None:
    """Compact UTF-8 JSON (non-ASCII kept as is) of ``obj``, or None: use the stdlib.

    None when orjson is missing or refuses ``obj`` (a lone surrogate, an integer past 64 bits,
    a non-string key: the stdlib then decides, escapes or raises as before). orjson writes NaN
    and infinities as ``null``; where the stdlib caller refuses them (``nan_as_null`` false),
    any ``null`` in the output goes the exact way instead (a literal ``null`` is merely slower).
    orjson also serialises a few types the stdlib refuses (datetime, UUID, dataclass and plain
    ``Enum`` values); none occurs in the relay's messages.
    """
    if _orjson is None:
        return None
    try:
        out: bytes = _orjson.dumps(obj, option=_orjson.OPT_APPEND_NEWLINE if newline else 0)
    except (TypeError, _orjson.JSONEncodeError):
        return None
    if not nan_as_null and b"null" in out:
        return None
    # A copy: orjson's bytes keep its whole output buffer (4-8 KiB however short the JSON), and
    # event lines live in every session's ring (+7.5 MiB at 1,000 sessions without the copy).
    return bytes(memoryview(out))


def _finite(obj: Any) -> bool:
    """No float in ``obj`` (nested lists and dicts) is NaN or infinite."""
    stack = [obj]
    pop, push = stack.pop, stack.append
    while stack:
        value = pop()
        t = type(value)
        if t is dict:
            value = value.values()
        elif t is not list:
            if t is float and not math.isfinite(value):
                return False
            continue
        for v in value:
            tv = type(v)
            if tv is dict or tv is list:
                push(v)
            elif tv is float and not math.isfinite(v):
                return False
    return True


def dumps_finite_fast(obj: Any) -> bytes | None:
    """Compact UTF-8 JSON of ``obj`` (non-ASCII kept as is) that reads back as what
    ``json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False)`` writes, or
    None: use that (it then writes, escapes or raises as before). For documents with ``null``
    in them, where a :func:`dumps_fast` answer would need the stdlib (checkpoint records).

    orjson writes NaN and infinities as ``null``; output holding a ``null`` is used only once a
    walk has found every float finite. What else orjson refuses (a lone surrogate, an integer
    past 64 bits, a non-string key, deep nesting) goes to the stdlib. Floats may be spelt
    differently (``1e16`` for ``1e+16``), never valued differently. orjson also serialises a few
    types the stdlib refuses (datetime, UUID, dataclass and plain ``Enum`` values); none occurs
    in a checkpoint record.
    """
    if _orjson is None:
        return None
    try:
        out: bytes = _orjson.dumps(obj)
    except (TypeError, _orjson.JSONEncodeError):
        return None
    if b"null" in out and not _finite(obj):
        return None
    return out
