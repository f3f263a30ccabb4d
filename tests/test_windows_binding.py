"""The Windows binding, correct by construction, proven off Windows.

There is no Windows here, so each test fakes the platform (``sys.platform``
and the Windows-only parts of ctypes) and reads the bound function objects:
their calling convention and last-error flags are in ``_flags_``, the same
bits CPython's ``_ctypes`` acts on when calling them on Windows. The faked
WINFUNCTYPE builds prototypes with the stdcall flag set as on Windows (no
``FUNCFLAG_CDECL``); on x86-64 Linux the ABI is the same, so the functions
bound through it are also called for real on the native host.

Why the flags matter (CPython ``Modules/_ctypes/callproc.c``): a function
with ``FUNCFLAG_USE_LASTERROR`` runs ``SetLastError(private)`` before the
call and, after it, saves ``GetLastError()`` into ctypes' private copy and
puts the thread's previous value back. A provider's ``WSASetLastError``
bound that way would set the code and have it taken away again before
ws2_32 reads it.
"""

from __future__ import annotations

import ctypes
import sys
from typing import Any, ClassVar

import pytest

from nspv2.host import native
from nspv2.host.winsock import Winsock, load_native_host, load_ws2_32
from nspv2.provider.errors import WinsockError
from nspv2.sdk.winsock2 import SOCKET_ERROR
from nspv2.sdk.ws2spi import HOST_FUNCTIONS

FUNCFLAG_CDECL = ctypes._FUNCFLAG_CDECL  # type: ignore[attr-defined]
FUNCFLAG_USE_LASTERROR = ctypes._FUNCFLAG_USE_LASTERROR  # type: ignore[attr-defined]
CFuncPtr: Any = ctypes._CFuncPtr  # type: ignore[attr-defined]

#: The functions a provider calls to report back, which must not swap.
PROVIDER_SIDE = {"WSASetLastError", "WSAGetLastError"}


def fake_winfunctype(restype: Any, *argtypes: Any, use_last_error: bool = False) -> Any:
    """ctypes.WINFUNCTYPE as on Windows: stdcall (no CDECL bit), optional swap."""

    class WinFunction(CFuncPtr):  # type: ignore[misc]
        _argtypes_ = argtypes
        _restype_ = restype
        _flags_ = FUNCFLAG_USE_LASTERROR if use_last_error else 0

    return WinFunction


class FakeWinDLL(ctypes.CDLL):
    """ctypes.WinDLL as on Windows: its own functions are stdcall."""

    loaded: ClassVar[list[tuple[str, dict[str, Any]]]] = []

    class _FuncPtr(CFuncPtr):  # type: ignore[misc]
        _flags_ = 0
        _restype_ = ctypes.c_int

    def __init__(self, name: str, **kwargs: Any) -> None:
        FakeWinDLL.loaded.append((name, kwargs))
        # "ws2_32" is the native host here: same exports, same signatures
        super().__init__(str(native.library_path()) if name == "ws2_32" else name)


@pytest.fixture
def windows(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Pretend to be Windows; returns the values get_last_error will give."""
    found = native.library_path()  # found as here; then "loaded as on Windows"
    monkeypatch.setattr(native, "library_path", lambda: found)
    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.setattr(ctypes, "WINFUNCTYPE", fake_winfunctype, raising=False)
    monkeypatch.setattr(ctypes, "WinDLL", FakeWinDLL, raising=False)
    codes: list[int] = []
    monkeypatch.setattr(ctypes, "get_last_error", lambda: codes.pop(0), raising=False)
    monkeypatch.setattr(native, "_loaded", None)  # load again, as on Windows
    FakeWinDLL.loaded.clear()
    return codes


def flags(fn: Any) -> int:
    value: int = type(fn)._flags_
    return value


WSAAPI_ATTRIBUTES = sorted(HOST_FUNCTIONS)


def test_native_host_dll_is_loaded_as_windll_on_windows(windows: list[int]) -> None:
    library = native.load_library()
    assert isinstance(library, FakeWinDLL)
    assert FakeWinDLL.loaded and FakeWinDLL.loaded[0][0] == str(native.library_path())


@pytest.mark.parametrize("loader", ["native host", "ws2_32"])
def test_every_wsaapi_function_is_stdcall_whatever_the_library_object(
    windows: list[int], loader: str
) -> None:
    winsock = load_native_host() if loader == "native host" else load_ws2_32()
    for name in WSAAPI_ATTRIBUTES:
        fn = getattr(winsock, name)
        assert flags(fn) & FUNCFLAG_CDECL == 0, f"{name} is bound cdecl"
        # the plain export name, as ws2_32.dll has it
        assert fn.__name__ == name
        plain = ctypes.CDLL(str(native.library_path()))[name]
        assert ctypes.cast(fn, ctypes.c_void_p).value == ctypes.cast(plain, ctypes.c_void_p).value


def test_a_cdll_object_still_gets_stdcall_wsaapi_functions(windows: list[int]) -> None:
    winsock = Winsock(ctypes.CDLL(str(native.library_path())), native_host=True)
    assert all(flags(getattr(winsock, n)) & FUNCFLAG_CDECL == 0 for n in WSAAPI_ATTRIBUTES)
    # ... and the nspv2_* client functions stay cdecl, as nspv2_host.h declares them
    assert winsock.native is not None
    assert flags(winsock.native.nspv2_session_open) & FUNCFLAG_CDECL


@pytest.mark.parametrize("loader", ["native host", "ws2_32"])
def test_provider_side_last_error_functions_do_not_swap(windows: list[int], loader: str) -> None:
    winsock = load_native_host() if loader == "native host" else load_ws2_32()
    for name in WSAAPI_ATTRIBUTES:
        swapped = bool(flags(getattr(winsock, name)) & FUNCFLAG_USE_LASTERROR)
        assert swapped is (name not in PROVIDER_SIDE), name
    channel = winsock.channel()
    assert channel._set is winsock.WSASetLastError
    assert channel._get is winsock.WSAGetLastError


def test_failures_are_read_from_ctypes_copy_on_windows(windows: list[int]) -> None:
    winsock = load_ws2_32()
    windows.append(10050)  # what ctypes saved after the failed call
    with pytest.raises(WinsockError) as failed:
        winsock.check(SOCKET_ERROR, "WSAAdvertiseProvider")
    assert failed.value.code == 10050


def test_the_faked_stdcall_binding_really_calls_the_native_host(windows: list[int]) -> None:
    """The stdcall-flagged functions work (same ABI on x86-64): the fake
    platform proves flags, not a different binding."""
    winsock = Winsock(ctypes.CDLL(str(native.library_path())), native_host=True)
    winsock.WSASetLastError(10093)
    assert winsock.WSAGetLastError() == 10093
    winsock.WSASetLastError(0)


def test_x86_host_dll_exports_every_name_the_binding_looks_up(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """The binding looks symbols up by their plain names (as ws2_32.dll
    exports them): the x86 host DLL, where stdcall decorates, must export
    each one undecorated."""
    import re
    import shutil
    import subprocess
    from pathlib import Path

    from nspv2.host.winsock import _NATIVE_COMPAT, _NATIVE_SERVER, _NATIVE_SIGNATURES

    compiler, objdump = "i686-w64-mingw32-gcc", "i686-w64-mingw32-objdump"
    native_stub = Path(__file__).resolve().parent.parent / "native_stub"
    if not all(shutil.which(tool) for tool in ("make", compiler, objdump)):
        pytest.skip(f"needs make, {compiler} and {objdump} (Debian: gcc-mingw-w64-i686)")
    if not (native_stub / "Makefile").is_file():
        pytest.skip(f"no native_stub sources beside the tests ({native_stub})")
    build = tmp_path_factory.mktemp("x86")
    dll = build / "nspv2host-x86.dll"
    made = subprocess.run(
        ["make", "-C", str(native_stub), str(dll), f"BUILD={build}"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert made.returncode == 0, made.stdout + made.stderr
    table = subprocess.run(
        [objdump, "-p", str(dll)], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    exported = set(re.findall(r"^\s*\[\s*\d+\]\s+(\S+)$", table, re.MULTILINE))
    wanted = set(HOST_FUNCTIONS) | set(_NATIVE_SIGNATURES) | {"nspv2_host_retired_tables"}
    wanted -= _NATIVE_COMPAT  # ws2_32.dll / kernel32.dll have them on Windows
    wanted -= _NATIVE_SERVER  # serving client processes is POSIX only
    assert wanted <= exported, sorted(wanted - exported)
    assert not _NATIVE_COMPAT & exported, sorted(_NATIVE_COMPAT & exported)
    assert not _NATIVE_SERVER & exported, sorted(_NATIVE_SERVER & exported)
