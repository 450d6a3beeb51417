"""Credentials: what a dial presents to the upstream, asked for afresh at every dial.

The seam is httpx's ``Auth`` turned to a WebSocket upgrade: the link does not know what a key or
a token is; before each dial it awaits :meth:`Credentials.auth_for_dial` and sends the headers
(and query parameters) it gets back. The call is awaited *inside* the connect timeout, so a
credential that has to be fetched (a token endpoint, the metadata server) is bounded like the
TCP connect, and its failure is a connect failure, not a hang.

Implementations today:

* :class:`ApiKey`: the Gemini Developer API key, from ``upstream.api_key_file``, the environment
  or a systemd credential (reading those is the configuration loader's job; this object holds
  the result). SIGHUP re-reads the file and :meth:`ApiKey.rotate` swaps the key; the next dial
  of every session presents the new one.
* :class:`FixedKey`: a key that never changes (the embedded fake upstream, tests).

* :class:`EphemeralToken`: an ephemeral token (``Authorization: Token auth_tokens/...``, the
  ``BidiGenerateContentConstrained`` method) re-read from a file at every dial, so that a backend
  can rotate it.
* ``VertexCredentials`` (:mod:`.auth_google`): Vertex AI bearer tokens from google-auth, refreshed
  off the event loop when they expire within five minutes; ``invalidate()`` after a 401 forces a
  refresh. Kept in its own module because google-auth is an optional extra.

Tokens are ``refreshable``: the classifier's ``Context.credential_refreshable`` turns a first
401 (or a "token expired" / "used too many times" close) into one retry with a fresh credential
instead of a fatal ending. A credential that cannot be produced at dial time (token endpoint
down, token file unreadable) raises :class:`CredentialError`, which the link reports as a
network-kind ending with that reason (retried with backoff, bounded by the retry budget).

Secrets: the values returned here are registered with the log redactor by whoever reads them
(the configuration loader for keys); neither :class:`DialAuth` nor the credentials show them in
their ``repr``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import attrs
import trio

from ..logsetup import forget_secret, register_secret


class PinnedSecrets:
    """A rotating credential's values as the log redactor must know them.

    The current value and the one before stay registered: a log line about the dial that used
    the previous token may still come after a rotation or refresh. Older ones are forgotten, so
    a daemon that rotates tokens for days does not grow its redaction pattern without bound.
    """

    def __init__(self) -> None:
        self._pinned: list[str] = []

    def pin(self, token: str) -> str:
        if token not in self._pinned:
            register_secret(token, pin=True)
            self._pinned.append(token)
            while len(self._pinned) > 2:
                forget_secret(self._pinned.pop(0))
        return token

#: The Gemini Developer API's key header.
API_KEY_HEADER = b"x-goog-api-key"
#: The header of bearer (Vertex) and ephemeral tokens.
AUTHORIZATION_HEADER = b"authorization"


class CredentialError(Exception):
    """The credential of a dial could not be produced (its message names the source, never a secret)."""


class SecretText(Protocol):
    """A secret string that shows itself only through ``reveal()`` (``geminid.daemon.config.Secret``)."""

    def reveal(self) -> str: ...


@attrs.frozen(repr=False)
class DialAuth:
    """What one dial presents: extra upgrade headers and extra URL query parameters."""

    headers: tuple[tuple[bytes, bytes], ...] = ()
    query: tuple[tuple[str, str], ...] = ()

    def __repr__(self) -> str:
        names = [name.decode("ascii", "replace") for name, _ in self.headers]
        return f"DialAuth(headers={names}, query={[k for k, _ in self.query]})"


#: A dial that presents nothing (no key configured).
NO_AUTH = DialAuth()


class Credentials(Protocol):
    """Produces the authentication of the next dial. Called once per dial, never cached by the link."""

    @property
    def refreshable(self) -> bool:
        """True when a refused credential may be fixed by fetching a new one (a token, not a key)."""
        ...

    async def auth_for_dial(self) -> DialAuth:
        """Headers and query parameters for the dial about to be made (may await I/O)."""
        ...

    def invalidate(self) -> None:
        """The server refused what the last dial presented: do not present it again."""
        ...


def _api_key_auth(key: str | None) -> DialAuth:
    return DialAuth(headers=((API_KEY_HEADER, key.encode()),)) if key else NO_AUTH


class ApiKey:
    """The configured API key, swapped in place on SIGHUP; read at every dial, never logged."""

    refreshable = False

    def __init__(self, key: SecretText | None) -> None:
        self._key = key

    def rotate(self, key: SecretText | None) -> bool:
        """Take a re-read key; True when it differs from the one held (``key_rotated``)."""
        changed = _reveal(key) != _reveal(self._key)
        self._key = key
        return changed

    async def auth_for_dial(self) -> DialAuth:
        return _api_key_auth(_reveal(self._key))

    def invalidate(self) -> None:
        """A key cannot be refreshed: the next dial presents it again (the classifier gives up)."""

    def __repr__(self) -> str:
        return f"ApiKey({'set' if self._key is not None else 'unset'})"


@attrs.frozen(repr=False)
class FixedKey:
    """A key that never changes: the embedded fake upstream's, and tests'."""

    _key: str
    refreshable = False

    async def auth_for_dial(self) -> DialAuth:
        return _api_key_auth(self._key)

    def invalidate(self) -> None:
        """Nothing to refresh."""

    def __repr__(self) -> str:
        return "FixedKey('***')"


def _reveal(key: SecretText | None) -> str | None:
    return key.reveal() if key is not None else None


class EphemeralToken:
    """An ephemeral token read from ``path`` before every dial (``Authorization: Token <token>``).

    The token is minted elsewhere (a backend calling ``auth_tokens.create``) and written to the
    file; re-reading it at each dial is what lets that backend rotate it without a SIGHUP. It is
    ``refreshable``: after a refusal the next dial simply reads the file again, which holds a new
    token if the backend rotated it (if not, the same token is refused again and the session
    fails with the classifier's verdict). Each token read is registered with the log redactor.
    """

    refreshable = True

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        #: Tokens registered with the redactor, newest last (at most two).
        self._secrets = PinnedSecrets()

    async def auth_for_dial(self) -> DialAuth:
        token = await trio.to_thread.run_sync(self._read)
        return DialAuth(headers=((AUTHORIZATION_HEADER, b"Token " + token.encode()),))

    def read_now(self) -> str:
        """Read the token file once, synchronously (the config check at start); CredentialError."""
        return self._read()

    def _read(self) -> str:
        try:
            token = self.path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
            raise CredentialError(f"upstream.auth_token_file {str(self.path)!r}: cannot read it ({reason})") from None
        if not token or any(c.isspace() for c in token):
            raise CredentialError(
                f"upstream.auth_token_file {str(self.path)!r}: must hold one token on one line"
            )
        return self._secrets.pin(token)

    def invalidate(self) -> None:
        """Nothing is cached: the next dial reads the file again."""

    def __repr__(self) -> str:
        return f"EphemeralToken({str(self.path)!r})"
