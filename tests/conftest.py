"""Shared pytest configuration for the geminid test suite."""

from __future__ import annotations

from hypothesis import HealthCheck, settings

# CI machines are shared and noisy: no hypothesis deadlines, a modest default example count.
settings.register_profile(
    "default", deadline=None, max_examples=100, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("default")
