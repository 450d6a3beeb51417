"""geminid.protocol: the two wire formats geminid speaks, free of I/O.

- ``live``: the Gemini Live (BidiGenerateContent) message codec and client-message validator.
- ``jsonrpc`` and ``framing``: the local JSON-RPC 2.0 line protocol.
- ``client`` and ``ctl``: the Python client library and ``geminictl``.
"""
