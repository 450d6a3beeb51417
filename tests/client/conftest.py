"""Fixtures for the client-interface tests live in client_harness.py (a uniquely named module,
so that test files can import its helpers without clashing with other folders' conftest)."""

from client_harness import *  # noqa: F403
