"""Build the native NSPv2 host (native_stub/src) into the package.

The host is a plain C11 shared library loaded with ctypes (it has no Python
API); setuptools' extension machinery is used only to compile and link it
and to place it inside the installed package (or next to the sources for an
editable install). A machine without a C compiler still installs nspv2: the
build prints why the host was skipped, and using the host later raises
``nspv2.host.native.NativeHostUnavailable`` with the same explanation.
"""

from __future__ import annotations

import os
import shutil
import sys
from glob import glob

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

SOURCES = sorted(glob(os.path.join("native_stub", "src", "*.c")))


class BuildNativeHost(build_ext):
    def get_export_symbols(self, ext: Extension) -> list[str]:
        return []  # not a Python module: no PyInit_ symbol to export

    def build_extension(self, ext: Extension) -> None:
        compiler = os.environ.get("CC") or "cc"
        if (
            sys.platform != "win32"
            and shutil.which(compiler.split()[0]) is None
            and not shutil.which("gcc")
        ):
            self._skip(ext, f"no C compiler found (looked for '{compiler}' and 'gcc')")
            return
        try:
            super().build_extension(ext)
        except Exception as exc:  # reported; the rest installs
            self._skip(ext, f"the C build failed: {exc}")

    def _skip(self, ext: Extension, why: str) -> None:
        message = (
            f"nspv2: not building the native host ({why}). Everything else installs; "
            "nspv2.Host will explain this when used. Install a C compiler "
            "(Debian: apt-get install gcc) and reinstall nspv2 to get the host."
        )
        print(message, file=sys.stderr)


def host_extension() -> list[Extension]:
    if sys.platform == "win32":
        return []  # Windows uses ws2_32.dll; build the host there with native_stub/Makefile
    return [
        Extension(
            "nspv2.host._nspv2host",
            sources=SOURCES,
            include_dirs=[
                os.path.join("native_stub", "include"),
                os.path.join("native_stub", "src"),
            ],
            extra_compile_args=["-std=c11", "-pthread", "-fvisibility=hidden", "-O2"],
            extra_link_args=["-pthread"],
            depends=glob(os.path.join("native_stub", "include", "*.h"))
            + glob(os.path.join("native_stub", "src", "*.h")),
        )
    ]


setup(ext_modules=host_extension(), cmdclass={"build_ext": BuildNativeHost})
