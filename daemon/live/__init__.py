"""The drop-in Gemini Live endpoint: geminid serves the BidiGenerateContent WebSocket protocol
itself, so that a google-genai / @google/genai / pipecat / LiveKit client gets geminid's
resilience by changing only its base URL (issue #12).

A Live-protocol client is just another client of a session: what it sends goes through
``session.send``'s rules (validation, seqs, durability, replay), what it receives is the
session's event stream (``attach``), translated back to Gemini server messages.

One idea per module:

- :mod:`.paths`: which URL paths are served and what a path names (pure);
- :mod:`.listen`: the TCP address and the loopback rule (pure);
- :mod:`.token`: the local token file and the credential check (pure check);
- :mod:`.handles`: geminid's local resumption handles (opaque, persisted);
- :mod:`.tls`: the self-signed certificate and the server SSL context;
- :mod:`.translate`: session events -> what the Live client sees (pure);
- :mod:`.connection`: one Live client (the shell over a session);
- :mod:`.server`: the listeners and the set of connections.

This package is imported lazily (only by the daemon once it is ready, and by the config loader
for the loopback rule): nothing here may be pulled in at start (tests/test_startup_imports.py).
"""
