"""A deliberately broken geminid, to prove that the soak and the crash loop catch one.

Test double only: nothing in the production package knows about it. :func:`broken` patches the
session classes for the duration of a ``with`` (the in-process soak); run as a script it patches
them for good and then runs the real daemon, ``geminid.daemon.cli.main()`` (the crash loop starts
``python tests/soak/broken_build.py MODE run ...`` instead of ``python -m geminid.daemon.cli run ...``).

Modes:

- ``no-replay``: a new connection forgets what the previous one was sent and no handle covered;
- ``reuse-stale-handle``: the session keeps resuming with the first handle it ever got (the
  replay buffer is still trimmed by the newer ones).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from typing import Any

from geminid.daemon import logsetup
from geminid.daemon.session.relay import Relay
from geminid.daemon.session.replay import ReplayBuffer

MODES = ("no-replay", "reuse-stale-handle")


def _patches(mode: str) -> list[tuple[type, str, Callable[..., Any]]]:
    if mode == "no-replay":
        original_new = ReplayBuffer.new_connection

        def new_connection(self: ReplayBuffer, now: float, **kwargs: Any) -> Any:
            self._trim(lambda _seq: True)  # drop what the last connection was sent
            return original_new(self, now, **kwargs)

        return [(ReplayBuffer, "new_connection", new_connection)]
    if mode == "reuse-stale-handle":
        original_update = Relay._on_resumption_update

        def on_resumption_update(self: Relay, msg: Any) -> None:
            first = self.handle
            original_update(self, msg)
            if first and self.handle != first:
                self.handle = first  # keep resuming with the first handle ever received
                logsetup.register_secret(first)

        return [(Relay, "_on_resumption_update", on_resumption_update)]
    raise ValueError(f"unknown broken-build mode {mode!r} (one of {', '.join(MODES)})")


@contextlib.contextmanager
def broken(mode: str | None) -> Iterator[None]:
    """Patch the session classes into broken build ``mode`` (None: the real build)."""
    saved: list[tuple[type, str, Any]] = []
    try:
        for cls, name, fn in _patches(mode) if mode else []:
            saved.append((cls, name, cls.__dict__[name]))
            setattr(cls, name, fn)
        yield
    finally:
        for cls, name, fn in reversed(saved):
            setattr(cls, name, fn)


def main() -> None:
    mode, *rest = sys.argv[1:]
    for cls, name, fn in _patches(mode):
        setattr(cls, name, fn)
    from geminid.daemon import cli

    sys.exit(cli.main(rest))


if __name__ == "__main__":
    main()
