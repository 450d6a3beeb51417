"""Which URL paths the fake serves, and which credentials a request carries. Pure functions.

Paths (``//`` runs are normalised, as the SDK sends ``//ws/``):

- ``/ws/google.ai.generativelanguage.{v1alpha,v1beta}.GenerativeService.BidiGenerateContent``
  and ``...BidiGenerateContentConstrained`` (ephemeral tokens): the Developer API;
- ``/ws/google.cloud.aiplatform.{v1beta1,v1}.LlmBidiService/BidiGenerateContent``: Vertex AI,
  where ``sessionResumption.transparent`` is allowed.

Credentials: ``x-goog-api-key`` header, ``?key=``, ``Authorization: Token T`` /
``?access_token=`` (ephemeral tokens) and ``Authorization: Bearer T`` (Vertex).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from urllib.parse import parse_qs

import attrs

DEV_VERSIONS = ("v1alpha", "v1beta")
VERTEX_VERSIONS = ("v1beta1", "v1")
_DEV = re.compile(
    r"/ws/google\.ai\.generativelanguage\.(v1alpha|v1beta)\.GenerativeService\."
    r"(BidiGenerateContent|BidiGenerateContentConstrained)"
)
_VERTEX = re.compile(r"/ws/google\.cloud\.aiplatform\.(v1beta1|v1)\.LlmBidiService/BidiGenerateContent")


@attrs.frozen
class Route:
    api: str  # "developer" | "vertex"
    version: str
    method: str
    path: str  # normalised

    @property
    def vertex(self) -> bool:
        return self.api == "vertex"


def split_target(target: str) -> tuple[str, dict[str, list[str]]]:
    """``/a//b?key=K`` -> (``/a/b``, {"key": ["K"]}), with ``//`` runs collapsed."""
    # Not urlsplit: it would read "//ws/..." as a network location.
    path, _, query = target.partition("?")
    path = re.sub(r"/{2,}", "/", "/" + path.split("#", 1)[0])
    return path, parse_qs(query, keep_blank_values=True)


def route(path: str) -> Route | None:
    """The route for a normalised path, or None (HTTP 404)."""
    if m := _DEV.fullmatch(path):
        return Route("developer", m.group(1), m.group(2), path)
    if m := _VERTEX.fullmatch(path):
        return Route("vertex", m.group(1), "BidiGenerateContent", path)
    return None


def ws_path(version: str = "v1beta", *, vertex: bool = False, constrained: bool = False) -> str:
    if vertex:
        return f"/ws/google.cloud.aiplatform.{version}.LlmBidiService/BidiGenerateContent"
    method = "BidiGenerateContentConstrained" if constrained else "BidiGenerateContent"
    return f"/ws/google.ai.generativelanguage.{version}.GenerativeService.{method}"


def credentials(headers: list[tuple[bytes, bytes]], query: dict[str, list[str]]) -> list[str]:
    """Every credential the request presents, in a fixed order; blank ones are left out."""
    found: list[str] = []
    for name, value in headers:
        lname = name.decode("latin-1").strip().lower()
        text = value.decode("latin-1").strip()
        if lname == "x-goog-api-key":
            found.append(text)
        elif lname == "authorization":
            scheme, _, token = text.partition(" ")
            if scheme.lower() in ("token", "bearer"):
                found.append(token.strip())
    for param in ("key", "access_token"):
        found.extend(v.strip() for v in query.get(param, []))
    return [c for c in found if c]


def auth_status(presented: list[str], accepted: str | None) -> int | None:
    """None if the request may pass; else the HTTP status to reject it with (401 / 403)."""
    if not presented:
        return 401
    if accepted is None or accepted in presented:
        return None
    return 403


def bearer_status(headers: list[tuple[bytes, bytes]], valid: Callable[[str], bool]) -> int | None:
    """Vertex with a token issuer: None if the request's bearer token is valid now, else 401."""
    for name, value in headers:
        if name.decode("latin-1").strip().lower() == "authorization":
            scheme, _, token = value.decode("latin-1").strip().partition(" ")
            if scheme.lower() == "bearer" and token.strip() and valid(token.strip()):
                return None
    return 401
