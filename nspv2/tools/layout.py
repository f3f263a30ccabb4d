"""``nspv2 layout``: every structure's size, alignment and field offsets."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from ..sdk.layout import ABI, FORMATS, render_layout
from .common import EXIT_OK

if TYPE_CHECKING:
    import argparse

    from .common import SubParsers

__all__ = ["add_commands"]


def cmd_layout(args: argparse.Namespace) -> int:
    sys.stdout.write(render_layout(args.abi or [ABI.X64], "json" if args.json else args.format))
    return EXIT_OK


def add_commands(sub: SubParsers) -> None:
    p_layout = sub.add_parser(
        "layout",
        help="print every structure's size, alignment and field offsets",
        description="Print the size, alignment and field offsets of every NSPv2 structure "
        "for one or more ABIs (x64 and x86 are Windows; host is this machine).",
    )
    p_layout.add_argument(
        "--abi",
        action="append",
        choices=[a.value for a in ABI],
        help="ABI to describe; repeat for several (default: x64)",
    )
    p_layout.add_argument(
        "--format", choices=FORMATS, default="markdown", help="output format (default: markdown)"
    )
    p_layout.add_argument("--json", action="store_true", help="the same as --format json")
    p_layout.set_defaults(func=cmd_layout)
