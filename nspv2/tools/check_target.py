"""What ``nspv2 check`` runs its rules against: a :class:`CheckTarget`.

Every rule is a function ``rule(t: CheckTarget, at: Step) -> Rule``; it gets
a freshly loaded provider and sees it only through this protocol, so the
same rule checks a Python :class:`~nspv2.provider.Provider` and a C provider
library:

- :class:`PythonTarget`: a ``module:Class`` provider, a fresh instance
  advertised on the native host;
- :class:`NativeTarget`: a C shared library loaded with
  :meth:`NativeProvider.load <nspv2.host.native_provider.NativeProvider.load>`:
  its entry point ran and advertised its table on the host itself.

:class:`TargetSpec` is how a target is named (on the command line, and to the
child process each rule runs in): it can be turned into JSON and back, and
:meth:`TargetSpec.load` loads a fresh target from it.
"""

from __future__ import annotations

import ctypes
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ..host.host import Host
from ..provider.base import Provider
from ..provider.errors import WinsockError
from ..sdk.guiddef import GUID
from ..sdk.winsock2 import SOCKET_ERROR, WSAError
from ..testing.harness import SlotHarness

if TYPE_CHECKING:
    from ..host.native_provider import NativeProvider, NativeTable

__all__ = [
    "CheckTarget",
    "NativeTarget",
    "PythonTarget",
    "TargetSpec",
    "exported_names",
    "split_native",
]

#: The hooks a Python provider overrides, by the slot they fill.
_PYTHON_HOOKS = {
    "NSPv2Startup": "startup",
    "NSPv2Cleanup": "cleanup",
    "NSPv2ClientSessionRundown": "client_session_rundown",
    "NSPv2SetServiceEx": "set_service",
}
_REQUIRED = ("NSPv2LookupServiceBegin", "NSPv2LookupServiceNextEx", "NSPv2LookupServiceEnd")
#: A bound on the names read from a library's exported list (a missing NULL).
_MAX_EXPORTED = 100_000
#: The symbols a native provider exports to say what check looks up / registers.
QUERIES_SYMBOL = "nspv2_check_queries"
REGISTRATIONS_SYMBOL = "nspv2_check_registrations"


class CheckTarget(Protocol):
    """A provider as every rule sees it (Python or native alike)."""

    #: "pkg.mod:Class" or "native path/lib.so:main".
    label: str
    provider_id: uuid.UUID
    namespace: int
    #: Names to look up (class attribute / --query / exported symbol).
    queries: list[str]
    #: Names to register first (class attribute / --register / exported symbol).
    registrations: list[str]
    #: The Python provider instance (None for a native one).
    python: Provider | None
    #: The install blob the provider installed (or declares), if any.
    blob: bytes | None
    #: It installed itself (WSCInstallNameSpaceEx) or declares a blob.
    installed: bool

    def harness(self) -> SlotHarness:
        """Isolated calls through the C function pointers (close it after use)."""
        ...

    def host(self) -> Host:
        """The native host it is advertised on (one per process)."""
        ...

    def implements(self, slot: str) -> bool:
        """``slot`` ("NSPv2SetServiceEx" ...) is non-NULL (native) or
        overridden (Python)."""
        ...


def split_native(text: str) -> tuple[str, str]:
    """``LIB[:ENTRY]`` -> (library path, entry); the entry defaults to ``main``.

    A path that exists as given keeps any ``:`` in it.
    """
    if Path(text).exists():
        return text, "main"
    path, sep, entry = text.rpartition(":")
    if sep and path and entry.isidentifier():
        return path, entry
    return text, "main"


@dataclass(frozen=True)
class TargetSpec:
    """A provider to check, by name: ``module:Class`` or a native library."""

    #: MODULE:CLASS / file.py[:CLASS], or LIB[:ENTRY] when ``native``.
    provider: str
    native: bool = False
    #: The entry point's argv[1:] (native only).
    args: tuple[str, ...] = ()
    queries: tuple[str, ...] = ()
    registrations: tuple[str, ...] = ()
    #: How long the host waits for a provider to complete an async call.
    timeout_ms: int = 2000
    #: How long a native library's entry point gets to advertise.
    load_timeout: float = 10.0

    @property
    def label(self) -> str:
        if not self.native:
            return self.provider
        path, entry = split_native(self.provider)
        return f"native {path}:{entry}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "native": self.native,
            "args": list(self.args),
            "queries": list(self.queries),
            "registrations": list(self.registrations),
            "timeout_ms": self.timeout_ms,
            "load_timeout": self.load_timeout,
        }

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> TargetSpec:
        return cls(
            str(doc["provider"]),
            bool(doc["native"]),
            tuple(str(a) for a in doc["args"]),
            tuple(str(q) for q in doc["queries"]),
            tuple(str(r) for r in doc["registrations"]),
            int(doc["timeout_ms"]),
            float(doc["load_timeout"]),
        )

    def load(self) -> PythonTarget | NativeTarget:
        """A freshly loaded target (raises CheckError when it cannot be loaded)."""
        if self.native:
            path, entry = split_native(self.provider)
            return NativeTarget.load(
                path,
                entry,
                self.args,
                queries=self.queries,
                registrations=self.registrations,
                timeout_ms=self.timeout_ms,
                load_timeout=self.load_timeout,
                label=self.label,
            )
        from .check import load_provider_class

        cls = load_provider_class(self.provider)
        return PythonTarget(
            cls,
            queries=self.queries,
            registrations=self.registrations,
            timeout_ms=self.timeout_ms,
            label=self.provider,
        )


def _blob_of(cls: type[Provider]) -> bytes | None:
    """The blob a Python provider is installed with (``install_blob``), if any."""
    declared = getattr(cls, "install_blob", None)
    return None if declared is None else bytes(declared)


class PythonTarget:
    """A fresh instance of a Provider class, advertised on the native host."""

    def __init__(
        self,
        cls: type[Provider],
        *,
        queries: Any = (),
        registrations: Any = (),
        timeout_ms: int = 2000,
        label: str = "",
    ) -> None:
        from .check import instantiate

        self.cls = cls
        self.label = label or f"{cls.__module__}:{cls.__qualname__}"
        self.provider_id = cls.provider_id
        self.namespace = int(cls.namespace)
        self.queries = list(queries) or list(getattr(cls, "check_queries", ()))
        self.registrations = list(registrations) or list(getattr(cls, "check_registrations", ()))
        self.blob = _blob_of(cls)
        self.installed = self.blob is not None
        self.timeout_ms = timeout_ms
        self.python: Provider | None = instantiate(cls)
        self._host = Host(timeout_ms=timeout_ms, auto_install=True)
        self._installed_here = False
        try:
            self._installed_here = install_for_check(cls, self.blob)
            self._host.advertise(self.python)
        except BaseException:
            self.close()
            raise

    def harness(self) -> SlotHarness:
        assert self.python is not None
        return SlotHarness(self.python)

    def host(self) -> Host:
        return self._host

    def implements(self, slot: str) -> bool:
        assert self.python is not None
        if slot in _REQUIRED:
            return True
        hook = _PYTHON_HOOKS.get(slot)
        if hook is None:
            raise ValueError(f"no slot {slot!r}")
        if hook in ("startup", "cleanup", "client_session_rundown"):
            return True  # the scaffold fills these whatever the class overrides
        return self.python.implements(hook)

    def close(self) -> None:
        try:
            self._host.close()
        finally:
            try:
                if self._installed_here:
                    self._installed_here = False
                    from ..host.catalog import Catalog

                    Catalog(self._host.winsock).uninstall(self.provider_id)
            finally:
                if self.python is not None:
                    self.python.close()


def install_for_check(cls: type[Provider], blob: bytes | None) -> bool:
    """Install ``cls`` in the catalog in effect (check's own, in memory)
    unless installed; True when installed here. A blob the catalog refuses
    (an NS_EMAIL one that breaks nsemail.h: WSAEINVAL) is left out, so that
    the other rules still exercise the provider; the blob rule reports it."""
    from ..host.catalog import Catalog

    catalog = Catalog()
    if catalog.find(cls.provider_id) is not None:
        return False
    name = getattr(cls, "name", None) or cls.__name__
    try:
        catalog.install(cls.provider_id, int(cls.namespace), name, blob)
    except WinsockError as exc:
        if exc.code != WSAError.WSAEINVAL or blob is None:
            raise
        catalog.install(cls.provider_id, int(cls.namespace), name, None)
    return True


def exported_names(library: ctypes.CDLL, symbol: str) -> list[str] | None:
    """A NULL-terminated ``const char *const symbol[]`` (UTF-8) exported by
    ``library``; None when it does not export it."""
    try:
        first = ctypes.c_void_p.in_dll(library, symbol)
    except ValueError:
        return None
    base = ctypes.addressof(first)
    names: list[str] = []
    size = ctypes.sizeof(ctypes.c_void_p)
    for i in range(_MAX_EXPORTED):
        text = ctypes.c_char_p.from_address(base + i * size).value
        if text is None:
            break
        names.append(text.decode("utf-8", errors="replace"))
    return names


class NativeTarget:
    """A C provider library loaded into this process: its entry point ran and
    advertised its table on nspv2's native host."""

    python: Provider | None = None

    def __init__(
        self,
        loaded: NativeProvider,
        table: NativeTable,
        *,
        label: str,
        queries: list[str],
        registrations: list[str],
        timeout_ms: int,
    ) -> None:
        self.loaded = loaded
        self.table = table
        self.label = label
        self.provider_id = table.provider_id
        self.namespace = int(table.namespace)
        self.queries = queries
        self.registrations = registrations
        self.blob = table.blob
        self._host = Host(timeout_ms=timeout_ms, auto_install=True)
        self.installed = self.blob is not None or self._installed()

    @classmethod
    def load(
        cls,
        path: str,
        entry: str = "main",
        args: Any = (),
        *,
        queries: Any = (),
        registrations: Any = (),
        timeout_ms: int = 2000,
        load_timeout: float = 10.0,
        label: str = "",
    ) -> NativeTarget:
        from ..host.native_provider import NativeProvider, NativeProviderError
        from .check import CheckError

        if not Path(path).is_file():
            raise CheckError(f"no such file: {path}", usage=True)
        try:
            loaded = NativeProvider.load(path, entry, list(args), timeout=load_timeout)
        except NativeProviderError as exc:
            raise CheckError(f"{path}:{entry}: {exc}", usage=False) from exc
        except OSError as exc:
            raise CheckError(f"cannot load {path}: {exc}", usage=True) from exc
        if not loaded.tables:
            loaded.close()
            raise CheckError(f"{path}:{entry} advertised no provider", usage=False)
        wanted = list(queries) or exported_names(loaded.library, QUERIES_SYMBOL) or []
        signs = list(registrations) or exported_names(loaded.library, REGISTRATIONS_SYMBOL) or []
        return cls(
            loaded,
            loaded.tables[0],
            label=label or f"native {path}:{entry}",
            queries=wanted,
            registrations=signs,
            timeout_ms=timeout_ms,
        )

    def _installed(self) -> bool:
        """The host has an install record for this id (WSCInstallNameSpaceEx)."""
        probe = getattr(self._host.native, "nspv2_host_installed", None)
        if probe is None:
            return False
        guid = GUID.from_uuid(self.provider_id)
        return bool(probe(ctypes.byref(guid), None, None, None, None) != SOCKET_ERROR)

    def harness(self) -> SlotHarness:
        return SlotHarness(self.table)

    def host(self) -> Host:
        return self._host

    def implements(self, slot: str) -> bool:
        return self.table.implements(slot)

    def close(self) -> None:
        try:
            self._host.close()
        finally:
            self.loaded.close()
