"""``nspv2 config``: what a C compiler needs to build against the installed nspv2.

``--cflags`` is ``-I`` and the folder of nspv2's C headers
(:func:`nspv2.sdk.get_include`); ``--libs`` links against the installed host
library (:func:`nspv2.host.library_path`) by its file name, with an rpath so
the program finds it at run time; ``--client-libs`` links a client program
against the C client library (:func:`nspv2.host.native.client_library_path`,
docs/client-c.md) the same way. ``--compat`` adds what Windows provider
source needs to build unchanged (:func:`compat_cflags`: the ``compat``
folder of shim headers such as ``windows.h``, a 16-bit ``wchar_t`` and the
UNICODE names). ``--json`` also names the C examples' folder
(:func:`examples_dir`) and the native host's sources
(:func:`host_sources_dir`, from which an AddressSanitizer host is built).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..host.native import NativeHostUnavailable, client_library_path, library_path
from ..sdk import get_include
from .common import EXIT_OK, add_json, emit_json

if TYPE_CHECKING:
    import argparse

    from .common import SubParsers

__all__ = [
    "add_commands",
    "cflags",
    "client_libs",
    "compat_cflags",
    "examples_dir",
    "host_sources_dir",
    "libs",
]

_PACKAGE = Path(__file__).resolve().parents[1]
_CHECKOUT = _PACKAGE.parent / "native_stub"


def cflags() -> str:
    return f"-I{get_include()}"


def compat_cflags() -> str:
    """The flags for Windows-style provider source, besides :func:`cflags`."""
    compat = Path(get_include()) / "compat"
    return f"-I{compat} -fshort-wchar -DUNICODE -D_UNICODE"


def _shipped(installed: Path, checkout: Path, marker: str) -> Path:
    for place in (installed, checkout):
        if (place / marker).is_file():
            return place
    raise FileNotFoundError(
        f"nspv2's C sources are missing: neither {installed} nor {checkout} has {marker}"
    )


def examples_dir() -> Path:
    """The C examples: ``email_provider.c`` and the reference provider it
    builds in (``ref_provider.c``, with the ``platform.h`` it includes)."""
    return _shipped(_PACKAGE / "examples" / "native", _CHECKOUT / "examples", "email_provider.c")


def host_sources_dir() -> Path:
    """The native host's C sources and internal headers (``*.c``, ``*.h``)."""
    return _shipped(_PACKAGE / "host" / "csrc", _CHECKOUT / "src", "host.c")


def libs() -> str:
    path = library_path().resolve()
    return f"-L{path.parent} -l:{path.name} -Wl,-rpath,{path.parent}"


def client_libs() -> str:
    """How a client program links the C client library (docs/client-c.md)."""
    path = client_library_path().resolve()
    return f"-L{path.parent} -l:{path.name} -Wl,-rpath,{path.parent}"


def cmd_config(args: argparse.Namespace) -> int:
    both = not args.cflags and not args.libs and not args.client_libs
    want_cflags, want_libs = args.cflags or both, args.libs or both
    if args.json:
        doc: dict[str, str | None] = {}
        if want_cflags:
            doc["include_dir"] = get_include()
            doc["cflags"] = cflags()
        doc["compat_cflags"] = compat_cflags()
        if want_libs:
            doc["library"] = str(library_path().resolve())
            doc["libs"] = libs()
        if args.client_libs:
            doc["client_library"] = str(client_library_path().resolve())
            doc["client_libs"] = client_libs()
        elif both:  # a build without the client library still reports the rest
            try:
                doc["client_library"] = str(client_library_path().resolve())
                doc["client_libs"] = client_libs()
            except NativeHostUnavailable:
                doc["client_library"] = doc["client_libs"] = None
        doc["examples_dir"] = str(examples_dir())
        doc["host_sources_dir"] = str(host_sources_dir())
        emit_json(doc)
        return EXIT_OK
    words = (
        ([cflags()] if want_cflags else [])
        + ([compat_cflags()] if args.compat else [])
        + ([libs()] if want_libs else [])
        + ([client_libs()] if args.client_libs else [])
    )
    print(" ".join(words))
    return EXIT_OK


def add_commands(sub: SubParsers) -> None:
    p_config = sub.add_parser(
        "config",
        help="compiler and linker flags for C code using nspv2's headers and host library",
        description="Print -I for nspv2's C headers (--cflags) and how to link against the "
        "installed native host library (--libs); both when neither is given. --client-libs "
        "links a client program against the C client library instead (its Winsock calls reach "
        "a provider process run by 'nspv2 serve'). --compat adds the flags that build Windows "
        "provider or client source unchanged (shim windows.h, winsock2.h, ws2spi.h, ... and a "
        "16-bit wchar_t).",
    )
    p_config.add_argument("--cflags", action="store_true", help="-I<include folder>")
    p_config.add_argument(
        "--libs", action="store_true", help="-L<dir> -l:<library file> -Wl,-rpath,<dir>"
    )
    p_config.add_argument(
        "--client-libs",
        action="store_true",
        help="-L<dir> -l:<client library file> -Wl,-rpath,<dir>: link a client program "
        "(WSAStartup, WSALookupServiceBeginW, ... reaching 'nspv2 serve')",
    )
    p_config.add_argument(
        "--compat",
        action="store_true",
        help="also -I<include>/compat -fshort-wchar -DUNICODE -D_UNICODE (Windows-style source)",
    )
    add_json(
        p_config,
        "the folders and flags (and the C examples' and host sources' folders; "
        "client_library / client_libs null when the client library was not built)",
    )
    p_config.set_defaults(func=cmd_config)
