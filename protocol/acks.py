"""The acknowledgement of a ``session.send``: a seq, and what the daemon could promise about it.

:class:`SendAck` is an ``int`` (the seq), so code that treats ``send()``'s result as the seq keeps
working; the two flags say what the wire's optional fields say:

- ``durable`` (wire: ``"durable": false`` when false): the message was accepted and is sent (or
  queued for the next connection) exactly once, but its checkpoint could not be written, so it
  would not survive a kill -9 of the daemon. Do **not** resend it: that would duplicate it.
- ``duplicate`` (wire: ``"duplicate": true``): the send carried an ``id`` the daemon had already
  accepted; this is the original's seq, and nothing was sent again.
"""

from __future__ import annotations

from typing import Any

#: The longest ``params.id`` of a ``session.send`` (a UUID is 36 characters).
MAX_ID_LENGTH = 128


class SendAck(int):
    """A ``session.send`` ack: ``int(ack)`` is the seq (see the module docstring)."""

    durable: bool
    duplicate: bool

    def __new__(cls, seq: int, *, durable: bool = True, duplicate: bool = False) -> SendAck:
        ack = super().__new__(cls, seq)
        ack.durable = durable
        ack.duplicate = duplicate
        return ack

    def __repr__(self) -> str:
        flags = ("" if self.durable else ", durable=False") + (", duplicate=True" if self.duplicate else "")
        return f"SendAck({int(self)}{flags})"

    def to_result(self) -> dict[str, Any]:
        """The JSON-RPC result object: ``{"seq": n}`` plus the flags that are not the default."""
        result: dict[str, Any] = {"seq": int(self)}
        if not self.durable:
            result["durable"] = False
        if self.duplicate:
            result["duplicate"] = True
        return result

    @classmethod
    def from_result(cls, result: Any) -> SendAck:
        return cls(int(result["seq"]), durable=result.get("durable", True) is not False,
                   duplicate=result.get("duplicate", False) is True)
