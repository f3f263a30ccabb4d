"""Python thread-state pinning for providers called on native threads.

A ctypes callback on a native thread that has no Python thread state
creates one and destroys it again around every call (``PyGILState_Ensure``
/ ``PyGILState_Release``); that is most of what a Python provider costs on
the native host's threads. :func:`install` hands CPython's own functions to
the native host (``nspv2_pin_install``, see the "Python thread-state
pinning" section of ``nspv2_host.h``): from then on the host gives each
native thread that calls a provider one thread state at its first call and
keeps it, so every later callback on that thread only takes and releases
the GIL. The state is released on its own thread, exactly once: when a
host thread ends (``nspv2_pin_thread_detach``) or by the thread-exit hook.

:func:`nspv2.host.native.load_library` calls :func:`install` right after
loading the library, in the main interpreter only, and registers an atexit
handler then, which runs after every handler registered later (a Host
closing, say): it closes the host's gate (``nspv2_pin_shutdown``), after
which the host refuses provider calls instead of running Python code in a
finalizing interpreter, and waits for the calls already inside a provider.

``NSPV2_NO_PINNING=1`` in the environment leaves pinning out (each callback
then makes its own thread state, as before). In a sub-interpreter nothing is
installed and :class:`~nspv2.host.Host` refuses to start
(:func:`check_interpreter`): ctypes callbacks always run in the main
interpreter's thread states. docs/performance.md ("Thread-state pinning")
says more.
"""

from __future__ import annotations

import atexit
import ctypes
import logging
import os
import threading
from typing import Any

from ..sdk.winsock2 import WSAError

__all__ = [
    "SHUTDOWN_TIMEOUT_MS",
    "PinStats",
    "PythonApi",
    "SubInterpreterError",
    "check_interpreter",
    "in_main_interpreter",
    "install",
    "stats",
    "status",
]

_log = logging.getLogger("nspv2.host")

#: How long the atexit handler waits for calls still inside a provider.
SHUTDOWN_TIMEOUT_MS = 5000


class SubInterpreterError(RuntimeError):
    """nspv2's native host was asked for inside a sub-interpreter."""


class PythonApi(ctypes.Structure):
    """nspv2_python_api (nspv2_host.h): CPython's functions, as addresses."""

    _fields_ = [
        ("size", ctypes.c_uint32),
        ("gil_ensure", ctypes.c_void_p),  # int (*)(void): PyGILState_Ensure
        ("gil_release", ctypes.c_void_p),  # void (*)(int): PyGILState_Release
        ("save_thread", ctypes.c_void_p),  # void *(*)(void): PyEval_SaveThread
        ("restore_thread", ctypes.c_void_p),  # void (*)(void *): PyEval_RestoreThread
        ("this_thread_state", ctypes.c_void_p),  # PyGILState_GetThisThreadState
        ("clear_state", ctypes.c_void_p),  # void (*)(void *): PyThreadState_Clear
        ("delete_current", ctypes.c_void_p),  # void (*)(void): PyThreadState_DeleteCurrent
    ]


class PinStats(ctypes.Structure):
    """nspv2_pin_stats (nspv2_host.h)."""

    _fields_ = [
        ("installed", ctypes.c_uint32),
        ("stopped", ctypes.c_uint32),
        ("pinned_now", ctypes.c_uint64),
        ("pinned_total", ctypes.c_uint64),
        ("released_detach", ctypes.c_uint64),
        ("released_exit", ctypes.c_uint64),
        ("left_at_shutdown", ctypes.c_uint64),
        ("refused_calls", ctypes.c_uint64),
        ("in_flight", ctypes.c_uint64),
    ]

    def as_dict(self) -> dict[str, int]:
        return {field[0]: int(getattr(self, field[0])) for field in self._fields_}


# INT nspv2_pin_install(const nspv2_python_api *api);  -- GIL held (PYFUNCTYPE)
_INSTALL = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.POINTER(PythonApi))
# INT nspv2_pin_shutdown(DWORD timeout_ms);  -- GIL released (CFUNCTYPE)
_SHUTDOWN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_uint32)
# void nspv2_pin_stats_get(nspv2_pin_stats *out);
_STATS_GET = ctypes.CFUNCTYPE(None, ctypes.POINTER(PinStats))

_lock = threading.Lock()
# What install() did in this interpreter: "installed", "disabled",
# "sub-interpreter", "unavailable: ..." (None: not called yet).
_status: str | None = None
_library: Any = None
_main: bool | None = None


def _python() -> ctypes.PyDLL:
    """CPython's C API, on a private library object (so that setting
    restypes here touches no one else's ``ctypes.pythonapi``)."""
    api = ctypes.pythonapi
    return ctypes.PyDLL(api._name, handle=api._handle)


def in_main_interpreter() -> bool:
    """True in the main interpreter (``PyInterpreterState_Get()`` is
    ``PyInterpreterState_Main()``); True too where this cannot be asked."""
    global _main
    if _main is None:
        try:
            py = _python()
            get, main = py.PyInterpreterState_Get, py.PyInterpreterState_Main
        except (AttributeError, OSError, ValueError):
            _main = True
        else:
            get.restype = main.restype = ctypes.c_void_p
            get.argtypes = main.argtypes = ()
            _main = get() == main()
    return _main


def check_interpreter() -> None:
    """Raise :class:`SubInterpreterError` in a sub-interpreter."""
    if not in_main_interpreter():
        raise SubInterpreterError(
            "nspv2's native host cannot be used from a sub-interpreter: a provider's "
            "ctypes callbacks run in the main interpreter's thread states "
            "(PyGILState_Ensure), and thread-state pinning is installed there only. "
            "Create the Host in the main interpreter."
        )


def _disabled_by_environment() -> bool:
    return os.environ.get("NSPV2_NO_PINNING", "") not in ("", "0")


def install(library: Any) -> str:
    """Install pinning into the loaded host ``library`` (once per process;
    called by :func:`nspv2.host.native.load_library`). Returns the status
    (:func:`status`): nothing is installed with ``NSPV2_NO_PINNING=1``, in a
    sub-interpreter, or in a library built without pinning."""
    global _status, _library
    with _lock:
        if _status is not None:
            return _status
        _library = library
        if _disabled_by_environment():
            _status = "disabled"
        elif not in_main_interpreter():
            _status = "sub-interpreter"
        else:
            _status = _install_locked(library)
        return _status


def _install_locked(library: Any) -> str:
    try:
        install_fn = _INSTALL(("nspv2_pin_install", library))
        shutdown_fn = _SHUTDOWN(("nspv2_pin_shutdown", library))
        py = _python()
        names = (
            "PyGILState_Ensure",
            "PyGILState_Release",
            "PyEval_SaveThread",
            "PyEval_RestoreThread",
            "PyGILState_GetThisThreadState",
            "PyThreadState_Clear",
            "PyThreadState_DeleteCurrent",
        )
        addresses = [ctypes.cast(getattr(py, name), ctypes.c_void_p).value for name in names]
    except AttributeError as exc:
        return f"unavailable: {exc}"
    api = PythonApi(ctypes.sizeof(PythonApi), *addresses)
    rc = install_fn(ctypes.byref(api))
    if rc == WSAError.WSAEALREADY:  # installed by an earlier load in this process
        return "installed"
    if rc != 0:
        return f"unavailable: nspv2_pin_install failed with {rc}"

    def shutdown() -> None:
        left = shutdown_fn(SHUTDOWN_TIMEOUT_MS)
        if left:
            _log.warning(
                "nspv2: %d provider call(s) still inside a provider %d ms after exit began",
                left,
                SHUTDOWN_TIMEOUT_MS,
            )

    # registered now, at load: atexit runs it after every handler registered
    # later (a Host closed at exit still reaches its providers)
    atexit.register(shutdown)
    return "installed"


def status() -> str:
    """``installed``, ``disabled`` (NSPV2_NO_PINNING), ``sub-interpreter``,
    ``unavailable: ...`` or ``not loaded``."""
    return _status or "not loaded"


def stats(library: Any = None) -> dict[str, int]:
    """The host's pinning counters (nspv2_pin_stats) as a dict."""
    if library is None:
        library = _library
    if library is None:
        from .native import load_library

        library = load_library()
    out = PinStats()
    _STATS_GET(("nspv2_pin_stats_get", library))(ctypes.byref(out))
    return out.as_dict()
