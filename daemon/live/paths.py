"""Which URL paths the Live endpoint serves, and what a path names (pure).

The paths are Google's own, so that a client only changes its base URL::

    /ws/google.ai.generativelanguage.{v1alpha,v1beta}.GenerativeService.BidiGenerateContent

optionally behind ``/sessions/NAME``, which binds the connection to the named session NAME (the
one JSON-RPC clients see). The query string may carry ``key=`` (the SDKs' other way to pass a
key) and ``context_loss=continue`` (opt in to continuing after a context loss).
"""

from __future__ import annotations

import re
import urllib.parse

import attrs

from geminid.protocol.constants import valid_session_name

_METHOD = re.compile(
    r"^/ws/google\.ai\.generativelanguage\.(v1alpha|v1beta)\.GenerativeService\."
    r"(BidiGenerateContent|BidiGenerateContentConstrained)$"
)
_PREFIX = re.compile(r"^/sessions/([^/]+)(/ws/.*)$")


@attrs.frozen
class Target:
    """What the request path asked for."""

    version: str
    #: The named session of a ``/sessions/NAME`` prefix, else None.
    session: str | None
    query: dict[str, str] = attrs.field(factory=dict)

    @property
    def continue_on_context_loss(self) -> bool:
        return self.query.get("context_loss") == "continue"


def parse_target(target: str) -> Target | None:
    """The :class:`Target` of a request target (path and query), or None when not served."""
    parts = urllib.parse.urlsplit(target)
    path = urllib.parse.unquote(parts.path)
    session = None
    prefixed = _PREFIX.match(path)
    if prefixed is not None:
        session, path = prefixed.group(1), prefixed.group(2)
        if not valid_session_name(session):
            return None
    method = _METHOD.match(path)
    if method is None:
        return None
    query = dict(urllib.parse.parse_qsl(parts.query, keep_blank_values=True))
    return Target(method.group(1), session, query)
