"""``python -m nspv2`` (and the ``nspv2`` console script): the parser and dispatch.

Each command family lives in its own module (check, bench, memory, stress,
fuzz, demo with lookup/register/signout, layout) with its handlers and its
``add_commands``; this module builds the parser from them and runs one.

Exit codes: 0 ok, 1 problems found, 2 usage error.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from ..host.native import NativeHostUnavailable
from . import bench, check, demo, fuzz, layout, memory, stress
from .common import EXIT_OK, EXIT_PROBLEMS, Parser

__all__ = ["main"]

_FAMILIES = (demo, check, layout, bench, memory, stress, fuzz)


def build_parser() -> Parser:
    parser = Parser(prog="nspv2", description="Toolkit for Winsock NSPv2 namespace providers.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    for family in _FAMILIES:
        family.add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except NativeHostUnavailable as exc:
        if args.debug:
            raise
        print(f"nspv2: {exc}", file=sys.stderr)
        return EXIT_PROBLEMS
    except KeyboardInterrupt:
        print("nspv2: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped to a reader that stopped (head)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except Exception as exc:
        if args.debug:
            raise
        print(
            f"nspv2: {type(exc).__name__}: {exc} (run with --debug for the traceback)",
            file=sys.stderr,
        )
        return EXIT_PROBLEMS
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
