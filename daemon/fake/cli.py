"""``geminid fake-upstream``: run the fake Gemini Live service from a shell.

The lead's ``geminid`` command adds these arguments to its ``fake-upstream`` subcommand with
:func:`add_arguments` and calls :func:`run`. The accepted key comes from ``$GEMINI_API_KEY``
(or the variable named by ``--api-key-env``); with none set, any non-empty key is accepted.
"""

from __future__ import annotations

import argparse
import os
import signal

import attrs
import structlog
import trio

from . import catalogue as C
from .faults import Fault, Planned, Trigger
from .options import DECLINES, FakeOptions
from .server import FakeUpstream

log = structlog.get_logger()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = FakeOptions()
    add = parser.add_argument
    add("--host", default="127.0.0.1", help="interface to bind (default: %(default)s)")
    add("--port", type=int, default=8765, help="port to bind, 0 for any (default: %(default)s)")
    add("--api-key-env", default="GEMINI_API_KEY", metavar="VAR",
        help="environment variable holding the accepted key; unset: any non-empty key (default: %(default)s)")
    add("--lifetime", type=float, default=d.lifetime, metavar="S", help="connection lifetime in seconds")
    add("--goaway-before", type=float, default=d.goaway_before, metavar="S",
        help="send goAway this long before the cut (capped to the lifetime)")
    add("--no-goaway", action="store_true", help="cut connections at the lifetime with no goAway")
    add("--cut-mode", choices=("goaway", "cancelled"), default=d.cut_mode,
        help="close at the lifetime with 1008 'client failed to close ... GoAway' or 1000 'The operation was cancelled.'")
    add("--handle-ttl", type=float, default=d.handle_ttl, metavar="S",
        help="resumption handles stay valid this long after the session's last connection ends")
    add("--max-sessions", type=int, default=None, metavar="N",
        help="concurrent sessions (set-up connections) past which setup closes 1011 RESOURCE_EXHAUSTED")
    add("--no-empty-frames", action="store_true", help="do not send the bare {} frames")
    add("--reply-pace", type=float, default=d.reply_pace, metavar="S", help="seconds between reply chunks")
    add("--reply-chunks", type=int, default=d.reply_chunks, metavar="N", help="chunks per reply")
    add("--latency", type=float, default=d.latency, metavar="S", help="delay every server frame by S")
    add("--transparent", action="store_true",
        help="allow sessionResumption.transparent on the Developer API path and send lastConsumedClientMessageIndex")
    add("--seed", type=int, default=d.seed, help="seed for handles and tool-call ids")
    add("--refuse", type=int, default=0, metavar="N", help="refuse the first N upgrades with --refuse-status")
    add("--refuse-status", type=int, default=429, metavar="CODE", help="HTTP status for --refuse (default: 429)")
    add("--drop-every", type=float, default=None, metavar="S",
        help="drop each connection's TCP (no close frame) S seconds after it opened")
    add("--close-every", type=float, default=None, metavar="S",
        help="close each connection S seconds after it opened with --close-code/--close-reason")
    add("--close-code", type=int, default=1011, metavar="C", help="close code for --close-every (default: 1011)")
    add("--close-reason", default="The service is currently unavailable.", metavar="R",
        help="close reason for --close-every")
    add("--stall-after", type=float, default=None, metavar="S",
        help="stall each connection S seconds after it opened (no reads, no writes)")
    add("--goaway-after", type=float, default=None, metavar="S",
        help="send goAway (timeLeft --goaway-before) S seconds after each connection opened")
    add("--expire-handles-after", type=float, default=None, metavar="S",
        help="expire every handle S seconds after each connection opened")
    add("--catalogue", choices=("2026", "permissive"), default="2026",
        help="models served: the 2026 catalogue (unknown and retired models close 1008), or that "
             "plus the pre-2026 fake for any other model id (default: %(default)s)")
    add("--accept-text", action="append", default=[], metavar="MODEL",
        help="let MODEL accept responseModalities TEXT (repeatable; UNCONFIRMED on 3.8)")
    add("--modality-refusal", action="append", default=[], metavar="MODEL=CODE",
        help="close a refused modality on MODEL with CODE: 1007 (invalid argument) or 1011 "
             "(Internal error encountered) (repeatable)")
    add("--no-plain-interaction-status", action="store_true",
        help="plain models send no interactionStatus (only extended thinking does; UNCONFIRMED)")
    add("--resumable-in-progress", action="store_true",
        help="issue resumable handles between an IN_PROGRESS turnComplete and IDLE (UNCONFIRMED)")
    add("--resumable-pending-calls", action="store_true",
        help="pending NON_BLOCKING calls do not hold resumable handles back (UNCONFIRMED)")
    add("--idle-after-silent", action="store_true",
        help="extended thinking: a SILENT response closing the last pending call ends the "
             "interaction with a bare turnComplete + IDLE (UNCONFIRMED)")
    add("--idle-while-call-pending", action="store_true",
        help="extended thinking: end the interaction IDLE after the filler while a NON_BLOCKING "
             "call is pending; the result is spoken later in an interaction of its own (UNCONFIRMED)")
    add("--when-idle-at-pause", action="store_true",
        help="extended thinking: a WHEN_IDLE result kept while the model spoke is spoken at the "
             "filler's IN_PROGRESS pause, before the answer (UNCONFIRMED)")
    add("--decline", choices=DECLINES, default=None,
        help="proactive audio (3.8): a turn containing a --decline-word gets no reply, only a bare "
             "turnComplete or nothing at all (UNCONFIRMED)")
    add("--decline-word", action="append", default=[], metavar="WORD",
        help=f"a word that makes the model decline with --decline (repeatable; default: {', '.join(d.decline_words)})")


def catalogue_from_args(args: argparse.Namespace) -> C.Catalogue:
    """The catalogue the flags ask for; a bad ``MODEL`` or ``CODE`` raises ValueError."""
    cat = C.catalogue_2026() if args.catalogue == "2026" else C.permissive_catalogue()

    def entry(model: str) -> C.ModelSpec:
        spec = next((m for m in cat.models if m.name == C.bare_id(model)), None)
        if spec is None:
            raise ValueError(f"{model!r} is not in the catalogue ({', '.join(cat.names())})")
        return spec

    for model in args.accept_text:
        cat = cat.with_model(entry(model).accepts_text())
    for item in args.modality_refusal:
        model, _, code = item.partition("=")
        refusals = {"1007": (1007, C.INVALID_ARGUMENT), "1011": (1011, C.INTERNAL_ERROR)}
        if code not in refusals:
            raise ValueError(f"--modality-refusal {item!r}: CODE must be 1007 or 1011")
        cat = cat.with_model(attrs.evolve(entry(model), modality_refusal=refusals[code]))
    return cat


def options_from_args(args: argparse.Namespace) -> FakeOptions:
    def every(fault: Fault, seconds: float | None) -> list[Planned]:
        return [] if seconds is None else [Planned(fault, Trigger("seconds", seconds=seconds))]

    d = FakeOptions()
    faults = [
        *every(Fault.drop(), args.drop_every),
        *every(Fault.close(args.close_code, args.close_reason), args.close_every),
        *every(Fault.stall(), args.stall_after),
        *every(Fault.goaway(args.goaway_before), args.goaway_after),
        *every(Fault.expire_handles(), args.expire_handles_after),
    ]
    return FakeOptions(
        api_key=os.environ.get(args.api_key_env) or None,
        host=args.host,
        port=args.port,
        lifetime=args.lifetime,
        goaway_before=args.goaway_before,
        goaway=not args.no_goaway,
        cut_mode=args.cut_mode,
        handle_ttl=args.handle_ttl,
        max_sessions=args.max_sessions,
        empty_frames=not args.no_empty_frames,
        reply_pace=args.reply_pace,
        reply_chunks=args.reply_chunks,
        latency=args.latency,
        transparent=args.transparent,
        seed=args.seed,
        faults=tuple(faults),
        catalogue=catalogue_from_args(args),
        plain_interaction_status=not args.no_plain_interaction_status,
        resumable_in_progress=args.resumable_in_progress,
        resumable_pending_calls=args.resumable_pending_calls,
        idle_after_silent=args.idle_after_silent,
        idle_while_call_pending=args.idle_while_call_pending,
        when_idle_at_pause=args.when_idle_at_pause,
        decline=args.decline,
        decline_words=tuple(args.decline_word) or d.decline_words,
    )


async def _main(opts: FakeOptions, refuse: int, refuse_status: int) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            fake = FakeUpstream(opts)
            if refuse:
                fake.refuse_next(refuse, status=refuse_status)
            await nursery.start(fake.serve)
            print(fake.url(), flush=True)
            # Not ``key=``: the log pipeline redacts every field of that name (logsetup), and this
            # one says only whether a key is configured, never the key.
            log.info(
                "fake.ready", url=fake.url(), base_url=fake.base_url,
                auth="configured key" if opts.api_key else "any non-empty key",
                models=",".join(opts.catalogue.names()),
                fallback=opts.catalogue.fallback is not None,
            )
            async for signum in signals:
                log.info("fake.stopping", signal=signal.Signals(signum).name)
                nursery.cancel_scope.cancel()
                break


def run(args: argparse.Namespace) -> int:
    """Serve until SIGINT/SIGTERM; returns the exit status."""
    try:
        opts = options_from_args(args)
    except (ValueError, TypeError) as exc:
        log.error("fake.bad_options", error=str(exc))
        return 2
    # A second SIGTERM during cleanup must not kill us with the default action (TRIO_NOTES).
    signal.signal(signal.SIGTERM, lambda *_: None)
    try:
        trio.run(_main, opts, args.refuse, args.refuse_status)
    except OSError as exc:
        log.error("fake.cannot_listen", error=str(exc))
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    """Standalone entry point (``python -m geminid.daemon.fake.cli``)."""
    parser = argparse.ArgumentParser(prog="geminid fake-upstream", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
