"""Endpoint.vertex / Endpoint.ephemeral and Vertex's model-name rule (pure)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from geminid.daemon.errors import ConfigError
from geminid.daemon.upstream import Endpoint, vertex_model

VERTEX_RESOURCE = "/ws/google.cloud.aiplatform.v1.LlmBidiService/BidiGenerateContent"


def test_regional_and_global_hosts():
    ep = Endpoint.vertex("my-proj", "europe-west4")
    assert (ep.scheme, ep.host, ep.port, ep.resource) == (
        "wss", "europe-west4-aiplatform.googleapis.com", 443, VERTEX_RESOURCE,
    )
    assert Endpoint.vertex("my-proj", "global").host == "aiplatform.googleapis.com"
    assert Endpoint.vertex("p", "us-central1", version="v1beta1").resource == VERTEX_RESOURCE.replace("v1.", "v1beta1.")


def test_a_base_overrides_scheme_and_host_only():
    ep = Endpoint.vertex("p", "us-central1", base="ws://127.0.0.1:8123/")
    assert (ep.scheme, ep.host, ep.port, ep.resource) == ("ws", "127.0.0.1", 8123, VERTEX_RESOURCE)
    with pytest.raises(ConfigError, match="scheme://host"):
        Endpoint.vertex("p", "us-central1", base="ws://127.0.0.1:8123/other")


def test_the_constrained_endpoint_of_ephemeral_tokens():
    ep = Endpoint.ephemeral()
    assert (ep.host, ep.resource) == (
        "generativelanguage.googleapis.com",
        "/ws/google.ai.generativelanguage.v1alpha.GenerativeService.BidiGenerateContentConstrained",
    )


@pytest.mark.parametrize(
    ("project", "location", "key"),
    [("", "us-central1", "vertex_project"), ("a/b", "us-central1", "vertex_project"),
     ("p", "", "vertex_location"), ("p", "evil.com/x", "vertex_location"), ("p", "US-CENTRAL1", "vertex_location")],
)
def test_bad_project_or_location_names_the_key(project, location, key):
    with pytest.raises(ConfigError, match=key):
        Endpoint.vertex(project, location)
    with pytest.raises(ConfigError, match=key):
        vertex_model("m", project, location)


def test_the_model_rule_examples():
    full = "projects/p/locations/l/publishers/google/models/gemini-live"
    assert vertex_model("gemini-live", "p", "l") == full
    assert vertex_model("models/gemini-live", "p", "l") == full
    assert vertex_model("publishers/google/models/gemini-live", "p", "l") == full
    assert vertex_model("publishers/acme/models/x", "p", "l") == "projects/p/locations/l/publishers/acme/models/x"
    tuned = "projects/other/locations/us-east1/endpoints/123"
    assert vertex_model(tuned, "p", "l") == tuned
    for bad in ("", "models/", "models/a/b", " x"):
        with pytest.raises(ConfigError, match="upstream.model"):
            vertex_model(bad, "p", "l")


names = st.from_regex(r"[a-z0-9][a-z0-9.-]{0,30}", fullmatch=True)
projects = st.from_regex(r"[a-z][a-z0-9-]{4,28}[a-z0-9]", fullmatch=True)
locations = st.sampled_from(["us-central1", "europe-west4", "global", "asia-northeast1"])


@given(name=names, models_prefix=st.booleans(), project=projects, location=locations)
def test_bare_and_models_names_expand_to_the_google_publisher(name, models_prefix, project, location):
    model = ("models/" if models_prefix else "") + name
    out = vertex_model(model, project, location)
    assert out == f"projects/{project}/locations/{location}/publishers/google/models/{name}"
    assert vertex_model(out, project, location) == out  # idempotent
    assert vertex_model(out, "other-project", "us-east1") == out  # a full name is kept


@given(publisher=names, name=names, project=projects, location=locations)
def test_publisher_names_are_prefixed(publisher, name, project, location):
    model = f"publishers/{publisher}/models/{name}"
    out = vertex_model(model, project, location)
    assert out == f"projects/{project}/locations/{location}/{model}"
    assert vertex_model(out, project, location) == out


@given(project=projects, location=locations)
def test_every_vertex_endpoint_parses_back_to_itself(project, location):
    ep = Endpoint.vertex(project, location)
    assert Endpoint.parse(f"{ep.scheme}://{ep.authority}{ep.resource}") == ep
    assert ep.host.endswith("aiplatform.googleapis.com") and project not in ep.resource
