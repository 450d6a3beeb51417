"""Where the upstream is: a parsed ``ws://`` or ``wss://`` BidiGenerateContent URL.

The endpoint says where to dial and nothing about who we are: credentials are never part of it
(they come from :mod:`.auth`, per dial), and a URL that carries a key is refused, so that a key
cannot reach a log line or a status reply through the endpoint.

Today there is one kind of endpoint, the Gemini Developer API's (or anything that speaks it, such
as the fake). A Vertex AI endpoint (issue #14) goes here as a second constructor beside
:meth:`Endpoint.parse`, building the regional URL from the location, together with its model-name
rule (``projects/{p}/locations/{l}/publishers/google/models/{m}``); the link does not change.
"""

from __future__ import annotations

import urllib.parse

import attrs

from ..errors import ConfigError

#: Query parameters that would carry a credential in the URL (refused: credentials are per dial).
CREDENTIAL_PARAMS = ("key", "access_token")


@attrs.frozen
class Endpoint:
    """A parsed ws:// or wss:// BidiGenerateContent URL (the key is never part of it)."""

    scheme: str
    host: str
    port: int
    #: Path and query, as sent in the upgrade request.
    resource: str

    @classmethod
    def parse(cls, url: str) -> Endpoint:
        """Parse ``upstream.endpoint``; ConfigError names the key and the reason."""
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("ws", "wss") or not parts.hostname:
            raise ConfigError(f"upstream.endpoint: must be a ws:// or wss:// URL, got {url!r}")
        query = urllib.parse.parse_qs(parts.query)
        if any(name in query for name in CREDENTIAL_PARAMS):
            raise ConfigError("upstream.endpoint: must not carry a key; use api_key_file or GEMINI_API_KEY")
        port = parts.port or (443 if parts.scheme == "wss" else 80)
        resource = parts.path or "/"
        if parts.query:
            resource += "?" + parts.query
        return cls(parts.scheme, parts.hostname, port, resource)

    @property
    def authority(self) -> str:
        """The Host header: the port only when it is not the scheme's usual one."""
        return self.host if self.port in (80, 443) else f"{self.host}:{self.port}"

    def resource_with(self, query: tuple[tuple[str, str], ...]) -> str:
        """The resource with extra query parameters appended (a credential's, for one dial)."""
        if not query:
            return self.resource
        sep = "&" if "?" in self.resource else "?"
        return self.resource + sep + urllib.parse.urlencode(query)
