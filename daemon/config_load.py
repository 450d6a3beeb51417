"""Loading the one :class:`~geminid.daemon.config.Config`: TOML file, environment, flags.

Precedence, highest first (each layer only overrides the keys it sets):

1. command-line flags (``--endpoint``, ``--api-key-file``, ``--state-dir``, ``--socket``,
   ``--log-level``, ``--log-format``);
2. environment: ``GEMINID_<SECTION>_<KEY>`` (``GEMINID_LOG_LEVEL``, ``GEMINID_BACKOFF_CAP``),
   ``GEMINID_<KEY>`` for top-level keys (``GEMINID_STATE_DIR``), ``GEMINI_API_KEY`` for the key
   (``GOOGLE_API_KEY``, google-genai's name, when it is not set) and ``GEMINID_SOCKET`` (the
   clients' variable) for ``server.socket_path``;
3. systemd credential: ``$CREDENTIALS_DIRECTORY/gemini_api_key`` (``LoadCredential=``), used as
   ``upstream.api_key_file``;
4. the TOML file: ``--config PATH`` (or ``$GEMINID_CONFIG``), else the default path
   (:func:`default_config_path`); a missing default file is fine, a missing explicit one is not;
5. the defaults in :mod:`geminid.daemon.config`.

The key (``upstream.api_key``) and the key file (``upstream.api_key_file``) are one choice:
the highest layer that sets either wins, and setting both in one layer is an error. The key file
is read at load (and again by :func:`reload_api_key` on SIGHUP), stripped of surrounding
whitespace, and must hold exactly one non-empty token.

There is deliberately **no** ``--api-key`` flag: a command line is world-readable
(``ps``, ``/proc/PID/cmdline``), and so would be the key. Use ``--api-key-file``, a systemd
credential, or ``GEMINI_API_KEY`` (``/proc/PID/environ`` is readable only by the owner).

Validation refuses, with the dotted key name and one line of reason: unknown keys (with a
"did you mean" hint; a typo must not silently fall back to a default), unknown ``GEMINID_*``
environment variables, wrong types, out-of-range values, an endpoint that is not ws:// or wss://,
a log level outside debug/info/warning/error. :class:`ConfigError` ``.message`` reads
``<key>: <reason> (<where>)``; ``.data`` has ``key`` and ``source``.

Relative paths are resolved against the config file's directory for values in the file, and
against the current directory for flags and environment; ``~`` is expanded.
"""

from __future__ import annotations

import argparse
import grp
import json
import math
import os
import sys
import types
import typing
import urllib.parse
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs

from geminid.daemon import logsetup
from geminid.daemon.config import (
    CONSUMED_INDEX_CONVENTIONS,
    Config,
    LiveConfig,
    LogConfig,
    Secret,
    ServerConfig,
    SessionConfig,
    UpstreamConfig,
    _default_state_dir,
)
from geminid.daemon.errors import ConfigError
from geminid.daemon.upstream import BackoffPolicy
from geminid.protocol.constants import SOCKET_NAME, runtime_dir

#: systemd credential name for the API key (``LoadCredential=gemini_api_key:/etc/geminid/api_key``).
CREDENTIAL_NAME = "gemini_api_key"
API_KEY_ENV = "GEMINI_API_KEY"
#: google-genai's variable: a user coming from the SDK has this one set. Read only when
#: ``GEMINI_API_KEY`` is not set (or empty); ``upstream.api_key_source`` says which was used.
API_KEY_FALLBACK_ENV = "GOOGLE_API_KEY"
CONFIG_ENV = "GEMINID_CONFIG"
#: The socket path the clients and geminictl read; the daemon honours it too, as an alias of
#: ``GEMINID_SERVER_SOCKET_PATH`` (setting both to different paths is an error).
SOCKET_ENV = "GEMINID_SOCKET"
#: ``GEMINID_*`` variables that are not config keys and must not be refused as typos: the
#: config file's path and the fake upstream's own options. Immutable on purpose: no module (and
#: no test) may widen what the daemon lets through.
ENV_PASSTHROUGH_PREFIXES: tuple[str, ...] = (CONFIG_ENV, "GEMINID_FAKE_")
SYSTEM_CONFIG_PATH = Path("/etc/geminid/config.toml")
#: sun_path is 108 bytes on Linux, including the terminating NUL.
MAX_SOCKET_PATH = 107

_SECTIONS: dict[str, type] = {
    "upstream": UpstreamConfig,
    "session": SessionConfig,
    "backoff": BackoffPolicy,
    "server": ServerConfig,
    "log": LogConfig,
    # live.* (the Live endpoint): its own block
    "live": LiveConfig,
}
#: Fields that exist on the classes but are not configuration.
_NOT_KEYS = {"source", "upstream.api_key_source"}

_LOG_LEVELS = ("debug", "info", "warning", "error")
_LOG_FORMATS = ("auto", "json", "console")


# ---------------------------------------------------------------------------------- schema


@attrs.frozen
class Key:
    """One configuration key: ``name`` is dotted (``backoff.cap``), ``kind`` its value type."""

    name: str
    kind: str  # number | integer | boolean | string | path | secret | uids
    optional: bool
    default: Any
    doc: str = ""
    check: Callable[[Any], bool] | None = None
    #: Human wording of ``check``, appended to the type ("a number > 0").
    requirement: str = ""

    @property
    def env(self) -> str:
        if self.name == "upstream.api_key":
            return API_KEY_ENV
        return "GEMINID_" + self.name.replace(".", "_").upper()

    @property
    def section(self) -> str | None:
        return self.name.split(".")[0] if "." in self.name else None

    @property
    def field(self) -> str:
        return self.name.rsplit(".", 1)[-1]


def _gt0(v: float) -> bool:
    return v > 0


def _ge0(v: float) -> bool:
    return v >= 0


def _ge1(v: float) -> bool:
    return v >= 1


def _ws_url(v: str) -> bool:
    parts = urllib.parse.urlsplit(v)
    return parts.scheme in ("ws", "wss") and bool(parts.hostname)


def _host_port(v: str) -> bool:
    host, sep, port = v.rpartition(":")
    return bool(sep and host and port.isdigit() and int(port) < 65536)


def _group_exists(v: str) -> bool:
    if v.isdigit():
        return True
    try:
        grp.getgrnam(v)
    except KeyError:
        return False
    return True


def _in(*choices: str) -> Callable[[str], bool]:
    return lambda v: v in choices


#: key -> (check, requirement). Keys not listed only get their type checked.
_CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "upstream.endpoint": (_ws_url, "a ws:// or wss:// URL with a host"),
    "upstream.connect_timeout": (_gt0, "> 0"),
    "upstream.setup_timeout": (_gt0, "> 0"),
    "upstream.stall_timeout": (_ge0, ">= 0 (0 = off)"),
    "upstream.max_message_size": (lambda v: v >= 1024, ">= 1024"),
    "session.replay_buffer_bytes": (_gt0, "> 0"),
    "session.audio_staleness": (_ge0, ">= 0"),
    "session.inactivity_timeout": (_ge0, ">= 0 (0 = never)"),
    "session.goaway_margin": (_ge0, ">= 0"),
    "session.handle_ttl": (_gt0, "> 0"),
    "session.transcript_tail": (_ge0, ">= 0"),
    "session.event_ring": (_ge1, ">= 1"),
    "backoff.initial": (_gt0, "> 0"),
    "backoff.factor": (_ge1, ">= 1"),
    "backoff.cap": (_gt0, "> 0"),
    "backoff.stable_after": (_ge0, ">= 0"),
    "backoff.quick_failure": (_ge0, ">= 0"),
    "backoff.max_attempts": (_ge0, ">= 0"),
    "backoff.quota_initial": (_gt0, "> 0"),
    "backoff.quota_cap": (_gt0, "> 0"),
    "backoff.max_failed_resumes": (_ge1, ">= 1"),
    "backoff.rotation_limit": (_ge1, ">= 1"),
    "backoff.rotation_window": (_ge0, ">= 0"),
    "server.socket_group": (_group_exists, "an existing group name or a gid"),
    "server.max_line_bytes": (lambda v: v >= 1024, ">= 1024"),
    "server.client_queue": (_ge1, ">= 1"),
    "server.allowed_uids": (lambda v: all(0 <= u < 2**32 - 1 for u in v), "of uids >= 0"),
    "log.level": (_in(*_LOG_LEVELS), "one of " + ", ".join(_LOG_LEVELS)),
    "log.format": (_in(*_LOG_FORMATS), "one of " + ", ".join(_LOG_FORMATS)),
    "shutdown_timeout": (_ge0, ">= 0"),
    # -- upstream backend (issue #14) --
    "upstream.backend": (_in("gemini-api", "vertex"), "one of gemini-api, vertex"),
    "upstream.consumed_index": (
        _in("auto", *CONSUMED_INDEX_CONVENTIONS), "one of auto, " + ", ".join(CONSUMED_INDEX_CONVENTIONS)
    ),
    # live.* (the Live endpoint): its own block
    "live.listen": (_host_port, "HOST:PORT, e.g. 127.0.0.1:8766"),
}


#: Numbers not listed above are durations or sizes: never negative.
_DEFAULT_CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "number": (_ge0, ">= 0"),
    "integer": (_ge0, ">= 0"),
}


def _kind_of(tp: Any) -> tuple[str, bool]:
    optional = False
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        optional = len(args) < len(typing.get_args(tp))
        (tp,) = args
    if tp is bool:
        return "boolean", optional
    if tp is int:
        return "integer", optional
    if tp is float:
        return "number", optional
    if tp is str:
        return "string", optional
    if tp is Path:
        return "path", optional
    if tp is Secret:
        return "secret", optional
    if typing.get_origin(tp) is tuple:
        return "uids", optional
    raise TypeError(f"config_load: no loader for field type {tp!r}")  # pragma: no cover


def _build_schema() -> dict[str, Key]:
    keys: dict[str, Key] = {}

    def add(prefix: str, cls: type, instance: Any) -> None:
        attrs.resolve_types(cls)
        for f in attrs.fields(cls):
            name = f"{prefix}{f.name}"
            if name in _NOT_KEYS or f.name in _SECTIONS and not prefix:
                continue
            kind, optional = _kind_of(f.type)
            check, requirement = _CHECKS.get(name, _DEFAULT_CHECKS.get(kind, (None, "")))
            keys[name] = Key(
                name,
                kind,
                optional,
                getattr(instance, f.name),
                check=check,
                requirement=requirement,
            )

    add("", Config, Config())
    for section, cls in _SECTIONS.items():
        add(section + ".", cls, cls())
    return keys


#: Every configuration key, by dotted name, in declaration order.
SCHEMA: dict[str, Key] = _build_schema()
ENV_NAMES: dict[str, Key] = {k.env: k for k in SCHEMA.values()}

_KIND_WORDS = {
    "number": "a number",
    "integer": "an integer",
    "boolean": "a boolean (true/false)",
    "string": "a string",
    "path": "a path",
    "secret": "a non-empty string",
    "uids": "a list",
}


def _shown(value: Any) -> str:
    try:
        return json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        return repr(value)


def _fail(key: str, reason: str, where: str | None) -> ConfigError:
    msg = f"{key}: {reason}" + (f" ({where})" if where else "")
    return ConfigError(msg, data={"key": key, "source": where})


def _expected(k: Key) -> str:
    if k.requirement and k.kind in ("string", "path", "secret"):
        return "must be " + k.requirement
    words = _KIND_WORDS[k.kind]
    if k.requirement:
        words += " " + k.requirement
    return "must be " + words


# ---------------------------------------------------------------------------------- parsing

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _coerce(k: Key, raw: Any, *, from_text: bool, base: Path, home: str) -> Any:
    """Turn a raw value (TOML-typed, or text from env/flags) into the field's type; raise
    ValueError with the reason on a type mismatch."""
    bad = ValueError(f"{_expected(k)}, got {_shown(raw)}")
    if from_text and k.optional and raw == "":
        return None
    if k.kind == "number":
        if from_text:
            try:
                raw = float(raw)
            except ValueError:
                raise bad from None
        if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw):
            raise bad
        return float(raw)
    if k.kind == "integer":
        if from_text:
            try:
                raw = int(raw, 10)
            except ValueError:
                raise bad from None
        if isinstance(raw, bool) or not isinstance(raw, int):
            raise bad
        return raw
    if k.kind == "boolean":
        if from_text:
            low = raw.strip().lower()
            if low in _TRUE:
                return True
            if low in _FALSE:
                return False
            raise bad
        if not isinstance(raw, bool):
            raise bad
        return raw
    if k.kind == "uids":
        if from_text:
            parts = [p for p in raw.replace(",", " ").split() if p]
            try:
                raw = [int(p, 10) for p in parts]
            except ValueError:
                raise bad from None
        if not isinstance(raw, list) or any(
            isinstance(u, bool) or not isinstance(u, int) for u in raw
        ):
            raise bad
        return tuple(raw)
    # string-like
    if not isinstance(raw, str):
        raise bad
    if k.optional and raw == "":
        return None
    if k.kind == "path":
        if "\0" in raw or not raw:
            raise bad
        p = Path(raw)
        if raw == "~" or raw.startswith("~/"):
            p = Path(home) / raw[2:]
        return p if p.is_absolute() else base / p
    if k.kind == "secret":
        value = raw.strip()
        if not value:
            raise ValueError("must not be empty")
        return Secret(value)
    return raw


def _check(k: Key, value: Any, raw: Any) -> None:
    if value is None or k.check is None:
        return
    if not k.check(value):
        raise ValueError(f"{_expected(k)}, got {_shown(raw)}")


def _suggest(name: str, options: list[str]) -> str:
    import difflib  # only for a misspelt key: not worth its import at every start

    close = difflib.get_close_matches(name, options, n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


@attrs.frozen
class _Layer:
    """The keys one source sets, already coerced and checked."""

    where: str
    values: dict[str, Any]


def _file_layer(path: Path, home: str) -> _Layer:
    import tomllib  # only with a config file (~5 ms of start-up without one)

    where = str(path)
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise _fail("config", f"{path}: no such file", None) from None
    except OSError as exc:
        raise _fail("config", f"{path}: cannot read: {exc.strerror}", None) from None
    except tomllib.TOMLDecodeError as exc:
        raise _fail("config", f"{path}: invalid TOML: {exc}", None) from None
    except UnicodeDecodeError:
        raise _fail("config", f"{path}: not UTF-8", None) from None
    flat: dict[str, Any] = {}
    for top, value in data.items():
        if top in _SECTIONS:
            if not isinstance(value, dict):
                raise _fail(top, f"must be a table ([{top}]), got {_shown(value)}", where)
            for sub, v in value.items():
                flat[f"{top}.{sub}"] = v
        else:
            flat[top] = value
    values: dict[str, Any] = {}
    base = path.parent.absolute()
    for name, raw in flat.items():
        k = SCHEMA.get(name)
        if k is None:
            raise _fail(name, "unknown key" + _suggest(name, list(SCHEMA)), where)
        try:
            values[name] = _coerce(k, raw, from_text=False, base=base, home=home)
            _check(k, values[name], raw)
        except ValueError as exc:
            raise _fail(name, str(exc), where) from None
    _one_key_source(values, "set either api_key or api_key_file, not both", where)
    return _Layer(where, values)


def _text_layer(where_of: Callable[[Key], str], items: dict[str, str], home: str) -> dict[str, Any]:
    values: dict[str, Any] = {}
    base = Path.cwd()
    for name, raw in items.items():
        k = SCHEMA[name]
        try:
            values[name] = _coerce(k, raw, from_text=True, base=base, home=home)
            _check(k, values[name], raw)
        except ValueError as exc:
            raise _fail(name, str(exc), where_of(k)) from None
    return values


def _env_layer(environ: Mapping[str, str], home: str) -> dict[str, Any]:
    items: dict[str, str] = {}
    for var, raw in environ.items():
        if var in (API_KEY_ENV, API_KEY_FALLBACK_ENV, SOCKET_ENV):
            continue  # read below, where their precedence is decided
        if not var.startswith("GEMINID_"):
            continue
        k = ENV_NAMES.get(var)
        if k is None:
            if var.startswith(ENV_PASSTHROUGH_PREFIXES):
                continue
            if var == "GEMINID_UPSTREAM_API_KEY":
                raise _fail(var, f"unknown variable: the key is read from {API_KEY_ENV}", "env")
            raise _fail(var, "unknown variable" + _suggest(var, list(ENV_NAMES)), "env")
        items[k.name] = raw
    if key_var := env_key_variable(environ):
        items["upstream.api_key"] = environ[key_var]
    if alias := environ.get(SOCKET_ENV):
        own = items.get("server.socket_path")
        if own is not None and own != alias:
            raise _fail(
                "server.socket_path",
                f"{SOCKET_ENV} and GEMINID_SERVER_SOCKET_PATH name different paths",
                "env",
            )
        items["server.socket_path"] = alias
    _one_key_source(
        items, f"set either {API_KEY_ENV} or GEMINID_UPSTREAM_API_KEY_FILE, not both", "env"
    )

    def where_of(k: Key) -> str:
        if k.name == "upstream.api_key":
            return f"env {key_var}"
        if k.name == "server.socket_path" and SOCKET_ENV in environ:
            return f"env {SOCKET_ENV}"
        return f"env {k.env}"

    return _text_layer(where_of, items, home)


def env_key_variable(environ: Mapping[str, str]) -> str | None:
    """Which variable the key comes from: ``GEMINI_API_KEY``, else ``GOOGLE_API_KEY`` (blank
    counts as unset), else None."""
    for var in (API_KEY_ENV, API_KEY_FALLBACK_ENV):
        if environ.get(var, "").strip():
            return var
    return None


def _one_key_source(values: Mapping[str, Any], reason: str, where: str | None) -> None:
    """The key and the key file are one choice: one layer may set one of them, not both."""
    if "upstream.api_key" in values and "upstream.api_key_file" in values:
        raise _fail("upstream.api_key", reason, where)


def _sets_key(values: Mapping[str, Any]) -> bool:
    return "upstream.api_key" in values or "upstream.api_key_file" in values


#: argparse dest -> dotted key
FLAG_KEYS: dict[str, str] = {
    "endpoint": "upstream.endpoint",
    "api_key_file": "upstream.api_key_file",
    "state_dir": "state_dir",
    "socket": "server.socket_path",
    "log_level": "log.level",
    "log_format": "log.format",
    # live.* (the Live endpoint)
    "live_listen": "live.listen",
}


class _RefuseApiKeyFlag(argparse.Action):
    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any) -> None:
        kwargs["nargs"] = "?"
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *_args: Any, **_kw: Any) -> None:
        parser.error(
            "--api-key is not supported: a key on the command line is visible to every user "
            f"(ps); use --api-key-file, a systemd credential or {API_KEY_ENV}"
        )


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the configuration flags to ``parser`` (every default is None = "not given")."""
    g = parser.add_argument_group(
        "configuration", "precedence: flags > environment > config file > defaults"
    )
    g.add_argument("--config", metavar="PATH", help="TOML config file (default: see docs)")
    g.add_argument("--endpoint", metavar="URL", help="upstream.endpoint (ws:// or wss://)")
    g.add_argument(
        "--api-key-file",
        metavar="PATH",
        help="file holding the Gemini API key (there is no --api-key: argv is visible in ps)",
    )
    # Refuse --api-key explicitly: otherwise argparse would take it as an abbreviation of
    # --api-key-file and echo the key back in a "no such file" error.
    g.add_argument("--api-key", action=_RefuseApiKeyFlag, help=argparse.SUPPRESS)
    g.add_argument("--state-dir", metavar="DIR", help="checkpoint directory (state_dir)")
    g.add_argument("--socket", metavar="PATH", help="Unix socket path (server.socket_path)")
    g.add_argument("--log-level", metavar="LEVEL", help="debug, info, warning or error")
    g.add_argument("--log-format", metavar="FMT", help="auto, json or console")
    g.add_argument("--live-listen", metavar="HOST:PORT",
                   help="loopback TCP listener of the Gemini Live endpoint (live.listen)")


def _flag_layer(args: argparse.Namespace, home: str) -> dict[str, Any]:
    items = {
        key: value
        for dest, key in FLAG_KEYS.items()
        if (value := getattr(args, dest, None)) is not None
    }
    flag_of = {key: "--" + dest.replace("_", "-") for dest, key in FLAG_KEYS.items()}
    return _text_layer(lambda k: flag_of[k.name], items, home)


# ---------------------------------------------------------------------------------- sources


def _under_system_manager(environ: Mapping[str, str]) -> bool:
    """Started by the system systemd (a user manager sets MANAGERPID, the system one not)."""
    return "INVOCATION_ID" in environ and "MANAGERPID" not in environ


def _home(environ: Mapping[str, str]) -> str:
    return environ.get("HOME") or str(Path.home())


def default_config_path(environ: Mapping[str, str], euid: int | None = None) -> Path:
    """Where the config file is looked for when ``--config`` is not given:
    ``$CONFIGURATION_DIRECTORY/config.toml`` (``ConfigurationDirectory=``), else
    ``/etc/geminid/config.toml`` for root or a system service, else
    ``$XDG_CONFIG_HOME/geminid/config.toml`` (``~/.config/geminid/config.toml``)."""
    if conf_dir := environ.get("CONFIGURATION_DIRECTORY"):
        return Path(conf_dir.split(":")[0]) / "config.toml"
    euid = os.geteuid() if euid is None else euid
    if euid == 0 or _under_system_manager(environ):
        return SYSTEM_CONFIG_PATH
    xdg = environ.get("XDG_CONFIG_HOME") or str(Path(_home(environ)) / ".config")
    return Path(xdg) / "geminid" / "config.toml"


def read_key_file(path: Path) -> Secret:
    """The API key held in ``path`` (surrounding whitespace stripped); ConfigError otherwise."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise _fail("upstream.api_key_file", f"{path}: no such file", None) from None
    except IsADirectoryError:
        raise _fail("upstream.api_key_file", f"{path}: is a directory", None) from None
    except OSError as exc:
        raise _fail("upstream.api_key_file", f"{path}: cannot read: {exc.strerror}", None) from None
    except UnicodeDecodeError:
        raise _fail("upstream.api_key_file", f"{path}: not UTF-8 text", None) from None
    key = text.strip()
    if not key:
        raise _fail("upstream.api_key_file", f"{path}: file is empty", None)
    if any(c.isspace() for c in key):
        raise _fail("upstream.api_key_file", f"{path}: must hold one key on one line", None)
    return Secret(key)


def _build(section_values: dict[str, dict[str, Any]], top: dict[str, Any]) -> Config:
    sections = {name: cls(**section_values.get(name, {})) for name, cls in _SECTIONS.items()}
    return Config(**sections, **top)


def load_config(args: argparse.Namespace, environ: Mapping[str, str]) -> Config:
    """The effective Config from flags (``args``), ``environ`` and the config file.

    Raises :class:`ConfigError` (one line: ``<key>: <reason> (<where>)``) on any problem.
    Registers the API key with :func:`geminid.daemon.logsetup.register_secret` (pinned), so
    that it is redacted from every log line from then on.
    """
    home = _home(environ)
    explicit = getattr(args, "config", None) or environ.get(CONFIG_ENV) or None
    path = Path(explicit).expanduser() if explicit else default_config_path(environ)
    source: Path | None = None
    file_values: dict[str, Any] = {}
    if explicit or path.exists():
        layer = _file_layer(path, home)
        file_values, source = layer.values, path.absolute()

    cred_values: dict[str, Any] = {}
    if cred_dir := environ.get("CREDENTIALS_DIRECTORY"):
        cred = Path(cred_dir) / CREDENTIAL_NAME
        if cred.exists():
            cred_values["upstream.api_key_file"] = cred

    env_values = _env_layer(environ, home)
    flag_values = _flag_layer(args, home)

    merged: dict[str, Any] = {}
    where: dict[str, str] = {}
    key_origin: str | None = None
    flag_of = {key: "--" + dest.replace("_", "-") for dest, key in FLAG_KEYS.items()}
    env_key = env_key_variable(environ)

    def env_where(n: str) -> str:
        return f"env {env_key if n == 'upstream.api_key' else SCHEMA[n].env}"

    layers: list[tuple[str, dict[str, Any], Callable[[str], str]]] = [
        (f"config file {source}", file_values, lambda _n: str(source)),
        ("systemd credential", cred_values, lambda _n: "systemd credential"),
        ("env", env_values, env_where),
        ("flag", flag_values, lambda n: flag_of[n]),
    ]
    for origin, values, where_of in layers:
        if _sets_key(values):  # the highest layer that sets either wins
            merged.pop("upstream.api_key", None)
            merged.pop("upstream.api_key_file", None)
            key_origin = origin
        merged.update(values)
        where.update({n: where_of(n) for n in values})

    # Cross-field rules.
    b = {
        **attrs.asdict(BackoffPolicy()),
        **{k[8:]: v for k, v in merged.items() if k.startswith("backoff.")},
    }
    if b["cap"] < b["initial"]:
        raise _fail(
            "backoff.cap",
            f"must be >= backoff.initial ({b['initial']}), got {b['cap']}",
            where.get("backoff.cap") or where.get("backoff.initial"),
        )
    if b["quota_cap"] < b["quota_initial"]:
        raise _fail(
            "backoff.quota_cap",
            f"must be >= backoff.quota_initial ({b['quota_initial']}), got {b['quota_cap']}",
            where.get("backoff.quota_cap") or where.get("backoff.quota_initial"),
        )

    # Defaults that depend on the environment given (not os.environ).
    merged.setdefault("state_dir", _default_state_dir(environ))
    merged.setdefault("server.socket_path", runtime_dir(environ) / SOCKET_NAME)
    sock = merged["server.socket_path"]
    if len(os.fsencode(sock)) > MAX_SOCKET_PATH:
        raise _fail(
            "server.socket_path",
            f"too long for a Unix socket ({len(os.fsencode(sock))} bytes > {MAX_SOCKET_PATH})",
            where.get("server.socket_path"),
        )

    # live.* (the Live endpoint): a non-loopback listener only when explicitly allowed.
    if (listen := merged.get("live.listen")) is not None and not merged.get("live.allow_non_loopback"):
        from geminid.daemon.live.listen import loopback_problem

        problem = loopback_problem(listen)
        if problem is not None:
            raise _fail("live.listen", problem, where.get("live.listen"))
    if (merged.get("live.tls_cert") is None) != (merged.get("live.tls_key") is None):
        half = "live.tls_cert" if merged.get("live.tls_cert") is not None else "live.tls_key"
        raise _fail(half, "set live.tls_cert and live.tls_key both, or neither", where.get(half))

    key_source: str | None = None
    if (key_file := merged.get("upstream.api_key_file")) is not None:
        merged["upstream.api_key"] = read_key_file(key_file)
        kind = "credential" if key_origin == "systemd credential" else "file"
        key_source = f"{kind} {key_file}"
    elif merged.get("upstream.api_key") is not None:
        key_source = f"env {env_key}" if key_origin == "env" else key_origin
    merged["upstream.api_key_source"] = key_source

    # -- upstream backend (issue #14): Vertex is transparent unless told otherwise.
    if merged.get("upstream.backend") == "vertex":
        merged.setdefault("upstream.transparent", True)

    section_values: dict[str, dict[str, Any]] = {}
    top: dict[str, Any] = {"source": source}
    for name, value in merged.items():
        if "." in name:
            sec, field = name.split(".", 1)
            section_values.setdefault(sec, {})[field] = value
        else:
            top[name] = value
    cfg = _build(section_values, top)
    if cfg.upstream.api_key is not None:
        logsetup.register_secret(cfg.upstream.api_key.reveal(), pin=True)
    # -- upstream backend (issue #14): no project, no google-auth, unreadable credentials.
    from geminid.daemon.backend import check_upstream

    check_upstream(cfg.upstream, environ)
    return cfg


def reload_api_key(cfg: Config) -> Config:
    """Re-read ``upstream.api_key_file`` (SIGHUP, key rotation); ``cfg`` unchanged when the key
    does not come from a file. Raises ConfigError (keep the old config then). The new key is
    registered for redaction; the old one stays registered (it is still a secret)."""
    path = cfg.upstream.api_key_file
    if path is None:
        return cfg
    key = read_key_file(path)
    logsetup.register_secret(key.reveal(), pin=True)
    if cfg.upstream.api_key is not None and cfg.upstream.api_key.reveal() == key.reveal():
        return cfg
    return attrs.evolve(cfg, upstream=attrs.evolve(cfg.upstream, api_key=key))


def key_rotated(old: Config, new: Config) -> bool:
    """True when ``new`` holds a different API key than ``old`` (for ``config.reloaded``)."""
    a, b = old.upstream.api_key, new.upstream.api_key
    return (a.reveal() if a else None) != (b.reveal() if b else None)


# ---------------------------------------------------------------------------------- rendering


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value), ensure_ascii=False)


def render_config(cfg: Config) -> str:
    """The effective configuration as TOML (parseable by tomllib), with the API key never
    shown: ``api_key = "<set: from env GEMINI_API_KEY>"``. Unset optional keys appear as
    comments. Each key carries its environment variable name as a comment."""
    lines = [
        "# geminid effective configuration",
        f"# config file: {cfg.source if cfg.source else '(none)'}",
        "# precedence: flags > environment > systemd credential > config file > defaults",
    ]
    current: str | None = None
    ordered = [k for k in SCHEMA.values() if k.section is None] + [
        k for k in SCHEMA.values() if k.section is not None
    ]
    for k in ordered:
        if k.section != current:
            current = k.section
            lines += ["", f"[{current}]"]
        obj = getattr(cfg, k.section) if k.section else cfg
        value = getattr(obj, k.field)
        comment = f"  # {k.env}"
        if k.kind == "secret":
            if value is None:
                lines.append(f"# {k.field}: not set (geminid run uses the embedded fake upstream)")
            else:
                src = cfg.upstream.api_key_source or "unknown"
                lines.append(f'{k.field} = "<set: from {src}>"{comment}')
        elif value is None:
            lines.append(f"# {k.field} = (not set){comment}")
        else:
            lines.append(f"{k.field} = {_toml_value(value)}{comment}")
    text = "\n".join(lines) + "\n"
    key = cfg.upstream.api_key.reveal() if cfg.upstream.api_key is not None else ""
    # Belt and braces: never print the key. A value shorter than a secret can be (a typo'd
    # one-letter key) is not searched for: replacing every "e" would mangle the whole output.
    if len(key) >= logsetup.MIN_SECRET_LEN:
        text = text.replace(key, "<redacted>")
    return logsetup.redact_text(text)


def check_config_main(args: argparse.Namespace) -> int:
    """``geminid check-config``: print the effective config, exit 0; on a bad config one line
    ``geminid: config error: <key>: <reason>`` on stderr, exit 2."""
    try:
        cfg = load_config(args, os.environ)
    except ConfigError as exc:
        print(f"geminid: config error: {logsetup.redact_text(exc.message)}", file=sys.stderr)
        return 2
    sys.stdout.write(render_config(cfg))
    sys.stdout.flush()
    for warning in saved_session_warnings(cfg.state_dir):
        print(f"geminid: warning: {warning}", file=sys.stderr)
    return 0


def saved_session_warnings(state_dir: Path) -> list[str]:
    """Warnings about the sessions checkpointed in ``state_dir`` (the daemon restores them at
    start): a setup naming a retired model (:mod:`geminid.protocol.models`). Read only."""
    from geminid.daemon.checkpoint import SUFFIX, decode_record
    from geminid.daemon.errors import CheckpointCorrupt
    from geminid.protocol.models import setup_warnings

    out: list[str] = []
    try:
        paths = sorted(state_dir.glob(f"*{SUFFIX}"))
    except OSError:
        return out
    for path in paths:
        name = path.name[: -len(SUFFIX)]
        try:
            setup = decode_record(path.read_bytes(), name).get("setup")
        except (OSError, CheckpointCorrupt):
            continue
        if isinstance(setup, dict):
            out.extend(f"session {name!r}: {w}" for w in setup_warnings(setup))
    return out
