"""The TCP address of the Live endpoint and the loopback rule (pure).

A Live client on TCP authenticates with a local token, not with the peer credentials a Unix
socket gives; a listener reachable from the network would hand geminid's upstream credentials
to anyone who learns that token. So a non-loopback address is refused at start unless the
operator says so explicitly (``live.allow_non_loopback``).
"""

from __future__ import annotations

import ipaddress

import attrs


@attrs.frozen
class HostPort:
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> HostPort:
        host, sep, port = text.rpartition(":")
        if not sep or not host or not port.isdigit() or int(port) > 65535:
            raise ValueError(f"{text!r} is not HOST:PORT")
        return cls(host.strip("[]"), int(port))

    def url_host(self) -> str:
        return f"[{self.host}]" if ":" in self.host else self.host


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def loopback_problem(text: str) -> str | None:
    """Why ``text`` may not be listened on without ``live.allow_non_loopback`` (None: fine)."""
    try:
        hp = HostPort.parse(text)
    except ValueError as exc:
        return str(exc)
    if is_loopback(hp.host):
        return None
    return (
        f"{hp.host} is not a loopback address; the Live endpoint listens on 127.0.0.1, ::1 or "
        "localhost only, unless live.allow_non_loopback = true"
    )
