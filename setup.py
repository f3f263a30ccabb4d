"""Build the native NSPv2 host (native_stub/src) into the package.

The host is a plain C11 shared library loaded with ctypes (it has no Python
API); setuptools' extension machinery is used only to compile and link it
and to place it inside the installed package as ``nspv2/host/_nspv2host*``.
The C client library (native_stub/client/client.c and the wire codec
native_stub/src/wire.c) is built the same way as ``nspv2/host/_nspv2client*``:
client programs link it by file name (``nspv2 config --client-libs``).
The public C headers (native_stub/include) are copied to
``nspv2/sdk/include`` (their ``compat`` folder of Windows header shims to
``nspv2/sdk/include/compat``) so that a C provider builds against an
installed nspv2 (``nspv2 config --cflags --libs``, ``--compat``). The C
examples (native_stub/examples: the email example's provider and the
reference provider it builds in) go to ``nspv2/examples/native``, and the
host's own sources (native_stub/src) to ``nspv2/host/csrc``, from which an
AddressSanitizer host is built on demand.

A machine without a C compiler still installs nspv2: the build says why the
host was skipped in one line on the installing terminal's stderr, and using
the host later raises ``nspv2.host.NativeHostUnavailable`` with the same
explanation. A host library left in an old build folder is never packaged
in its place.
"""

from __future__ import annotations

import os
import shutil
import sys
from glob import glob

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py

SOURCES = sorted(glob(os.path.join("native_stub", "src", "*.c")))
HEADERS = sorted(glob(os.path.join("native_stub", "include", "*.h")))
# (source files, their folder in the built package)
SHIPPED = [
    (HEADERS, os.path.join("nspv2", "sdk", "include")),
    (
        sorted(glob(os.path.join("native_stub", "include", "compat", "*.h"))),
        os.path.join("nspv2", "sdk", "include", "compat"),
    ),
    (
        sorted(glob(os.path.join("native_stub", "examples", "*.[ch]"))),
        os.path.join("nspv2", "examples", "native"),
    ),
    (
        sorted(glob(os.path.join("native_stub", "src", "*.[ch]"))),
        os.path.join("nspv2", "host", "csrc"),
    ),
]


def _installer_stderr() -> list[int]:
    """File descriptors to write a one-line notice to.

    pip runs the build backend with its output captured and shows it only
    with -v, so a notice printed here alone is never seen. On Linux the
    notice also goes to the stderr of the nearest ancestor process (pip)
    whose stderr is not this build's captured pipe.
    """
    fds = [2]
    if not sys.platform.startswith("linux"):
        return fds
    try:
        own = os.stat("/proc/self/fd/2")
    except OSError:
        return fds
    pid = os.getppid()
    for _ in range(4):
        if pid <= 1:
            break
        try:
            theirs = os.stat(f"/proc/{pid}/fd/2")
            if (theirs.st_dev, theirs.st_ino) != (own.st_dev, own.st_ino):
                fds.append(os.open(f"/proc/{pid}/fd/2", os.O_WRONLY | os.O_APPEND))
                break
            with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
                pid = int(stat.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    return fds


def _notice(message: str) -> None:
    line = (message.replace("\n", " ") + "\n").encode()
    for fd in _installer_stderr():
        try:
            os.write(fd, line)
        except OSError:
            pass
        if fd != 2:
            os.close(fd)


class BuildNativeHost(build_ext):
    def get_export_symbols(self, ext: Extension) -> list[str]:
        return []  # not a Python module: no PyInit_ symbol to export

    def build_extension(self, ext: Extension) -> None:
        # Whatever happens below, the library of an earlier build must not be
        # packaged: remove it first, and always rebuild (it takes seconds).
        for stale in (self.get_ext_fullpath(ext.name),):
            if os.path.exists(stale):
                os.remove(stale)
        self.force = True
        compiler = os.environ.get("CC") or "cc"
        if shutil.which(compiler.split()[0]) is None and not shutil.which("gcc"):
            self._skip(ext, f"no C compiler found (looked for '{compiler}' and 'gcc')")
            return
        try:
            super().build_extension(ext)
        except Exception as exc:  # reported; the rest installs
            self._skip(ext, f"the C build failed: {str(exc).strip().splitlines()[-1:]}")

    def copy_extensions_to_source(self) -> None:
        # Editable installs: only copy what was built.
        every = self.extensions
        self.extensions = [e for e in every if os.path.exists(self.get_ext_fullpath(e.name))]
        try:
            if self.extensions:
                super().copy_extensions_to_source()
        finally:
            self.extensions = every

    def _skip(self, ext: Extension, why: str) -> None:
        # One line per install: the host's (built first) covers the client
        # library when both are skipped for want of a compiler.
        skipped: list[str] = getattr(self, "_nspv2_skipped", [])
        self._nspv2_skipped = [*skipped, ext.name]
        if ext.name == CLIENT_EXTENSION:
            if skipped:
                return
            _notice(
                f"nspv2: installing without the C client library: {why}; "
                "'nspv2 config --client-libs' will say so (install a C compiler, e.g. "
                "'apt-get install gcc', and reinstall nspv2)."
            )
            return
        _notice(
            f"nspv2: installing without the native host and the C client library: {why}; "
            "nspv2.Host will say so when used "
            "(install a C compiler, e.g. 'apt-get install gcc', and reinstall nspv2)."
        )


class BuildPyWithHeaders(build_py):
    """Also place the C headers, examples and host sources in the package
    (SHIPPED; a symbolic link in the checkout is copied as the file it names)."""

    def run(self) -> None:
        super().run()
        for files, folder in SHIPPED:
            target = os.path.join(self.build_lib, folder)
            os.makedirs(target, exist_ok=True)
            for path in files:
                self.copy_file(os.path.realpath(path), os.path.join(target, os.path.basename(path)))

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        return super().get_outputs(include_bytecode) + [
            os.path.join(self.build_lib, folder, os.path.basename(path))
            for files, folder in SHIPPED
            for path in files
        ]


CLIENT_EXTENSION = "nspv2.host._nspv2client"


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
            depends=HEADERS + glob(os.path.join("native_stub", "src", "*.h")),
        ),
        # The client library: Winsock's client calls for client processes of
        # `nspv2 serve` (include/nspv2_client.h); nothing of the host.
        Extension(
            CLIENT_EXTENSION,
            sources=[
                os.path.join("native_stub", "client", "client.c"),
                os.path.join("native_stub", "src", "wire.c"),
                os.path.join("native_stub", "src", "catalog.c"),
            ],
            include_dirs=[
                os.path.join("native_stub", "include"),
                os.path.join("native_stub", "src"),
            ],
            extra_compile_args=["-std=c11", "-pthread", "-fvisibility=hidden", "-O2"],
            extra_link_args=["-pthread"],
            depends=[*HEADERS, os.path.join("native_stub", "src", "wire.h")],
        ),
    ]


setup(
    ext_modules=host_extension(),
    cmdclass={"build_ext": BuildNativeHost, "build_py": BuildPyWithHeaders},
)
