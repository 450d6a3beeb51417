"""The fake Gemini Live upstream: the ground truth of geminid's test suite.

It behaves as ``shared/GEMINI_LIVE.md`` describes the real service (routing, auth at the upgrade,
binary frames, ``{}`` frames, 1007 on any invalid message, resumption handles with a TTL and
rollback, goAway and the lifetime cut, quotas) and answers with a deterministic model whose
replies expose the conversation's context (see :mod:`.model`).

In process::

    fake = await nursery.start(FakeUpstream(FakeOptions(...)).serve)
    fake.url()                                   # ws://127.0.0.1:PORT/ws/...v1beta...BidiGenerateContent
    fake.script(Fault.close(1011, "..."), after_setup=True)     # next connection
    fake.refuse_next(2, status=503)
    await fake.drop_all(); await fake.close_all(code, reason); await fake.stall_all()
    await fake.goaway_all(time_left); fake.expire_handles()
    fake.dials, fake.connections, fake.conversations, fake.conversation_for_handle(h),
    fake.live_connections, fake.open_sessions(), fake.timeline

Which models it serves, and how each behaves, is :mod:`.catalogue`: by default the service as it
is in late 2026 (retired and unknown models close 1008, TEXT is refused on audio-only models).

From a shell: ``geminid fake-upstream --port 8765`` (:mod:`.cli`).
"""

from .catalogue import Catalogue, ModelSpec, catalogue_2026, permissive_catalogue, text_catalogue
from .faults import Fault, Planned, Trigger
from .model import Conversation, ConversationState, ToolCallRecord, compose_reply
from .options import CANCELLED_REASON, GOAWAY_VIOLATION_REASON, FakeOptions
from .records import ConnectionRecord
from .server import FakeUpstream

__all__ = [
    "CANCELLED_REASON",
    "Catalogue",
    "ModelSpec",
    "catalogue_2026",
    "permissive_catalogue",
    "text_catalogue",
    "GOAWAY_VIOLATION_REASON",
    "ConnectionRecord",
    "Conversation",
    "ConversationState",
    "FakeOptions",
    "FakeUpstream",
    "Fault",
    "Planned",
    "ToolCallRecord",
    "Trigger",
    "compose_reply",
]
