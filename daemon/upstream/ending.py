"""The typed value of how a connection attempt or a connection ended (no transport imports).

:mod:`.endings` makes these values from trio and trio_websocket exceptions; the classifier
(:mod:`.classify`), the backoff, the diagnosis (:mod:`.diagnose`) and the sans-IO session core
only read them, so they live here, where importing them costs neither trio nor trio_websocket
(``tests/session/test_layering_core.py`` checks it).
"""

from __future__ import annotations

import enum

import attrs


class EndingKind(enum.Enum):
    """How a connection attempt or connection ended."""

    #: A close frame, or a drop without one (code 1006 or None).
    CLOSED = "closed"
    #: The WebSocket upgrade was refused with an HTTP status.
    REJECTED = "rejected"
    CONNECT_TIMEOUT = "connect_timeout"
    SETUP_TIMEOUT = "setup_timeout"
    #: Live, a reply was expected, and nothing arrived for stall_timeout.
    STALL = "stall"
    #: OSError, DNS failure, refused TCP connection.
    NETWORK = "network"
    #: We closed it ourselves (goAway rotation, shutdown, session close).
    LOCAL = "local"


class DialFault(enum.Enum):
    """Why a dial failed before reaching the server, when the failure itself says so.

    Evidence for :mod:`.diagnose` (a wrong endpoint rather than an outage); the classifier does
    not look at it, so a fault never changes whether or when the session retries.
    """

    #: The host name did not resolve (``socket.gaierror``).
    DNS = "dns"
    #: Every address refused the TCP connection: nothing listens there.
    REFUSED = "refused"
    #: The TLS handshake failed (e.g. a plain-text server answered the ClientHello).
    TLS = "tls"
    #: The TLS handshake got no answer within the connect timeout (a plain server waiting for
    #: an HTTP request that never comes).
    TLS_SILENT = "tls_silent"


@attrs.frozen
class Ending:
    kind: EndingKind
    code: int | None = None
    reason: str = ""
    http_status: int | None = None
    #: Set only for a dial that failed before reaching the server in a telling way.
    fault: DialFault | None = None
