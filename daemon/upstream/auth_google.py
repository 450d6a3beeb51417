"""Vertex AI credentials: OAuth access tokens from google-auth, refreshed before the dial that needs one.

Vertex authenticates a Live dial with ``Authorization: Bearer <access token>``; Google's tokens
live about an hour and a session lives for days, so the token is checked at every dial and
refreshed when it expires within :data:`REFRESH_MARGIN` (five minutes: enough for the dial, the
setup and clock skew). Why each piece is the way it is:

* **google-auth does the OAuth**: Application Default Credentials (``GOOGLE_APPLICATION_CREDENTIALS``,
  the gcloud user file, workload identity, the metadata server) or an explicit service-account /
  authorized-user JSON file. Its refresh is blocking HTTP (``requests``), so it runs in a worker
  thread (``trio.to_thread.run_sync``), never on the event loop, and every HTTP call it makes is
  bounded by :data:`TOKEN_HTTP_TIMEOUT` so an abandoned thread (a dial cancelled by its connect
  timeout) ends by itself.
* **One refresh for many sessions**: every session of the daemon shares one object; a
  :class:`trio.Lock` serialises refreshes, and a dial that waited on the lock while another one
  refreshed uses that result (a generation counter) instead of refreshing again, so the token
  endpoint is called about once per expiry, not once per dial, even when tokens are short-lived.
* **401 at the upgrade**: :meth:`VertexCredentials.invalidate` marks the token stale, the next
  dial refreshes whatever its expiry says (the classifier allows that one retry because
  ``refreshable`` is True).
* **Secrets**: each token is registered with the log redactor (pinned while current and for one
  refresh after it is replaced, then forgotten); nothing here puts a token, a private key or a refresh token
  in a ``repr``, a log line or an error message. Errors name the file and the failure's type.
* **Optional dependency**: google-auth is the ``vertex`` extra. This module imports without it;
  constructing the credentials raises one :class:`~geminid.daemon.errors.ConfigError` line.
"""

from __future__ import annotations

import datetime
import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import structlog
import trio

from ..errors import ConfigError
from ..logsetup import redact_text
from .auth import AUTHORIZATION_HEADER, CredentialError, DialAuth, PinnedSecrets

log = structlog.get_logger("geminid.upstream")

#: Refresh before a dial when the token expires within this long.
REFRESH_MARGIN = datetime.timedelta(minutes=5)
#: Bound on each HTTP request of a refresh (google-auth's own default is 120 s).
TOKEN_HTTP_TIMEOUT = 30.0
#: The OAuth scope of Vertex AI.
CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
#: What a Vertex config without the extra gets, as one line.
MISSING_GOOGLE_AUTH = "Vertex AI needs google-auth: pip install 'geminid[vertex]'"
#: Credential file types taken from an explicit file (``type`` in the JSON). Other types
#: (external_account, impersonation) go through :meth:`VertexCredentials.from_adc`: loading them
#: from a config-named file can run a program or fetch URLs the file names (google-auth's
#: deprecation of ``load_credentials_from_dict`` says the same).
FILE_TYPES = ("service_account", "authorized_user")


class GoogleCredentials(Protocol):
    """The part of ``google.auth.credentials.Credentials`` used here."""

    token: str | None
    expiry: datetime.datetime | None

    def refresh(self, request: Any) -> None: ...


def utcnow() -> datetime.datetime:
    """Naive UTC, the convention of google-auth's ``expiry``."""
    return datetime.datetime.now(datetime.UTC).replace(tzinfo=None)


def needs_refresh(
    token: str | None,
    expiry: datetime.datetime | None,
    now: datetime.datetime,
    *,
    stale: bool = False,
    margin: datetime.timedelta = REFRESH_MARGIN,
) -> bool:
    """Pure: must the token be refreshed before a dial at ``now``?

    No token, a token marked stale (refused by the server), or one that expires within
    ``margin``: yes. A token without an expiry (some credential types) is used until refused.
    """
    if not token or stale:
        return True
    if expiry is None:
        return False
    return expiry - now <= margin


def _from_info(info: dict[str, Any]) -> GoogleCredentials:
    """The google-auth object for a file's JSON (its constructors are untyped: held as Any)."""
    from google.oauth2 import credentials as user_credentials
    from google.oauth2 import service_account

    build: Any = (
        service_account.Credentials.from_service_account_info
        if info["type"] == "service_account"
        else user_credentials.Credentials.from_authorized_user_info
    )
    creds: GoogleCredentials = build(info, scopes=[CLOUD_PLATFORM_SCOPE])
    return creds


def _google_auth() -> Any:
    """The google.auth modules, or the one-line ConfigError when the extra is not installed."""
    try:
        import google.auth
        import google.auth.exceptions
        import google.auth.transport.requests
    except ImportError as exc:
        raise ConfigError(MISSING_GOOGLE_AUTH) from exc
    return google.auth


def require_google_auth() -> None:
    """Raise the one-line ConfigError when the ``vertex`` extra is not installed (config checks)."""
    _google_auth()


class _BoundedRequest:
    """google-auth's requests transport with a timeout on every call (it defaults to 120 s)."""

    def __init__(self, timeout: float) -> None:
        import google.auth.transport.requests

        self._inner = google.auth.transport.requests.Request()
        self._timeout = timeout

    def __call__(self, url: str, method: str = "GET", body: Any = None, headers: Any = None,
                 timeout: float | None = None, **kwargs: Any) -> Any:
        return self._inner(url, method=method, body=body, headers=headers,
                           timeout=timeout if timeout is not None else self._timeout, **kwargs)


class VertexCredentials:
    """Bearer tokens for Vertex AI, one google-auth credentials object shared by every session.

    Build it with :meth:`from_file` (an explicit JSON file) or :meth:`from_adc` (Application
    Default Credentials); the constructor takes an already-built google-auth object (tests,
    workload identity set up by the caller).
    """

    refreshable = True

    def __init__(
        self,
        google_credentials: GoogleCredentials,
        *,
        source: str = "application default credentials",
        request: Callable[..., Any] | None = None,
        now: Callable[[], datetime.datetime] = utcnow,
        margin: datetime.timedelta = REFRESH_MARGIN,
    ) -> None:
        _google_auth()
        self._creds = google_credentials
        #: Where the credentials came from, for errors (a path or "application default ...").
        self.source = source
        self._request = request if request is not None else _BoundedRequest(TOKEN_HTTP_TIMEOUT)
        self._now = now
        self._margin = margin
        self._lock = trio.Lock()
        #: Serialises google-auth's own state when a cancelled dial abandoned its thread.
        self._thread_lock = threading.Lock()
        self._stale = False
        #: Bumped by each successful refresh; a dial that waited on the lock compares it.
        self._generation = 0
        #: Token endpoint calls made (metrics, tests).
        self.refreshes = 0
        #: Tokens registered with the redactor, newest last (at most two).
        self._secrets = PinnedSecrets()

    @classmethod
    def from_file(cls, path: str | Path, **kwargs: Any) -> VertexCredentials:
        """A service-account / authorized-user JSON file; ConfigError names the file, never its content."""
        _google_auth()
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
            raise ConfigError(f"Vertex credentials file {str(path)!r}: cannot read it ({reason})") from None
        try:
            info = json.loads(text)
        except ValueError:
            raise ConfigError(f"Vertex credentials file {str(path)!r}: not valid JSON") from None
        if not isinstance(info, dict) or info.get("type") not in FILE_TYPES:
            kind = info.get("type") if isinstance(info, dict) else None
            raise ConfigError(
                f"Vertex credentials file {str(path)!r}: type {kind!r} is not one of {', '.join(FILE_TYPES)}"
            )
        try:
            creds = _from_info(info)
        except Exception as exc:  # noqa: BLE001 - any failure is a bad file; its text may quote it
            raise ConfigError(
                f"Vertex credentials file {str(path)!r}: not usable as {info['type']} ({_safe_reason(exc)})"
            ) from None
        return cls(creds, source=str(path), **kwargs)

    @classmethod
    def from_adc(cls, **kwargs: Any) -> VertexCredentials:
        """Application Default Credentials (``GOOGLE_APPLICATION_CREDENTIALS``, gcloud, metadata server)."""
        ga = _google_auth()
        try:
            creds, _project = ga.default(scopes=[CLOUD_PLATFORM_SCOPE])
        except ga.exceptions.DefaultCredentialsError as exc:
            raise ConfigError(f"Vertex AI: no application default credentials ({_safe_reason(exc)})") from None
        return cls(creds, **kwargs)

    async def auth_for_dial(self) -> DialAuth:
        token = await self._fresh_token()
        return DialAuth(headers=((AUTHORIZATION_HEADER, b"Bearer " + token.encode()),))

    def invalidate(self) -> None:
        """A 401 refused the token: the next dial refreshes, whatever the expiry says."""
        self._stale = True

    async def _fresh_token(self) -> str:
        seen = self._generation
        async with self._lock:
            creds = self._creds
            if self._generation != seen and creds.token and not self._stale:
                # Another dial refreshed while this one waited: use its token, even if it is a
                # short-lived one that is already inside the margin (it is still valid).
                if creds.expiry is None or creds.expiry > self._now():
                    return self._pin(creds.token)
            if needs_refresh(creds.token, creds.expiry, self._now(), stale=self._stale, margin=self._margin):
                await self._refresh()
            assert creds.token is not None
            # Pinned here too: a refresh in a thread abandoned by a cancelled dial may have set it.
            return self._pin(creds.token)

    def _pin(self, token: str) -> str:
        """Register ``token`` with the redactor; the one before stays pinned, older ones are forgotten.

        The previous token stays for one generation because a log line about the dial that used
        it may still come after the refresh.
        """
        return self._secrets.pin(token)

    async def _refresh(self) -> None:
        self.refreshes += 1
        try:
            await trio.to_thread.run_sync(self._refresh_in_thread, abandon_on_cancel=True)
        except Exception as exc:  # noqa: BLE001 - google-auth raises many types; one clear error out
            log.warning("upstream.token_refresh_failed", source=self.source, error=type(exc).__name__)
            raise CredentialError(
                f"Vertex AI token refresh failed for {self.source} ({_safe_reason(exc)})"
            ) from None
        token = self._creds.token
        if not token:
            raise CredentialError(f"Vertex AI token refresh for {self.source} returned no token")
        self._pin(token)
        self._stale = False
        self._generation += 1
        expiry = self._creds.expiry
        log.info(
            "upstream.token_refreshed",
            source=self.source,
            expires_in=round((expiry - self._now()).total_seconds()) if expiry is not None else None,
        )

    def _refresh_in_thread(self) -> None:
        with self._thread_lock:
            self._creds.refresh(self._request)

    def __repr__(self) -> str:
        state = "token" if self._creds.token else "no token"
        return f"VertexCredentials({self.source!r}, {state})"


def _safe_reason(exc: BaseException) -> str:
    """An exception's type and a short, redacted first line of its text (never a secret value).

    google-auth's messages name files and OAuth error codes; they can quote a token endpoint's
    answer, so the text is cut, and registered secrets are redacted from it.
    """
    text = str(exc).splitlines()[0] if str(exc) else ""
    text = redact_text(text)[:160]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__

