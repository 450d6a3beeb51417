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

How the seam takes the next ones (issue #14), each one new class here plus one classify rule:

* Vertex AI bearer tokens: ``auth_for_dial`` returns ``Authorization: Bearer <token>``, refreshing
  it (off the event loop, through google-auth) when it expires within five minutes;
  ``refreshable`` is True and :meth:`Credentials.invalidate` forces a refresh after a 401 at the
  upgrade. The classifier's ``Context.credential_refreshable`` turns that first 401 into one
  retry instead of the fatal ``bad_key``.
* Ephemeral tokens: ``Authorization: Token <token>`` re-read from a file at every dial.

Secrets: the values returned here are registered with the log redactor by whoever reads them
(the configuration loader for keys); neither :class:`DialAuth` nor the credentials show them in
their ``repr``.
"""

from __future__ import annotations

from typing import Protocol

import attrs

#: The Gemini Developer API's key header.
API_KEY_HEADER = b"x-goog-api-key"


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
