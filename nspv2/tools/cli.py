"""``python -m nspv2`` (and the ``nspv2`` console script): the parser and dispatch.

Each command family lives in its own module (check, bench, memory, stress,
fuzz, demo with lookup/register/signout, layout, catalog with
install/uninstall/enable/disable) with its handlers and its
``add_commands``; this module builds the parser from them and runs one.

Every command takes ``--debug`` (before or after its name) and, if it
prints results, ``--json``; with ``--json`` errors too go to stdout as JSON
(``{"error": ...}``), with the same exit code.

Exit codes: 0 ok, 1 problems found, 2 usage error, 130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from .. import __version__
from ..host.native import NativeHostUnavailable
from . import (
    async_proof,
    bench,
    catalog,
    check,
    compare,
    config,
    demo,
    fuzz,
    layout,
    memory,
    presence,
    serve,
    stress,
)
from .check import CheckError
from .common import EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE, Parser, UsageError, fail

__all__ = ["main"]

_FAMILIES = (
    demo,
    serve,
    catalog,
    check,
    compare,
    layout,
    bench,
    memory,
    stress,
    async_proof,
    fuzz,
    config,
    presence,
)
_DEBUG_HELP = "show tracebacks"
#: The commands whose ``-- ARGS`` go to a native provider's entry point.
_TAKE_ENTRY_ARGS = ("check", "serve", "install", "uninstall", "enable", "disable")


def build_parser() -> Parser:
    parser = Parser(prog="nspv2", description="Toolkit for Winsock NSPv2 namespace providers.")
    parser.add_argument("--version", action="version", version=f"nspv2 {__version__}")
    parser.add_argument("--debug", action="store_true", help=_DEBUG_HELP)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    for family in _FAMILIES:
        family.add_commands(sub)
    for command in sub.choices.values():
        # after the command too; SUPPRESS keeps a --debug given before it
        command.add_argument(
            "--debug", action="store_true", default=argparse.SUPPRESS, help=_DEBUG_HELP
        )
    return parser


def _asks_for_json(argv: Sequence[str]) -> bool:
    words = list(argv)
    return "--json" in (words[: words.index("--")] if "--" in words else words)


def _split_entry_args(words: list[str]) -> tuple[list[str], list[str] | None]:
    """``check|serve ... -- ARGS``: the words before ``--``, and ARGS (a native
    provider's entry-point arguments); None when there is no ``--``."""
    command = next((i for i, w in enumerate(words) if not w.startswith("-")), None)
    if command is None or words[command] not in _TAKE_ENTRY_ARGS or "--" not in words[command:]:
        return words, None
    cut = words.index("--", command)
    return words[:cut], words[cut + 1 :]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    words, entry_args = _split_entry_args(list(sys.argv[1:] if argv is None else argv))
    Parser.json_errors = _asks_for_json(words)
    args = build_parser().parse_args(words)
    if entry_args is not None:
        args.entry_args = entry_args
    try:
        code: int = args.func(args)
    except UsageError as exc:
        return fail(args, f"nspv2 {args.command}: error: {exc}", EXIT_USAGE, usage=True)
    except CheckError as exc:  # the provider named on the command line (check, bench, ...)
        if args.debug and not exc.usage:
            raise
        status = EXIT_USAGE if exc.usage else EXIT_PROBLEMS
        return fail(args, f"nspv2 {args.command}: {exc}", status, usage=exc.usage)
    except NativeHostUnavailable as exc:
        if args.debug:
            raise
        return fail(args, f"nspv2: {exc}", EXIT_PROBLEMS)
    except KeyboardInterrupt:
        return fail(args, "nspv2: interrupted", 130)
    except BrokenPipeError:  # output piped to a reader that stopped (head)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except Exception as exc:
        if args.debug:
            raise
        return fail(
            args,
            f"nspv2: {type(exc).__name__}: {exc} (run with --debug for the traceback)",
            EXIT_PROBLEMS,
            exception=type(exc).__name__,
        )
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
