"""What every command shares: exit codes, the parser class, argument types,
the progress line, and how results and errors are written.

Exit codes: 0 ok, 1 problems found, 2 usage error.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn, TextIO

__all__ = [
    "DWORD_MAX",
    "EXIT_OK",
    "EXIT_PROBLEMS",
    "EXIT_USAGE",
    "Parser",
    "Progress",
    "UsageError",
    "add_json",
    "add_subject",
    "emit_json",
    "fail",
    "non_negative",
    "positive",
    "whole",
]

EXIT_OK = 0
EXIT_PROBLEMS = 1
EXIT_USAGE = 2


class UsageError(Exception):
    """A usage problem found after parsing (exit 2, one line)."""


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line and exit 2 (as
    JSON on stdout when the command line asked for ``--json``)."""

    #: Set by the CLI when ``--json`` is on the command line.
    json_errors: bool = False

    def error(self, message: str) -> NoReturn:
        if Parser.json_errors:
            print(json.dumps({"error": message, "usage": True, "prog": self.prog}))
            self.exit(EXIT_USAGE)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def fail(args: argparse.Namespace, message: str, status: int, **extra: Any) -> int:
    """Report an error the way the command line asked (stderr, or JSON on
    stdout with ``--json``); return the exit ``status`` unchanged."""
    if getattr(args, "json", False):
        print(json.dumps({"error": message, **extra}))
    else:
        print(message, file=sys.stderr)
    return status


class Progress:
    """One self-erasing status line on a terminal; silent when piped."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty()
        self.width = 0

    def __call__(self, text: str) -> None:
        if self.live:
            line = text[:78]
            self.stream.write("\r" + line.ljust(self.width))
            self.stream.flush()
            self.width = len(line)

    def done(self) -> None:
        if self.live and self.width:
            self.stream.write("\r" + " " * self.width + "\r")
            self.stream.flush()
            self.width = 0


#: The largest value of a DWORD (counts the native host takes as uint32_t).
DWORD_MAX = 0xFFFFFFFF


def whole(low: int, high: int) -> Callable[[str], int]:
    """An argument type: a whole number (decimal, or 0x hex) from ``low`` to ``high``."""

    def parse(text: str) -> int:
        try:
            value = int(text.strip().replace("_", ""), 0)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{text} is out of range ({low} to {high})")
        return value

    parse.__name__ = "whole number"
    return parse


#: A whole number of at least 1 that fits a DWORD.
positive = whole(1, DWORD_MAX)


def non_negative(text: str) -> float:
    """A size that cannot be negative (a float)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text} must be a finite number, 0 or more")
    return value


def add_subject(parser: argparse.ArgumentParser) -> None:
    """The provider to measure as A, and the name to ask it for."""
    parser.add_argument(
        "provider",
        metavar="MODULE:CLASS",
        nargs="?",
        help="a Provider to measure instead of the built-in bench provider "
        "(as for check: MODULE:CLASS or a .py file)",
    )
    parser.add_argument(
        "--name",
        help="the name each lookup asks for (default: the class's first check_queries "
        "entry, else alice@example.com)",
    )


def add_json(parser: argparse.ArgumentParser, what: str = "the results") -> None:
    parser.add_argument("--json", action="store_true", help=f"print {what} as JSON")


def emit_json(doc: Any) -> None:
    sys.stdout.write(json.dumps(doc, indent=2) + "\n")


Handler = Callable[[argparse.Namespace], int]

if TYPE_CHECKING:
    SubParsers = argparse._SubParsersAction[argparse.ArgumentParser]
