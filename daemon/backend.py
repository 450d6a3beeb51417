"""Which upstream the daemon talks to and how it proves who it is: built once from the config.

Three backends, one :class:`Backend` value (endpoint, credentials, model naming), so that the
session and the link never ask which one it is:

* the Gemini Developer API with an API key (``upstream.backend = "gemini-api"``, the default);
* the Developer API with an **ephemeral token** (``upstream.auth_token_file``): the
  ``BidiGenerateContentConstrained`` method, ``Authorization: Token``, the file re-read before
  each dial (:class:`~geminid.daemon.upstream.EphemeralToken`);
* **Vertex AI** (``upstream.backend = "vertex"``): the regional endpoint, bearer tokens from
  google-auth (:class:`~geminid.daemon.upstream.VertexCredentials`), model names expanded to
  ``projects/{p}/locations/{l}/publishers/google/models/{m}`` at each dial (the client's setup
  and the checkpoint keep the name the client gave).

:func:`check_upstream` is what ``load_config`` (and so ``geminid check-config``) runs: every
mistake that would make every dial fail (no project, no google-auth, a credentials file that
cannot be read or parsed, an unreadable token file) is one ``ConfigError`` line and exit 2 at
start, not a session that retries forever. It reads files but never the network: Application
Default Credentials without a file (the metadata server) are resolved at start by
:func:`build_backend`.

``upstream.endpoint``, when set to something else than the Developer API's default URL,
replaces the backend's URL whole (a proxy, the fake in tests).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path

import attrs

from geminid.daemon.config import DEFAULT_ENDPOINT, Config, UpstreamConfig
from geminid.daemon.errors import ConfigError
from geminid.daemon.upstream import ApiKey, CredentialError, Credentials, EphemeralToken, FixedKey
from geminid.daemon.upstream.endpoint import Endpoint, vertex_model

BACKENDS = ("gemini-api", "vertex")
#: The ADC variable google-auth reads (checked at load when set, so a bad path is one line).
ADC_ENV = "GOOGLE_APPLICATION_CREDENTIALS"


@attrs.frozen
class Backend:
    """Where to dial, what to present, and how the upstream names models."""

    #: ``"gemini"``, ``"gemini-ephemeral"`` or ``"vertex"`` (status replies, ``daemon.starting``).
    kind: str
    endpoint: Endpoint
    credentials: Credentials
    #: The setup's model name as this upstream wants it (identity on the Developer API).
    model_name: Callable[[str], str] | None = None


def _explicit_endpoint(up: UpstreamConfig) -> str | None:
    return up.endpoint if up.endpoint != DEFAULT_ENDPOINT else None


def vertex_endpoint(up: UpstreamConfig) -> Endpoint:
    """Vertex's regional URL (or the explicit ``upstream.endpoint``); ConfigError without a project."""
    if not up.vertex_project:
        raise ConfigError(
            'upstream.vertex_project: required with upstream.backend = "vertex"',
            data={"key": "upstream.vertex_project", "source": None},
        )
    Endpoint.vertex(up.vertex_project, up.vertex_location)  # checks project and location
    explicit = _explicit_endpoint(up)
    if explicit is not None:
        return Endpoint.parse(explicit)
    return Endpoint.vertex(up.vertex_project, up.vertex_location)


def _check_json_file(path: Path, what: str) -> None:
    """Readable, JSON, an object: what can be said about a credentials file without google-auth."""
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{what} {str(path)!r}: cannot read it ({exc.strerror})") from None
    except (UnicodeDecodeError, ValueError):
        raise ConfigError(f"{what} {str(path)!r}: not a JSON credentials file") from None
    if not isinstance(info, dict) or "type" not in info:
        raise ConfigError(f"{what} {str(path)!r}: not a Google credentials file (no \"type\")")


def check_upstream(up: UpstreamConfig, environ: Mapping[str, str]) -> None:
    """Refuse, as one ConfigError line, a backend configuration with which no dial can work."""
    if up.backend == "vertex":
        if up.auth_token_file is not None:
            raise ConfigError(
                'upstream.auth_token_file: ephemeral tokens are a Developer API feature; not with upstream.backend = "vertex"'
            )
        vertex_endpoint(up)
        from geminid.daemon.upstream.auth_google import require_google_auth

        require_google_auth()  # the one-line "pip install 'geminid[vertex]'" when missing
        if up.vertex_credentials_file is not None:
            from geminid.daemon.upstream import VertexCredentials

            VertexCredentials.from_file(up.vertex_credentials_file)  # reads and parses, no network
        elif adc := environ.get(ADC_ENV):
            _check_json_file(Path(adc), f"{ADC_ENV}")
        return
    if up.auth_token_file is not None:
        if up.api_key is not None:
            raise ConfigError(
                "upstream.auth_token_file: set either an API key or an ephemeral token file, not both"
            )
        try:
            EphemeralToken(up.auth_token_file).read_now()  # the same words a dial would give
        except CredentialError as exc:
            raise ConfigError(str(exc), data={"key": "upstream.auth_token_file", "source": None}) from None


def build_backend(cfg: Config, *, fake_url: str | None = None, fake_key: str = "") -> Backend:
    """The backend of a started daemon (``fake_url``: the embedded fake's, when no key is set).

    Application Default Credentials are resolved here (google-auth may ask the metadata
    server); a failure is a ConfigError, so the daemon exits 2 with one line.
    """
    up = cfg.upstream
    if fake_url is not None:
        return Backend("embedded-fake", Endpoint.parse(fake_url), FixedKey(fake_key))
    if up.backend == "vertex":
        from geminid.daemon.upstream import VertexCredentials

        endpoint = vertex_endpoint(up)
        creds = (
            VertexCredentials.from_file(up.vertex_credentials_file)
            if up.vertex_credentials_file is not None
            else VertexCredentials.from_adc()
        )
        project, location = up.vertex_project or "", up.vertex_location
        return Backend("vertex", endpoint, creds, lambda model: vertex_model(model, project, location))
    if up.auth_token_file is not None:
        explicit = _explicit_endpoint(up)
        endpoint = Endpoint.parse(explicit) if explicit else Endpoint.ephemeral()
        return Backend("gemini-ephemeral", endpoint, EphemeralToken(up.auth_token_file))
    return Backend("gemini", Endpoint.parse(up.endpoint), ApiKey(up.api_key))
