"""Where the upstream is: a parsed ``ws://`` or ``wss://`` BidiGenerateContent URL.

The endpoint says where to dial and nothing about who we are: credentials are never part of it
(they come from :mod:`.auth`, per dial), and a URL that carries a key is refused, so that a key
cannot reach a log line or a status reply through the endpoint.

Three constructors, one value: :meth:`Endpoint.parse` (``upstream.endpoint``, the Gemini
Developer API or anything that speaks it, such as the fake), :meth:`Endpoint.vertex` (the regional
Vertex AI URL built from the location) and :meth:`Endpoint.ephemeral` (the Developer API's
``BidiGenerateContentConstrained`` method that ephemeral tokens must use). Vertex also names
models differently; :func:`vertex_model` is that rule. The link does not change.
"""

from __future__ import annotations

import re
import urllib.parse

import attrs

from ..errors import ConfigError

#: Query parameters that would carry a credential in the URL (refused: credentials are per dial).
CREDENTIAL_PARAMS = ("key", "access_token")

#: Vertex AI's Live method (``v1``; ``v1beta1`` also exists).
VERTEX_PATH = "/ws/google.cloud.aiplatform.{version}.LlmBidiService/BidiGenerateContent"
#: The Developer API's method for ephemeral tokens (v1alpha only, today).
CONSTRAINED_PATH = "/ws/google.ai.generativelanguage.{version}.GenerativeService.BidiGenerateContentConstrained"
DEVELOPER_BASE = "wss://generativelanguage.googleapis.com"
#: A location is a host label (it becomes part of the host name, so nothing else may pass).
_LOCATION = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
#: Project ids, including the legacy domain-scoped form ``example.com:proj``; never a path.
_PROJECT = re.compile(r"[A-Za-z0-9][A-Za-z0-9.:_-]*")
_VERSION = re.compile(r"v[0-9]+(?:(?:alpha|beta)[0-9]*)?")


def vertex_host(location: str) -> str:
    """``{location}-aiplatform.googleapis.com``, or ``aiplatform.googleapis.com`` for ``global``."""
    return "aiplatform.googleapis.com" if location == "global" else f"{location}-aiplatform.googleapis.com"


def vertex_model(model: str, project: str, location: str) -> str:
    """Vertex's full model resource name (pure, idempotent).

    ``X`` and ``models/X`` -> ``projects/{p}/locations/{l}/publishers/google/models/X``;
    ``publishers/...`` -> prefixed with ``projects/{p}/locations/{l}/``; ``projects/...`` is
    kept as it is (a tuned model, another project: the caller said exactly what it wants).
    """
    _check_vertex(project, location)
    if not model or model != model.strip():
        raise ConfigError(f"upstream.model: must be a model name, got {model!r}")
    if model.startswith("projects/"):
        return model
    prefix = f"projects/{project}/locations/{location}/"
    if model.startswith("publishers/"):
        return prefix + model
    bare = model.removeprefix("models/")
    if not bare or "/" in bare:
        raise ConfigError(f"upstream.model: not a model name Vertex AI can use: {model!r}")
    return prefix + "publishers/google/models/" + bare


def _check_vertex(project: str, location: str) -> None:
    if not _PROJECT.fullmatch(project or ""):
        raise ConfigError(f"upstream.vertex_project: must be a Google Cloud project id, got {project!r}")
    if not _LOCATION.fullmatch(location or ""):
        raise ConfigError(f"upstream.vertex_location: must be a region such as us-central1, got {location!r}")


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

    @classmethod
    def vertex(cls, project: str, location: str, *, version: str = "v1", base: str | None = None) -> Endpoint:
        """Vertex AI's Live endpoint for ``location``; ``base`` (``ws://127.0.0.1:port``) replaces
        the scheme and host (tests, a proxy), the path stays Vertex's. ``project`` is checked here
        although the URL does not carry it: it goes into the model name (:func:`vertex_model`)."""
        _check_vertex(project, location)
        return cls._at(base or f"wss://{vertex_host(location)}", VERTEX_PATH, version)

    @classmethod
    def ephemeral(cls, *, version: str = "v1alpha", base: str | None = None) -> Endpoint:
        """The Developer API's ``BidiGenerateContentConstrained``, the method ephemeral tokens use."""
        return cls._at(base or DEVELOPER_BASE, CONSTRAINED_PATH, version)

    @classmethod
    def _at(cls, base: str, path: str, version: str) -> Endpoint:
        if not _VERSION.fullmatch(version):
            raise ConfigError(f"upstream endpoint version: must look like v1 or v1beta1, got {version!r}")
        parts = urllib.parse.urlsplit(base)
        if parts.path.strip("/") or parts.query:
            raise ConfigError(f"upstream endpoint base: must be scheme://host[:port] only, got {base!r}")
        return cls.parse(base.rstrip("/") + path.format(version=version))

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
