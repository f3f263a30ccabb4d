"""``nspv2 config``: what a C compiler needs to build against the installed nspv2.

``--cflags`` is ``-I`` and the folder of nspv2's C headers
(:func:`nspv2.sdk.get_include`); ``--libs`` links against the installed host
library (:func:`nspv2.host.library_path`) by its file name, with an rpath so
the program finds it at run time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..host.native import library_path
from ..sdk import get_include
from .common import EXIT_OK, add_json, emit_json

if TYPE_CHECKING:
    import argparse

    from .common import SubParsers

__all__ = ["add_commands", "cflags", "libs"]


def cflags() -> str:
    return f"-I{get_include()}"


def libs() -> str:
    path = library_path().resolve()
    return f"-L{path.parent} -l:{path.name} -Wl,-rpath,{path.parent}"


def cmd_config(args: argparse.Namespace) -> int:
    both = not args.cflags and not args.libs
    want_cflags, want_libs = args.cflags or both, args.libs or both
    if args.json:
        doc: dict[str, str] = {}
        if want_cflags:
            doc["include_dir"] = get_include()
            doc["cflags"] = cflags()
        if want_libs:
            doc["library"] = str(library_path().resolve())
            doc["libs"] = libs()
        emit_json(doc)
        return EXIT_OK
    words = ([cflags()] if want_cflags else []) + ([libs()] if want_libs else [])
    print(" ".join(words))
    return EXIT_OK


def add_commands(sub: SubParsers) -> None:
    p_config = sub.add_parser(
        "config",
        help="compiler and linker flags for C code using nspv2's headers and host library",
        description="Print -I for nspv2's C headers (--cflags) and how to link against the "
        "installed native host library (--libs); both when neither is given.",
    )
    p_config.add_argument("--cflags", action="store_true", help="-I<include folder>")
    p_config.add_argument(
        "--libs", action="store_true", help="-L<dir> -l:<library file> -Wl,-rpath,<dir>"
    )
    add_json(p_config, "the folders and flags")
    p_config.set_defaults(func=cmd_config)
