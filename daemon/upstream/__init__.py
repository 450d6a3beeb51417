"""geminid.daemon.upstream: the Gemini side of a session, one connection at a time.

- :mod:`.link`: one WebSocket (:class:`UpstreamLink`, :func:`open_link`, :class:`Dial`);
- :mod:`.predial`: a connection dialled ahead of its setup (:class:`PreDialled`, goAway drains);
- :mod:`.endpoint`: where to dial (:class:`Endpoint`);
- :mod:`.auth`: what a dial presents (:class:`Credentials`: :class:`ApiKey`, :class:`FixedKey`,
  :class:`EphemeralToken`); :mod:`.auth_google`: :class:`VertexCredentials` (google-auth, optional);
- :mod:`.endings`: how a connection ended, as one typed :class:`Ending`;
- :mod:`.classify`: an ending -> what to do next (pure);
- :mod:`.backoff`: how long to wait, and when to give up (pure);
- :mod:`.diagnose`: a wrong endpoint told from an outage by the dial history (pure).

This package knows nothing about sessions, clients or the local socket (``tests/test_layering.py``
checks it): the session actor drives it.
"""

from .auth import API_KEY_HEADER as API_KEY_HEADER
from .auth import AUTHORIZATION_HEADER as AUTHORIZATION_HEADER
from .auth import ApiKey as ApiKey
from .auth import CredentialError as CredentialError
from .auth import Credentials as Credentials
from .auth import DialAuth as DialAuth
from .auth import EphemeralToken as EphemeralToken
from .auth import FixedKey as FixedKey
from .auth_google import VertexCredentials as VertexCredentials
from .backoff import Backoff as Backoff
from .backoff import BackoffPolicy as BackoffPolicy
from .classify import CREDENTIAL_CAUSES as CREDENTIAL_CAUSES
from .classify import FATAL_CAUSES as FATAL_CAUSES
from .classify import Action as Action
from .classify import Context as Context
from .classify import Verdict as Verdict
from .classify import classify as classify
from .diagnose import DialHistory as DialHistory
from .diagnose import Suspicion as Suspicion
from .endings import DialFault as DialFault
from .endings import Ended as Ended
from .endings import Ending as Ending
from .endings import EndingKind as EndingKind
from .endpoint import Endpoint as Endpoint
from .endpoint import vertex_model as vertex_model
from .link import MESSAGE_QUEUE_SIZE as MESSAGE_QUEUE_SIZE
from .link import Dial as Dial
from .link import Handshaken as Handshaken
from .link import UpstreamLink as UpstreamLink
from .link import dial_socket as dial_socket
from .link import open_link as open_link
from .link import setup_link as setup_link
from .predial import PreDialled as PreDialled
from .predial import PreDialSlot as PreDialSlot
from .translate import beside_transport_errors as beside_transport_errors
from .translate import ending_from_exception as ending_from_exception
from .translate import ending_from_group as ending_from_group

__all__ = [
    "API_KEY_HEADER",
    "AUTHORIZATION_HEADER",
    "CREDENTIAL_CAUSES",
    "FATAL_CAUSES",
    "MESSAGE_QUEUE_SIZE",
    "Action",
    "ApiKey",
    "Backoff",
    "BackoffPolicy",
    "Context",
    "CredentialError",
    "Credentials",
    "Dial",
    "DialAuth",
    "DialFault",
    "DialHistory",
    "Ended",
    "Ending",
    "EndingKind",
    "Endpoint",
    "EphemeralToken",
    "FixedKey",
    "Handshaken",
    "PreDialSlot",
    "PreDialled",
    "Suspicion",
    "UpstreamLink",
    "Verdict",
    "VertexCredentials",
    "beside_transport_errors",
    "classify",
    "dial_socket",
    "ending_from_exception",
    "ending_from_group",
    "open_link",
    "setup_link",
    "vertex_model",
]
