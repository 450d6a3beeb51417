"""The one configuration object of geminid (schema and defaults).

Loading (TOML file, environment, flags, precedence, validation messages) lives in
``geminid.daemon.config_load``; this module only says *what* can be configured, so that every
other module can depend on it without pulling in parsing.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import attrs

from geminid.daemon.upstream import BackoffPolicy
from geminid.protocol.constants import runtime_dir as _default_runtime_dir

#: The real service, pinned to v1beta (GEMINI_LIVE.md §1).
DEFAULT_ENDPOINT = (
    "wss://generativelanguage.googleapis.com/ws/"
    "google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent"
)


@attrs.frozen(repr=False)
class Secret:
    """A string that never shows itself: repr/str are redacted so that it cannot leak by accident.

    ``reveal()`` is the only way to get the value, which makes every use greppable.
    """

    _value: str

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__


def _default_state_dir(environ: Mapping[str, str] | None = None) -> Path:
    environ = os.environ if environ is None else environ
    base = environ.get("STATE_DIRECTORY")
    if base:
        return Path(base.split(":")[0])
    home = environ.get("HOME") or str(Path.home())
    xdg = environ.get("XDG_STATE_HOME") or str(Path(home) / ".local" / "state")
    return Path(xdg) / "geminid"


#: ``upstream.consumed_index``: how Vertex's ``lastConsumedClientMessageIndex`` counts (its
#: base, 0 or 1, and its scope, per connection or over the session; unconfirmed for the real
#: service), besides ``"auto"`` (detected from the updates, daemon/session/consumed.py).
CONSUMED_INDEX_CONVENTIONS = ("0-connection", "1-connection", "0-session", "1-session")


@attrs.frozen
class UpstreamConfig:
    endpoint: str = DEFAULT_ENDPOINT
    #: None means: no key configured, so ``geminid run`` uses the embedded fake upstream.
    api_key: Secret | None = None
    api_key_file: Path | None = None
    connect_timeout: float = 10.0
    setup_timeout: float = 15.0
    #: No frame at all from the server for this long while live means a stall (0 = off).
    #: Gemini sends nothing while idle, so this only applies while a reply is expected.
    stall_timeout: float = 30.0
    max_message_size: int = 64 * 1024 * 1024
    #: WebSocket ping interval (0 = no pings). Gemini answers pings in 8-30 s, so the pong
    #: timeout must be generous: a 20 s timeout causes self-inflicted 1011s (GEMINI_LIVE.md §7).
    keepalive_interval: float = 30.0
    keepalive_timeout: float = 90.0
    #: Vertex-style transparent resumption (lastConsumedClientMessageIndex). On the Developer
    #: API this is an unknown field and fatal, so it is off there; with ``backend = "vertex"``
    #: the loader turns it on unless it is set explicitly.
    transparent: bool = False
    #: Transparent mode: the index convention, ``"auto"`` (detected; the default) or one of
    #: :data:`CONSUMED_INDEX_CONVENTIONS` (only that reading is trusted).
    consumed_index: str = "auto"
    #: During a goAway drain, dial the next connection (TCP, TLS, WebSocket handshake) while the
    #: old one drains; its setup is sent once the old one is closed.
    predial: bool = True
    #: Where the key came from, for check-config and logs (never the key itself), e.g.
    #: ``"env GEMINI_API_KEY"`` or ``"file /etc/geminid/api_key"``. Set by config_load.
    api_key_source: str | None = None

    # -- backend and short-lived credentials (issue #14; README "Vertex AI") ------------------
    #: ``"gemini-api"`` (the Developer API with an API key) or ``"vertex"`` (Vertex AI with
    #: OAuth bearer tokens from google-auth, refreshed before each dial).
    backend: str = "gemini-api"
    #: Vertex: the Google Cloud project (required) and the region of the endpoint.
    vertex_project: str | None = None
    vertex_location: str = "us-central1"
    #: Vertex: a service-account or authorized-user JSON file; unset = Application Default
    #: Credentials (``GOOGLE_APPLICATION_CREDENTIALS``, gcloud, workload identity, metadata server).
    vertex_credentials_file: Path | None = None
    #: Developer API: a file holding an ephemeral token (``Authorization: Token``, the
    #: ``BidiGenerateContentConstrained`` method), re-read before each dial.
    auth_token_file: Path | None = None


@attrs.frozen
class SessionConfig:
    replay_buffer_bytes: int = 8 * 1024 * 1024
    #: Audio older than this is dropped (and counted) rather than replayed after a reconnect.
    audio_staleness: float = 1.0
    #: End a session with no client activity for this long (0 = never).
    inactivity_timeout: float = 1800.0
    #: Rotate this long before the goAway deadline at the latest.
    goaway_margin: float = 5.0
    #: Validity of a resumption handle after its connection ends (Developer API: 2 h).
    handle_ttl: float = 7200.0
    #: Re-seed a fresh session (after context loss) from the saved transcript tail.
    reseed: bool = False
    transcript_tail: int = 64
    #: Events kept per session for ``session.attach`` with ``since``.
    event_ring: int = 4096


@attrs.frozen
class ServerConfig:
    socket_path: Path = attrs.field(factory=lambda: _default_runtime_dir() / "geminid.sock")
    #: Group that may connect (socket mode 0660); None means mode 0600, owner only.
    socket_group: str | None = None
    #: Extra uids admitted besides the daemon's own uid and root.
    allowed_uids: tuple[int, ...] = ()
    max_line_bytes: int = 4 * 1024 * 1024
    #: Per-client outgoing queue, in messages; overflow marks the client lagged.
    client_queue: int = 1024


@attrs.frozen
class LogConfig:
    level: str = "info"
    #: "auto" = console renderer on a TTY, JSON lines otherwise.
    format: str = "auto"


# -- live.* (the drop-in Gemini Live endpoint, geminid.daemon.live) --------------------------


@attrs.frozen
class LiveConfig:
    """The Gemini Live protocol endpoint (BidiGenerateContent) that geminid serves itself."""

    #: Serve it on a Unix socket beside the JSON-RPC one (peer credentials checked alike).
    unix: bool = True
    #: That socket's path; None: ``<server.socket_path's dir>/geminid-live.sock``.
    socket_path: Path | None = None
    #: Loopback TCP listener, ``"127.0.0.1:8766"``; None: no TCP listener (the default).
    listen: str | None = None
    #: Let ``listen`` name a non-loopback address (refused at start otherwise).
    allow_non_loopback: bool = False
    #: The local token TCP clients present instead of an API key; None: ``<state_dir>/live_token``.
    token_file: Path | None = None
    #: TLS on the TCP listener (google-genai always dials wss://); false: plain ws://.
    tls: bool = True
    #: The certificate and key to serve; None: a self-signed pair in ``<state_dir>/live_tls/``.
    tls_cert: Path | None = None
    tls_key: Path | None = None


# -- end live.* ----------------------------------------------------------------------------


@attrs.frozen
class Config:
    upstream: UpstreamConfig = UpstreamConfig()
    session: SessionConfig = SessionConfig()
    backoff: BackoffPolicy = BackoffPolicy()
    server: ServerConfig = attrs.field(factory=ServerConfig)
    log: LogConfig = LogConfig()
    live: LiveConfig = LiveConfig()
    state_dir: Path = attrs.field(factory=_default_state_dir)
    #: Upper bound on a graceful drain after SIGTERM.
    shutdown_timeout: float = 10.0
    #: Where the config was read from (for check-config); None when no file was used.
    source: Path | None = None

    @property
    def embedded_fake(self) -> bool:
        """No key configured: ``geminid run`` serves sessions from the in-process fake."""
        up = self.upstream
        return (
            up.api_key is None and up.api_key_file is None
            and up.backend == "gemini-api" and up.auth_token_file is None
        )
