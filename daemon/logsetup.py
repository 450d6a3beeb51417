"""structlog configuration for geminid: one line per event, machine-readable, secrets redacted.

Output
    * not a TTY (journald, a pipe, a file): JSON lines, one object per event, keys ``timestamp``
      (ISO 8601, UTC, ``Z``), ``level``, ``event`` (a dotted name from the event catalogue in
      README.md, "Event catalogue"), every context variable bound with
      ``structlog.contextvars.bind_contextvars`` (``session``, ``attempt``...) and the call's own
      fields. An exception is rendered once, as structured data under ``exception`` (a list of
      dicts: exc_type, exc_value, frames; no local variables, they are where secrets live).
    * on a TTY: structlog's ConsoleRenderer (colours, pretty traceback).

    Every line is written and flushed at once (journald sees it immediately, and a crash loses
    nothing). A write that fails (stdout closed, EPIPE) drops the line instead of crashing.

Level at runtime
    Loggers are cached on first use (``cache_logger_on_first_use=True``), so the level cannot
    live in the wrapper class. The wrapper passes everything (``make_filtering_bound_logger``
    at DEBUG) and the *first* processor drops events below a module variable, which
    :func:`set_level` changes (SIGHUP). The processor list and the output stream are module
    objects mutated in place, so :func:`configure_logging` may be called again (tests, reload)
    and already-cached loggers follow.

Redaction (the last processor before the renderer, after exception rendering)
    * by value: :func:`register_secret` / :func:`forget_secret` keep a bounded registry (the API
      key, pinned; resumption handles, the newest :data:`MAX_SECRETS`). Any occurrence of a
      registered value in any string anywhere in the event dict (nested dicts, lists, tuples,
      exception text, traceback frames) becomes ``<redacted:xxxxxxxx>``, the first 8 hex digits
      of its sha256, so two lines can still be correlated without showing the value.
    * by key name: a field named like ``api_key``, ``key``, ``token``, ``handle``,
      ``new_handle``/``newHandle``, ``authorization``, ``x-goog-api-key`` (any case, ``-`` or
      ``_``; see :data:`SECRET_KEY_NAMES`) is replaced the same way whatever its value. So do not
      name a non-secret log field ``key`` (use ``config_key``).
    * :func:`redact_text` applies the value rule to one string (error messages, process titles).

The stdlib ``logging`` records of libraries (trio-websocket...) are forwarded into the same
pipeline at WARNING and above, so they are rendered and redacted the same way.
"""

from __future__ import annotations

import collections
import hashlib
import logging
import re
import sys
import threading
from collections.abc import Mapping
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, WrappedLogger

LEVELS: dict[str, int] = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
FORMATS = ("auto", "json", "console")

#: structlog method names mapped to levels (``warn``/``exception``/``critical`` included).
_METHOD_LEVELS: dict[str, int] = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "msg": logging.INFO,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "err": logging.ERROR,
    "exception": logging.ERROR,
    "critical": logging.CRITICAL,
    "fatal": logging.CRITICAL,
}

#: Field names whose values are always redacted (compared lower-cased, ``-`` as ``_``).
SECRET_KEY_NAMES = frozenset(
    {
        "api_key",
        "apikey",
        "key",
        "token",
        "access_token",
        "refresh_token",
        "handle",
        "new_handle",
        "newhandle",
        "resumption_handle",
        "authorization",
        "x_goog_api_key",
        "password",
        "secret",
    }
)

#: Unpinned secrets (resumption handles) kept for value redaction; the oldest is forgotten.
MAX_SECRETS = 64
#: Values shorter than this are not registered: redacting them would mangle ordinary text.
MIN_SECRET_LEN = 8

_level: int = logging.INFO


def _digest(value: str) -> str:
    return (
        "<redacted:" + hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:8] + ">"
    )


class _SecretRegistry:
    """Pinned values (API keys) plus a bounded LRU of the rest; one compiled regex for all."""

    def __init__(self, maxsize: int) -> None:
        self._lock = threading.Lock()
        self._pinned: set[str] = set()
        self._lru: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._maxsize = maxsize
        self._pattern: re.Pattern[str] | None = None
        #: Compiling the alternation costs ~0.1-1 ms; a new resumption handle arrives after every
        #: model turn, so compile lazily, on the first log line that needs the pattern.
        self._stale = False

    def register(self, value: str, pin: bool) -> None:
        if not isinstance(value, str) or len(value) < MIN_SECRET_LEN:
            return
        with self._lock:
            if pin:
                self._pinned.add(value)
                self._lru.pop(value, None)
            elif value not in self._pinned:
                self._lru[value] = None
                self._lru.move_to_end(value)
                while len(self._lru) > self._maxsize:
                    self._lru.popitem(last=False)
            self._rebuild()

    def forget(self, value: str) -> None:
        with self._lock:
            self._pinned.discard(value)
            self._lru.pop(value, None)
            self._rebuild()

    def clear(self) -> None:
        with self._lock:
            self._pinned.clear()
            self._lru.clear()
            self._rebuild()

    def __contains__(self, value: object) -> bool:
        return value in self._pinned or value in self._lru

    def _rebuild(self) -> None:
        self._stale = True

    @property
    def pattern(self) -> re.Pattern[str] | None:
        if self._stale:
            with self._lock:
                if self._stale:
                    values = sorted(self._pinned | self._lru.keys(), key=len, reverse=True)
                    self._pattern = re.compile("|".join(map(re.escape, values))) if values else None
                    self._stale = False
        return self._pattern


_registry = _SecretRegistry(MAX_SECRETS)


def register_secret(value: str, *, pin: bool = False) -> None:
    """Redact ``value`` wherever it appears in a log line from now on.

    ``pin=True`` (the API key) keeps it until :func:`forget_secret`; other values (resumption
    handles) live in a bounded registry where the oldest of :data:`MAX_SECRETS` is forgotten.
    Values shorter than :data:`MIN_SECRET_LEN` are ignored.
    """
    _registry.register(value, pin)


def forget_secret(value: str) -> None:
    """Stop redacting ``value`` by value (a handle that is superseded and expired)."""
    _registry.forget(value)


def clear_secrets() -> None:
    """Forget every registered value (tests)."""
    _registry.clear()


def redact_text(s: str) -> str:
    """``s`` with every registered secret replaced by ``<redacted:xxxxxxxx>``."""
    pattern = _registry.pattern
    if pattern is None or not s:
        return s
    return pattern.sub(lambda m: _digest(m.group(0)), s)


def _is_secret_key(name: object) -> bool:
    return isinstance(name, str) and name.lower().replace("-", "_") in SECRET_KEY_NAMES


def _redact_value(value: Any) -> Any:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, bytes | bytearray):
        value = bytes(value).decode("utf-8", "replace")
    return _digest(value if isinstance(value, str) else str(value))


def _walk(obj: Any, depth: int = 0) -> Any:
    if isinstance(obj, str):
        return redact_text(obj)
    if depth > 32:
        return obj
    if isinstance(obj, Mapping):
        return {
            k: (
                v
                if k == "exc_info" and depth == 0  # the console renderer formats it; see below
                else _redact_value(v)
                if _is_secret_key(k)
                else _walk(v, depth + 1)
            )
            for k, v in obj.items()
        }
    if isinstance(obj, list):
        return [_walk(v, depth + 1) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_walk(v, depth + 1) for v in obj)
    if obj is None or isinstance(obj, bool | int | float):
        return obj
    # Any other object would be rendered with repr() (JSONRenderer default, ConsoleRenderer):
    # render it now so that a secret inside it (an exception's message...) is redacted too.
    return redact_text(repr(obj))


def redact_processor(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """structlog processor: value and key-name redaction over the whole event dict."""
    walked: EventDict = _walk(event_dict)
    return walked


def _level_filter(_logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    if _METHOD_LEVELS.get(method_name, logging.INFO) < _level:
        raise structlog.DropEvent
    return event_dict


class _RedactingConsoleRenderer:
    """ConsoleRenderer renders tracebacks itself (from exc_info), after our processors ran:
    redact its final text as well."""

    def __init__(self, colors: bool) -> None:
        self._inner = structlog.dev.ConsoleRenderer(colors=colors)

    def __call__(self, logger: WrappedLogger, name: str, event_dict: EventDict) -> str:
        return redact_text(self._inner(logger, name, event_dict))


class _Sink:
    """The one output stream, swappable in place; writes a line and flushes it."""

    def __init__(self) -> None:
        self.stream: TextIO | None = None
        self._lock = threading.Lock()

    def write_line(self, line: str) -> None:
        stream = self.stream if self.stream is not None else sys.stdout
        try:
            with self._lock:
                stream.write(line + "\n")
                stream.flush()
        except (OSError, ValueError):
            pass  # stdout gone (EPIPE, closed): losing a log line beats dying of it


_sink = _Sink()


class _SinkLogger:
    """What structlog wraps: every method writes the rendered line to the sink."""

    def msg(self, message: str) -> None:
        _sink.write_line(message)

    log = debug = info = warn = warning = error = err = exception = critical = fatal = msg


def _sink_logger_factory(*_args: Any) -> _SinkLogger:
    return _SinkLogger()


#: The processor chain, one list object mutated in place (cached loggers hold a reference).
_PROCESSORS: list[Any] = []


class _StdlibBridge(logging.Handler):
    """Forward library ``logging`` records into the structlog pipeline."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            log = structlog.get_logger("geminid.stdlib")
            method = {
                logging.DEBUG: "debug",
                logging.INFO: "info",
                logging.WARNING: "warning",
                logging.ERROR: "error",
                logging.CRITICAL: "critical",
            }.get(record.levelno, "warning")
            kw: dict[str, Any] = {"logger": record.name}
            if record.exc_info and record.exc_info[0] is not None:
                kw["exc_info"] = record.exc_info
            getattr(log, method)("lib." + record.name, message=record.getMessage(), **kw)
        except Exception:  # pragma: no cover - a logging handler must never raise
            self.handleError(record)


def _is_tty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError, OSError):
        return False


def set_level(level: str) -> None:
    """Change the level at runtime (SIGHUP); applies to cached loggers too."""
    global _level
    try:
        _level = LEVELS[level.lower()]
    except (KeyError, AttributeError):
        raise ValueError(f"log level must be one of {', '.join(LEVELS)}, got {level!r}") from None


def get_level() -> str:
    return next(name for name, num in LEVELS.items() if num == _level)


def enabled(level: str) -> bool:
    """Whether an event at ``level`` would be logged now (to skip costly fields of one that
    would not)."""
    return LEVELS[level] >= _level


def configure_logging(level: str = "info", fmt: str = "auto", stream: TextIO | None = None) -> None:
    """Configure structlog for the daemon (idempotent; call again to change format or stream).

    ``fmt``: ``"json"``, ``"console"``, or ``"auto"`` (console on a TTY, JSON otherwise).
    ``stream`` defaults to ``sys.stdout`` as it is at call time.
    """
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    set_level(level)
    out = stream if stream is not None else sys.stdout
    _sink.stream = out
    console = fmt == "console" or (fmt == "auto" and _is_tty(out))

    chain: list[Any] = [
        _level_filter,
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]
    if console:
        chain += [redact_processor, _RedactingConsoleRenderer(colors=_is_tty(out))]
    else:
        chain += [
            structlog.processors.ExceptionRenderer(
                structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
            ),
            structlog.processors.UnicodeDecoder(),
            redact_processor,
            structlog.processors.JSONRenderer(ensure_ascii=False, default=repr),
        ]
    _PROCESSORS[:] = chain
    structlog.configure(
        processors=_PROCESSORS,
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
        context_class=dict,
        logger_factory=_sink_logger_factory,
        cache_logger_on_first_use=True,
    )

    root = logging.getLogger()
    for h in list(root.handlers):
        if isinstance(h, _StdlibBridge):
            root.removeHandler(h)
    root.addHandler(_StdlibBridge(level=logging.WARNING))
    if root.level > logging.WARNING or root.level == logging.NOTSET:
        root.setLevel(logging.WARNING)
