"""Which URL paths the Live endpoint serves, and what a path names (pure).

The paths are Google's own, so that a client only changes its base URL::

    /ws/google.ai.generativelanguage.{v1,v1alpha,v1beta}.GenerativeService.BidiGenerateContent

optionally behind ``/sessions/NAME``, which binds the connection to the named session NAME (the
one JSON-RPC clients see). Runs of slashes count as one, as Google's front end counts them: the
JavaScript SDK dials ``<base_url>/`` + ``/ws/...`` (``new URL(base).toString()`` ends in ``/``).
``v1`` is google-genai 3.x's default ``api_version``; the local version names only the client's
dialect (geminid's upstream path is its own ``upstream.endpoint``), so all three are served.
The query string may carry ``key=`` (the SDKs' other way to pass a key) and
``context_loss=continue`` (opt in to continuing after a context loss). The same opt-in may come as
the header ``x-geminid-context-loss: continue``: the SDKs append ``/ws/...`` to the base URL, so a
query there never arrives as one, but they send the headers of their HTTP options.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Iterable

import attrs

from geminid.protocol.constants import valid_session_name

_METHOD = re.compile(
    r"^/ws/google\.ai\.generativelanguage\.(v1|v1alpha|v1beta)\.GenerativeService\."
    r"(BidiGenerateContent|BidiGenerateContentConstrained)$"
)
_SLASHES = re.compile(r"/{2,}")
CONTEXT_LOSS_HEADER = "x-geminid-context-loss"
_PREFIX = re.compile(r"^/sessions/([^/]+)(/ws/.*)$")


@attrs.frozen
class Target:
    """What the request path asked for."""

    version: str
    #: The named session of a ``/sessions/NAME`` prefix, else None.
    session: str | None
    query: dict[str, str] = attrs.field(factory=dict)
    #: The value of the ``x-geminid-context-loss`` header, if sent.
    context_loss_header: str | None = None

    @property
    def continue_on_context_loss(self) -> bool:
        return "continue" in (self.query.get("context_loss"), self.context_loss_header)


def parse_target(target: str, headers: Iterable[tuple[bytes, bytes]] = ()) -> Target | None:
    """The :class:`Target` of a request target (path and query) and the upgrade's headers, or
    None when not served."""
    # Not urlsplit: it would read the "ws" of "//ws/..." as a host name.
    raw_path, _, raw_query = target.partition("?")
    path = _SLASHES.sub("/", urllib.parse.unquote(raw_path))
    session = None
    prefixed = _PREFIX.match(path)
    if prefixed is not None:
        session, path = prefixed.group(1), prefixed.group(2)
        if not valid_session_name(session):
            return None
    method = _METHOD.match(path)
    if method is None:
        return None
    query = dict(urllib.parse.parse_qsl(raw_query, keep_blank_values=True))
    opt_in = next((value.decode("latin-1").strip().lower() for name, value in headers
                   if name.decode("latin-1").lower() == CONTEXT_LOSS_HEADER), None)
    return Target(method.group(1), session, query, opt_in)
