"""geminictl: talk to a running geminid from the shell.

Commands::

    geminictl [--socket PATH] status
    geminictl [--socket PATH] sessions
    geminictl [--socket PATH] open NAME [--model M] [--system TEXT] [--text] [--setup JSON|@FILE]
    geminictl [--socket PATH] say NAME TEXT
    geminictl [--socket PATH] attach NAME [--since N] [--follow]
    geminictl [--socket PATH] send NAME < message.json
    geminictl [--socket PATH] close NAME

``open`` asks for AUDIO replies with ``outputAudioTranscription`` (current Live models reply in
audio only); ``--text`` asks for TEXT, for the few models that accept it; ``--setup`` passes a
whole setup object (tools, speech, VAD, transcription, thinking), ``--model``/``--system`` filling
in only what it lacks. ``say`` prints the reply's transcription (or text) until the model's
interaction ends (``interactionStatus`` IDLE, or ``turnComplete`` for models that send none).

Exit codes: 0 ok; 1 the daemon answered with an error (or the session ended during ``say``);
2 usage error (bad arguments, bad JSON on stdin); 3 the daemon is not reachable or the
connection was lost; 4 ``say`` got a tool call as the reply (printed on stdout as JSON: the model
waits for a ``toolResponse``, which ``send`` can deliver); 130 interrupted (except ``attach``, for which Ctrl-C is the normal end: 0).
Errors are one line on stderr, prefixed ``geminictl:``; never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import trio

from geminid.protocol.client import (
    Client,
    ConnectionLost,
    DaemonUnreachable,
    RemoteError,
    default_socket_path,
    open_client,
)
from geminid.protocol.errors import GeminidError
from geminid.protocol.live import InteractionStatus, interaction_complete

DEFAULT_MODEL = "models/gemini-3.8-live"
EXIT_OK, EXIT_REMOTE, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
EXIT_TOOL_CALL = 4


class UsageError(Exception):
    pass


class SessionEnded(Exception):
    pass


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="geminictl", description="Control a running geminid.")
    p.add_argument("--socket", metavar="PATH", help="daemon socket (default: $GEMINID_SOCKET "
                   "or the daemon's default path)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("status", help="daemon status (JSON)")
    sub.add_parser("sessions", help="list sessions (one JSON object per line)")
    o = sub.add_parser("open", help="open (or join) a named session")
    o.add_argument("name")
    o.add_argument("--model", default=None, help=f"model (default: {DEFAULT_MODEL})")
    o.add_argument("--system", metavar="TEXT", help="system instruction")
    o.add_argument("--text", action="store_true",
                   help="TEXT responses, for models that support them (default: AUDIO with transcription)")
    o.add_argument("--audio", action="store_true", help=argparse.SUPPRESS)  # the default now; kept for scripts
    o.add_argument("--setup", metavar="JSON|@FILE", help="a whole setup object, inline or from a file")
    s = sub.add_parser("say", help="send one text turn and print the reply")
    s.add_argument("name")
    s.add_argument("text")
    a = sub.add_parser("attach", help="print events as JSON lines until Ctrl-C")
    a.add_argument("name")
    a.add_argument("--since", type=int, metavar="N", help="replay events after seq N")
    a.add_argument("--follow", action="store_true",
                   help="survive daemon restarts: reconnect and re-attach from the last seq seen")
    n = sub.add_parser("send", help="send one JSON Gemini client message read from stdin")
    n.add_argument("name")
    c = sub.add_parser("close", help="close a session")
    c.add_argument("name")
    return p


def _out(obj: Any, *, indent: int | None = None) -> None:
    sys.stdout.write(json.dumps(obj, indent=indent, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def _err(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def build_setup(
    model: str | None = None,
    system: str | None = None,
    text: bool = False,
    base: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The setup ``open`` sends: ``base`` (``--setup``) as given, with the model, the system
    instruction and the response modality filled in where it has none.

    AUDIO plus ``outputAudioTranscription`` by default: the current models (gemini-3.8-live)
    reply in audio only and refuse TEXT; the transcription is what ``say`` prints.
    """
    setup: dict[str, Any] = dict(base or {})
    if model is not None or "model" not in setup:
        setup["model"] = model or DEFAULT_MODEL
    gen = dict(setup.get("generationConfig") or {})
    if not gen.get("responseModalities") and not gen.get("response_modalities"):
        gen["responseModalities"] = ["TEXT" if text else "AUDIO"]
        setup["generationConfig"] = gen
    if system:
        setup["systemInstruction"] = {"parts": [{"text": system}]}
    modalities = gen.get("responseModalities") or gen.get("response_modalities") or []
    if "AUDIO" in modalities and "output_audio_transcription" not in setup:
        setup.setdefault("outputAudioTranscription", {})
    return setup


def _setup_arg(value: str | None) -> dict[str, Any] | None:
    """``--setup``: JSON text, or ``@path`` to a file holding it; ``{"setup": {...}}`` unwrapped."""
    if value is None:
        return None
    text = value
    if value.startswith("@"):
        try:
            with open(value[1:], encoding="utf-8") as f:
                text = f.read()
        except OSError as exc:
            raise UsageError(f"--setup: cannot read {value[1:]}: {exc.strerror}") from None
    try:
        obj = json.loads(text)
    except ValueError as exc:
        raise UsageError(f"--setup is not valid JSON: {exc}") from None
    if isinstance(obj, dict) and set(obj) == {"setup"}:
        obj = obj["setup"]
    if not isinstance(obj, dict):
        raise UsageError("--setup must be a JSON object (a Gemini setup)")
    return obj


def _status_line(p: dict[str, Any]) -> str:
    extra = " ".join(
        f"{k}={p[k]}" for k in ("reason", "context", "attempt", "retry_in") if k in p
    )
    return f"[{p.get('session')}] status {p.get('status')}" + (f" ({extra})" if extra else "")


async def _say(c: Client, name: str, text: str) -> int:
    # Attach first: no event of the reply can be missed.
    await c.attach(name)
    await c.send(
        name,
        {"clientContent": {"turns": [{"role": "user", "parts": [{"text": text}]}], "turnComplete": True}},
    )
    wrote = False
    async for method, p in c.events():
        if p.get("session") != name:
            continue
        if method == "session.status":
            _err(_status_line(p))
        elif method == "session.lagged":
            _err(f"[{name}] events {p.get('first')}..{p.get('last')} were lost (lagged)")
        elif method in ("session.context_lost", "session.tool_call_lost"):
            _err(f"[{name}] {method.split('.', 1)[1]}: {json.dumps(p)}")
        elif method == "session.ended":
            if wrote:
                sys.stdout.write("\n")
            raise SessionEnded(p.get("reason", "ended"))
        elif method == "session.message":
            message = p.get("message") or {}
            if "toolCall" in message:
                # The model waits for a toolResponse that say cannot give: show it, don't hang.
                if wrote:
                    sys.stdout.write("\n")
                _out({"toolCall": message["toolCall"]})
                _err(f"geminictl: the reply is a tool call; answer it with: geminictl send {name}")
                return EXIT_TOOL_CALL
            sc = message.get("serverContent") or {}
            for part in (sc.get("modelTurn") or {}).get("parts") or []:
                if isinstance(part.get("text"), str):
                    sys.stdout.write(part["text"])
                    wrote = True
            tr = (sc.get("outputTranscription") or {}).get("text")
            if isinstance(tr, str):
                sys.stdout.write(tr)
                wrote = True
            sys.stdout.flush()
            # Not the first turnComplete: extended thinking ends a filler with turnComplete +
            # IN_PROGRESS, and only IDLE ends the answer.
            status = InteractionStatus.parse(sc.get("interactionStatus"))
            if interaction_complete(sc.get("turnComplete") is True, status):
                break
    sys.stdout.write("\n")
    sys.stdout.flush()
    return EXIT_OK


async def _attach(c: Client, name: str, since: int | None) -> int:
    """Print events until the session ends. With ``--follow`` the client reconnects after a
    daemon restart and re-attaches with ``since`` (its ``client.disconnected`` /
    ``client.reconnected`` notices are printed like the others); a session that is gone after
    the restart (``client.reattach_failed``) ends it with exit 1."""
    await c.attach(name, since=since)
    async for method, params in c.events():
        _out({"method": method, "params": params})
        if method == "session.ended" and params.get("session") == name:
            return EXIT_OK
        if method == "client.reattach_failed" and params.get("session") == name:
            raise RemoteError(int(params.get("code", 0)), str(params.get("message")),
                              method="session.attach")
    raise ConnectionLost("connection to the daemon lost")


async def _run(args: argparse.Namespace, stdin_text: str | None) -> int:
    path = args.socket or default_socket_path()
    follow = args.command == "attach" and args.follow
    async with open_client(path, client_name="geminictl", reconnect=follow,
                           backoff_initial=0.1, backoff_cap=2.0) as c:
        cmd = args.command
        if cmd == "status":
            _out(await c.status(), indent=2)
        elif cmd == "sessions":
            for s in await c.sessions():
                _out(s)
        elif cmd == "open":
            setup = build_setup(args.model, args.system, args.text, _setup_arg(args.setup))
            _out(await c.open(args.name, setup))
        elif cmd == "say":
            return await _say(c, args.name, args.text)
        elif cmd == "attach":
            return await _attach(c, args.name, args.since)
        elif cmd == "send":
            assert stdin_text is not None
            _out({"seq": await c.send(args.name, _read_message(stdin_text))})
        elif cmd == "close":
            _out(await c.close(args.name))
    return EXIT_OK


def _read_message(text: str) -> dict[str, Any]:
    try:
        msg = json.loads(text)
    except ValueError as exc:
        raise UsageError(f"stdin is not valid JSON: {exc}") from None
    if not isinstance(msg, dict):
        raise UsageError("stdin must hold one JSON object (a Gemini client message)")
    return msg


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2)
        return int(exc.code or 0)
    stdin_text = None
    try:
        if args.command == "send":
            stdin_text = sys.stdin.read()
            _read_message(stdin_text)
        if args.command == "open":
            _setup_arg(args.setup)  # a usage error before any connection
        return trio.run(_run, args, stdin_text)
    except BaseException as exc:  # noqa: BLE001 - every failure becomes one line and a code
        return _exit_code(_leaf(exc), args.command)


def _leaf(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def _exit_code(exc: BaseException, command: str) -> int:
    if isinstance(exc, UsageError):
        _err(f"geminictl: {exc}")
        return EXIT_USAGE
    if isinstance(exc, DaemonUnreachable | ConnectionLost):
        _err(f"geminictl: {exc}")
        return EXIT_UNREACHABLE
    if isinstance(exc, RemoteError):
        _err(f"geminictl: {exc}")
        return EXIT_REMOTE
    if isinstance(exc, SessionEnded):
        _err(f"geminictl: session ended: {exc}")
        return EXIT_REMOTE
    if isinstance(exc, KeyboardInterrupt):
        if command == "attach":
            return EXIT_OK
        _err("geminictl: interrupted")
        return EXIT_INTERRUPTED
    if isinstance(exc, BrokenPipeError):
        return EXIT_OK
    if isinstance(exc, GeminidError):
        _err(f"geminictl: {exc}")
        return EXIT_REMOTE
    if isinstance(exc, SystemExit):
        return int(exc.code or 0) if not isinstance(exc.code, str) else 1
    _err(f"geminictl: unexpected error: {type(exc).__name__}: {exc}")
    return EXIT_REMOTE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
