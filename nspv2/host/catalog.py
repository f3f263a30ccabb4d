"""The namespace catalog: which providers are installed, enabled, and how.

On Windows a namespace provider is first installed in ws2_32's catalog
(``WSCInstallNameSpaceEx``; for NS_EMAIL with a
``NAPI_PROVIDER_INSTALLATION_BLOB`` naming its domains), may be disabled and
enabled again (``WSCEnableNSProvider``), is listed by
``WSAEnumNameSpaceProvidersExW``, and only then advertises. nspv2's native
host keeps a per-user catalog with the same calls (a file, docs/catalog.md;
or the process's memory, :data:`MEMORY`).

:class:`Catalog` is that catalog through those Winsock functions, on the
platform's library (ws2_32.dll on Windows, the native host elsewhere) or a
:class:`~nspv2.host.winsock.Winsock` given::

    from nspv2.host.catalog import Catalog
    from nspv2.examples.email import EmailDirectory

    catalog = Catalog()
    catalog.install(EmailDirectory.provider_id, EmailDirectory.namespace,
                    EmailDirectory.name, EmailDirectory.install_blob)
    for entry in catalog.entries():
        print(entry.identifier, entry.provider_id, entry.active)

Failures raise :class:`~nspv2.provider.errors.WinsockError` with the
Winsock code (WSANO_RECOVERY: already installed, or a corrupt catalog file;
WSAEINVAL: not installed, or a blob that breaks the rules) and, on the
native host, the C side's explanation (``nspv2_catalog_error_text``). On
Windows, changing the catalog needs an elevated process: WSAEACCES or
ERROR_ACCESS_DENIED come with a message saying so.
"""

from __future__ import annotations

import ctypes
import os
import sys
import uuid
from dataclasses import dataclass
from typing import Any

from ..provider.errors import WinsockError
from ..sdk.guiddef import GUID
from ..sdk.nsemail import InstallationBlob, installation_blob_problems
from ..sdk.winsock2 import BLOB, NS, SOCKET_ERROR, WSANAMESPACE_INFOEXW, WSAError
from ..sdk.wintypes import LPWSTR, wstr
from .winsock import CatalogFunctions, Winsock

__all__ = [
    "ERROR_ACCESS_DENIED",
    "MEMORY",
    "Catalog",
    "CatalogEntry",
    "blob_check",
    "use_catalog",
]

#: The location of a catalog private to the process (NSPV2_CATALOG=":memory:").
MEMORY = ":memory:"
#: winerror.h: what the WSC* functions of a process that is not elevated can fail with.
ERROR_ACCESS_DENIED = 5
_EFAULT = int(WSAError.WSAEFAULT)
_U32_MAX = 0xFFFFFFFF
_EACCES = int(WSAError.WSAEACCES)
#: The first buffer WSAEnumNameSpaceProvidersExW gets (grown on WSAEFAULT).
_FIRST_BUFFER = 256
#: How often the buffer is grown before giving up (the catalog may change
#: between two calls, each time needing more).
_MAX_GROWS = 16
#: Longest identifier read back, in UTF-16 code units (the native host
#: allows 1024; Windows names are far shorter).
_MAX_IDENTIFIER = 32767
_ELEVATE = (
    "run from an elevated prompt (as administrator): changing Windows' namespace catalog needs it"
)


def _pointer_bits() -> int:
    """This Python's pointer size in bits (64 on a 64-bit Windows Python)."""
    return 8 * ctypes.sizeof(ctypes.c_void_p)


def _check_wow64_bits() -> None:
    """ValueError unless this Python is 64-bit (what ``wow64`` needs)."""
    if _pointer_bits() != 64:
        raise ValueError(
            "--wow64 works on the 32-bit catalog from a 64-bit Python; this Python is "
            "32-bit, so its calls already reach the 32-bit catalog (drop --wow64)"
        )


def _native_host() -> Winsock:
    from .winsock import load_native_host

    return load_native_host()


def use_catalog(location: str | os.PathLike[str] | None) -> None:
    """Choose this process's catalog on the native host
    (``nspv2_catalog_set_path``): a file path, :data:`MEMORY`, or None for the
    default resolution (NSPV2_CATALOG, then the user's config folder; made
    again at every operation). WinsockError (WSAEINVAL) for a path too long."""
    winsock = _native_host()
    assert winsock.native is not None
    path = None if location is None else os.fsencode(location)
    if winsock.native.nspv2_catalog_set_path(path) == SOCKET_ERROR:
        raise WinsockError(winsock.last_error(), f"nspv2_catalog_set_path({location!r})")


@dataclass(frozen=True)
class CatalogEntry:
    """One WSANAMESPACE_INFOEXW entry of the catalog."""

    provider_id: uuid.UUID
    namespace: int
    #: fActive: enabled (WSCEnableNSProvider)
    active: bool
    version: int
    #: lpszIdentifier, the provider's display name ("" when none)
    identifier: str
    #: ProviderSpecific's bytes (None: installed without a blob)
    blob: bytes | None

    @property
    def install_blob(self) -> InstallationBlob | None:
        """The NS_EMAIL installation blob as values; None when there is no
        blob, the namespace is not NS_EMAIL, or the blob breaks nsemail.h's
        rules (:attr:`blob_problems` names them)."""
        if self.blob is None or self.namespace != NS.NS_EMAIL or self.blob_problems:
            return None
        return InstallationBlob.parse(self.blob)

    @property
    def blob_problems(self) -> list[str]:
        """Every rule of nsemail.h the blob of an NS_EMAIL entry breaks."""
        if self.blob is None or self.namespace != NS.NS_EMAIL:
            return []
        return installation_blob_problems(self.blob)

    @property
    def namespace_name(self) -> str:
        """``NS_EMAIL``, or the number when it has no name."""
        try:
            return NS(self.namespace).name
        except ValueError:
            return str(self.namespace)


def _guid(provider_id: uuid.UUID | str) -> GUID:
    return GUID.from_uuid(
        provider_id if isinstance(provider_id, uuid.UUID) else uuid.UUID(provider_id)
    )


class Catalog:
    """The namespace catalog of the platform (or of ``winsock``'s library).

    With ``winsock`` None: ws2_32.dll on Windows, nspv2's native host
    elsewhere. ``wow64=True`` works on Windows' 32-bit catalog through the
    ``*32`` functions of 64-bit ws2_32.dll; it needs a 64-bit Python on
    Windows (ValueError otherwise: a 32-bit process's calls already reach
    that catalog, and the native host has one catalog).
    """

    def __init__(self, winsock: Winsock | None = None, *, wow64: bool = False) -> None:
        if winsock is None:
            if sys.platform == "win32":
                if wow64:
                    # before binding: a 32-bit ws2_32.dll has no *32 functions
                    # (OSError), which would hide what to do instead
                    _check_wow64_bits()
                windll = getattr(ctypes, "WinDLL")  # noqa: B009 - absent from typeshed off Windows
                functions = CatalogFunctions(windll("ws2_32"), native_host=False, wow64=wow64)
                self._setup(functions, None, wow64)
                return
            winsock = _native_host()
        if wow64 and winsock.native_host:
            raise ValueError(
                "--wow64 (the 32-bit catalog) is Windows' ws2_32.dll only: the native host "
                "has one catalog"
            )
        self._setup(winsock.catalog_functions(wow64), winsock, wow64)

    @classmethod
    def from_functions(cls, functions: CatalogFunctions) -> Catalog:
        """A catalog over functions already bound (on a library object of
        any kind; tests give a double of ws2_32.dll)."""
        self = cls.__new__(cls)
        self._setup(functions, None, functions.wow64)
        return self

    def _setup(self, functions: CatalogFunctions, winsock: Winsock | None, wow64: bool) -> None:
        if wow64:
            if functions.native_host:
                raise ValueError("the native host has one catalog: no 32-bit (WOW64) one")
            _check_wow64_bits()
        self.functions = functions
        self.winsock = winsock
        self.wow64 = wow64

    # -- where --------------------------------------------------------------------------

    @property
    def location(self) -> str:
        """The catalog file's path, :data:`MEMORY`, or which Windows catalog."""
        f = self.functions
        if not f.native_host:
            bits = "32-bit (WOW64)" if self.wow64 else f"{_pointer_bits()}-bit"
            return f"Windows' {bits} namespace catalog (ws2_32.dll)"
        native = self._native()
        size = ctypes.c_uint32(0)
        for _ in range(_MAX_GROWS):
            room = size.value
            buf = ctypes.create_string_buffer(max(room, 1))
            if (
                native.nspv2_catalog_location(buf if room else None, ctypes.byref(size))
                != SOCKET_ERROR
            ):
                return os.fsdecode(buf.value)
            code = f.last_error()
            if code != _EFAULT or size.value <= room:
                raise WinsockError(code, "nspv2_catalog_location")
        raise WinsockError(_EFAULT, "nspv2_catalog_location: the location kept growing")

    def _native(self) -> Any:
        winsock = self.winsock
        if winsock is None or winsock.native is None:
            raise ValueError("not the native host")
        return winsock.native

    # -- failures -----------------------------------------------------------------------

    def _error(self, what: str) -> WinsockError:
        f = self.functions
        code = f.last_error()
        if not f.native_host:
            if code in (_EACCES, ERROR_ACCESS_DENIED):
                return WinsockError(code, f"{what}: {_ELEVATE}")
            return WinsockError(code, what)
        text = b""
        try:
            raw = self._native().nspv2_catalog_error_text()
            text = raw or b""
        except Exception:  # a host library without it: the code alone
            text = b""
        why = text.decode("utf-8", "replace")
        return WinsockError(code, f"{what}: {why}" if why else what)

    def _call(self, what: str, function: Any, *args: Any) -> int:
        rc = int(function(*args))
        if rc == SOCKET_ERROR:
            raise self._error(what)
        return rc

    # -- changes ------------------------------------------------------------------------

    def install(
        self,
        provider_id: uuid.UUID | str,
        namespace: int,
        identifier: str | None,
        blob: bytes | None = None,
        version: int = 1,
    ) -> None:
        """WSCInstallNameSpaceEx (``...32`` with wow64): appended, enabled.
        ``identifier`` is the display name (None: NULL); ``blob`` the
        ProviderSpecific bytes (None: no blob). WSANO_RECOVERY when already
        installed. ValueError for a namespace or version outside 0..2**32-1
        and for a NUL in ``identifier`` (C would read it cut there)."""
        for label, value in (("namespace", namespace), ("version", version)):
            if not 0 <= int(value) <= _U32_MAX:
                raise ValueError(f"{label} {value} is outside 0..{_U32_MAX} (a DWORD)")
        if identifier is not None and "\0" in identifier:
            raise ValueError(f"identifier {identifier!r} contains a NUL character")
        guid = _guid(provider_id)
        name = None if identifier is None else wstr(identifier)
        path = wstr("")  # lpszPathName: NSPv2 providers are not DLLs ws2_32 loads
        spec = None
        data = None
        if blob is not None:
            data = (ctypes.c_uint8 * max(len(blob), 1)).from_buffer_copy(bytes(blob) + b"\0")
            spec = BLOB(len(blob), ctypes.cast(data, ctypes.POINTER(ctypes.c_uint8)))
        self._call(
            self.functions.names["WSCInstallNameSpaceEx"],
            self.functions.WSCInstallNameSpaceEx,
            None if name is None else ctypes.cast(name, LPWSTR),
            ctypes.cast(path, LPWSTR),
            int(namespace),
            int(version),
            ctypes.byref(guid),
            None if spec is None else ctypes.byref(spec),
        )

    def uninstall(self, provider_id: uuid.UUID | str) -> None:
        """WSCUnInstallNameSpace: WSAEINVAL when not installed."""
        guid = _guid(provider_id)
        f = self.functions
        self._call(f.names["WSCUnInstallNameSpace"], f.WSCUnInstallNameSpace, ctypes.byref(guid))

    def enable(self, provider_id: uuid.UUID | str, enabled: bool = True) -> None:
        """WSCEnableNSProvider: a disabled provider is listed but never
        routed to. WSAEINVAL when not installed."""
        guid = _guid(provider_id)
        f = self.functions
        self._call(
            f.names["WSCEnableNSProvider"],
            f.WSCEnableNSProvider,
            ctypes.byref(guid),
            int(bool(enabled)),
        )

    # -- reading ------------------------------------------------------------------------

    def _startup(self) -> None:
        if self.functions.startup is not None:
            data = (ctypes.c_uint8 * 512)()  # WSADATA, larger than any layout of it
            code = int(self.functions.startup(0x0202, data))
            if code != 0:
                raise WinsockError(code, "WSAStartup")

    def _cleanup(self) -> None:
        if self.functions.cleanup is not None:
            self.functions.cleanup()

    def entries(self) -> list[CatalogEntry]:
        """Every installed provider, in catalog order
        (WSAEnumNameSpaceProvidersExW; the buffer grown on WSAEFAULT)."""
        f = self.functions
        what = f.names["WSAEnumNameSpaceProvidersExW"]
        self._startup()
        try:
            length = ctypes.c_uint32(_FIRST_BUFFER)
            for _ in range(_MAX_GROWS):
                room = length.value
                buf = (ctypes.c_uint8 * max(room, 1))()
                rc = int(
                    f.WSAEnumNameSpaceProvidersExW(
                        ctypes.byref(length), ctypes.cast(buf, ctypes.POINTER(WSANAMESPACE_INFOEXW))
                    )
                )
                if rc != SOCKET_ERROR:
                    return _read_entries(buf, rc)
                error = self._error(what)
                if error.code != _EFAULT or length.value <= room:
                    raise error
            raise WinsockError(_EFAULT, f"{what}: the catalog kept growing")
        finally:
            self._cleanup()

    def find(self, provider_id: uuid.UUID | str) -> CatalogEntry | None:
        """The entry of ``provider_id``, or None when it is not installed."""
        wanted = provider_id if isinstance(provider_id, uuid.UUID) else uuid.UUID(provider_id)
        return next((e for e in self.entries() if e.provider_id == wanted), None)

    def __repr__(self) -> str:
        return f"<Catalog {self.location}>"


def _read_wstr(pointer: Any) -> str:
    """A NUL-terminated UTF-16 string through ``pointer`` (bounded)."""
    address = ctypes.cast(pointer, ctypes.c_void_p).value
    if not address:
        return ""
    units = ctypes.cast(address, ctypes.POINTER(ctypes.c_uint16))
    n = 0
    while n < _MAX_IDENTIFIER and units[n] != 0:
        n += 1
    return ctypes.string_at(address, 2 * n).decode("utf-16-le", "surrogatepass")


def _read_entries(buf: Any, count: int) -> list[CatalogEntry]:
    """``count`` WSANAMESPACE_INFOEXW at the head of ``buf``, their strings
    and blobs read through the pointers they hold."""
    if count < 0 or count * ctypes.sizeof(WSANAMESPACE_INFOEXW) > ctypes.sizeof(buf):
        raise WinsockError(
            _EFAULT, f"{count} entries do not fit the {ctypes.sizeof(buf)}-byte buffer"
        )
    infos = ctypes.cast(buf, ctypes.POINTER(WSANAMESPACE_INFOEXW))
    out = []
    for i in range(count):
        info = infos[i]
        blob: bytes | None = None
        data = ctypes.cast(info.ProviderSpecific.pBlobData, ctypes.c_void_p).value
        if data:  # NULL pBlobData: installed without a blob
            blob = ctypes.string_at(data, int(info.ProviderSpecific.cbSize))
        out.append(
            CatalogEntry(
                provider_id=info.NSProviderId.to_uuid(),
                namespace=int(info.dwNameSpace),
                active=bool(info.fActive),
                version=int(info.dwVersion),
                identifier=_read_wstr(info.lpszIdentifier),
                blob=blob,
            )
        )
    return out


def blob_check(blob: bytes, winsock: Winsock | None = None) -> str | None:
    """The native host's NS_EMAIL installation blob check
    (``nspv2_email_blob_check``): None when valid, else the first rule
    broken, as the C side words it."""
    winsock = winsock or _native_host()
    assert winsock.native is not None
    why = ctypes.create_string_buffer(512)
    data = (ctypes.c_uint8 * max(len(blob), 1)).from_buffer_copy(bytes(blob) + b"\0")
    rc = winsock.native.nspv2_email_blob_check(data, len(blob), why, len(why))
    if rc == 0:
        return None
    return why.value.decode("utf-8", "replace") or f"error {rc}"
