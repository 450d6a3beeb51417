"""The ``geminid`` command: ``run``, ``check-config``, ``fake-upstream`` and ``demo``.

Errors a user can cause (bad config, a live socket in the way) end in one line on stderr and a
non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

import trio

from geminid.daemon import __version__, logsetup
from geminid.daemon.config_load import add_config_arguments, check_config_main, load_config
from geminid.daemon.errors import ConfigError
from geminid.protocol.errors import GeminidError

EXIT_CONFIG = 2


def _parser(*, with_fake: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="geminid", description="Keeps Gemini Live sessions alive for local programs."
    )
    parser.add_argument("--version", action="version", version=f"geminid {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the daemon (embedded fake upstream when no key is set)")
    add_config_arguments(run)

    check = sub.add_parser("check-config", help="print the effective configuration (secrets redacted)")
    add_config_arguments(check)

    fake = sub.add_parser("fake-upstream", help="serve the fake Gemini Live upstream (for tests and demos)")
    if with_fake:
        # Imported only when asked for: the fake is ~100 ms of imports a daemon start can skip.
        from geminid.daemon.fake import cli as fake_cli

        fake_cli.add_arguments(fake)

    demo = sub.add_parser(
        "demo", help="start a daemon on the embedded fake upstream and show one geminictl exchange"
    )
    demo.add_argument("--text", default="Hello! What can you do?", help="what to say")
    return parser


def main(argv: list[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else argv
    args = _parser(with_fake="fake-upstream" in words).parse_args(argv)
    if args.command == "check-config":
        return check_config_main(args)
    if args.command == "fake-upstream":
        from geminid.daemon.fake import cli as fake_cli

        logsetup.configure_logging("info", "auto")
        return fake_cli.run(args)
    if args.command == "demo":
        from geminid.daemon.demo import run_demo

        return run_demo(args.text)
    return _run(args)


def _run(args: argparse.Namespace) -> int:
    # A no-op SIGTERM handler first: trio restores it when its signal receiver closes, so a
    # second SIGTERM during cleanup cannot kill the process with -15 (TRIO_NOTES.md).
    signal.signal(signal.SIGTERM, lambda *_: None)
    try:
        cfg = load_config(args, os.environ)
    except ConfigError as exc:
        print(f"geminid: config error: {logsetup.redact_text(exc.message)}", file=sys.stderr)
        return EXIT_CONFIG
    logsetup.configure_logging(cfg.log.level, cfg.log.format)
    from geminid.daemon import sdnotify
    from geminid.daemon.app import run_daemon

    try:
        fds = sdnotify.listen_fds()
    except ConfigError as exc:
        print(f"geminid: socket activation: {exc.message}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        return trio.run(lambda: run_daemon(cfg, args=args, listen_sock=fds[0] if fds else None))
    except GeminidError as exc:
        return _refuse(exc)
    except BaseExceptionGroup as group:
        known, _ = group.split(GeminidError)
        if known is None:
            raise
        return _refuse(_first_leaf(known))
    except KeyboardInterrupt:
        return 130


def _refuse(exc: GeminidError) -> int:
    """One line on stderr. A ConfigError (the state dir or socket is unusable or taken) is the
    user's to fix: exit 2, like a bad config, so that systemd's RestartPreventExitStatus=2
    does not retry it; anything else exits 1."""
    print(f"geminid: {logsetup.redact_text(exc.message)}", file=sys.stderr)
    return EXIT_CONFIG if isinstance(exc, ConfigError) else 1


def _first_leaf(exc: BaseException) -> GeminidError:
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    assert isinstance(exc, GeminidError)
    return exc


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
