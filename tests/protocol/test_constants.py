"""One session-name rule, one protocol version and one default socket path, shared by both sides."""

from __future__ import annotations

from pathlib import Path

import pytest

from geminid.daemon import checkpoint, registry, rpc
from geminid.daemon.config import ServerConfig
from geminid.protocol import aio_client, client, constants
from geminid.protocol.constants import default_socket_path, runtime_dir, valid_session_name

GOOD = ["a", "kitchen", "A-b_c.d", "_x", "-x", "x" * 64, "a..b", "0"]
BAD = ["", ".hidden", "..", "a/b", "x" * 65, "sp ace", "ü", "a\n", "\na", "a\x00", None, 7, b"abc"]


@pytest.mark.parametrize("name", GOOD)
def test_good_names(name):
    assert valid_session_name(name)
    assert checkpoint.valid_name(name)


@pytest.mark.parametrize("name", BAD)
def test_bad_names(name):
    """A trailing newline used to pass the registry's ``^...$`` + ``match`` check."""
    assert not valid_session_name(name)


def test_every_layer_uses_the_one_rule():
    assert rpc.valid_session_name is constants.valid_session_name
    assert registry.valid_session_name is constants.valid_session_name


def test_one_protocol_version():
    assert rpc.PROTOCOL_VERSION is constants.PROTOCOL_VERSION
    assert client.PROTOCOL_VERSION is constants.PROTOCOL_VERSION
    assert aio_client.PROTOCOL_VERSION is constants.PROTOCOL_VERSION


def test_runtime_dir_precedence():
    assert runtime_dir({"RUNTIME_DIRECTORY": "/run/a:/run/b", "XDG_RUNTIME_DIR": "/x"}) == Path("/run/a")
    assert runtime_dir({"XDG_RUNTIME_DIR": "/run/user/7"}) == Path("/run/user/7/geminid")
    assert runtime_dir({}) == Path("/run/geminid")


def test_client_and_daemon_agree_on_the_default_socket(monkeypatch):
    monkeypatch.delenv("GEMINID_SOCKET", raising=False)
    monkeypatch.delenv("RUNTIME_DIRECTORY", raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/run/user/9")
    assert client.default_socket_path() == ServerConfig().socket_path == default_socket_path()
    assert default_socket_path() == Path("/run/user/9/geminid/geminid.sock")
