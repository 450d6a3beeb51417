"""The local token: what a TCP Live client presents in place of an API key.

It lives in ``live.token_file`` (default ``<state_dir>/live_token``), mode 0600, created with
32 random bytes if missing. A client may present it as Google's clients present a key: the
``x-goog-api-key`` header or ``?key=``; ``Authorization: Bearer``/``Token`` is accepted too. The
real API key never leaves the daemon: the local client does not know it and does not need it.
"""

from __future__ import annotations

import hmac
import os
import secrets
from collections.abc import Iterable, Mapping
from pathlib import Path

from geminid.daemon.errors import ConfigError


def load_or_create(path: Path) -> str:
    """The token held in ``path``; a new one (0600, written atomically) if the file is missing.
    Blocking: run it in a thread. Raises ConfigError (one line) when it cannot be read/made."""
    try:
        text = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        text = ""
    except OSError as exc:
        raise ConfigError(f"live.token_file: cannot read {path}: {exc.strerror}") from None
    if text:
        return text
    token = "gmdl-" + secrets.token_urlsafe(32)
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(token + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        raise ConfigError(f"live.token_file: cannot create {path}: {exc.strerror}") from None
    return token


def presented(headers: Iterable[tuple[bytes, bytes]], query: Mapping[str, str]) -> str | None:
    """The credential a client presented, from the places Google's clients put a key."""
    for name, value in headers:
        lname = name.decode("latin-1").lower()
        text = value.decode("latin-1").strip()
        if lname == "x-goog-api-key" and text:
            return text
        if lname == "authorization":
            scheme, _, cred = text.partition(" ")
            if scheme.lower() in ("bearer", "token") and cred.strip():
                return cred.strip()
    key = query.get("key")
    return key or None


def check(expected: str, given: str | None) -> int | None:
    """None when ``given`` is the token; else the HTTP status to refuse the upgrade with
    (401: no credential; 403: a wrong one)."""
    if given is None:
        return 401
    if hmac.compare_digest(given.encode(), expected.encode()):
        return None
    return 403
