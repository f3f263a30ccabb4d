"""nspv2's pytest plugin (registered through the ``pytest11`` entry point).

Fixtures for the two ways people test providers:

``nspv2_catalog``
    a namespace catalog of the test's own (a file in a temporary folder,
    named by NSPV2_CATALOG for the test's process and the processes it
    starts), as a :class:`nspv2.host.catalog.Catalog`: nothing a test
    installs reaches the user's catalog. The fixtures below use it.
``nspv2_host``
    nspv2's native host, open for the test and closed after it (sessions
    closed, providers unadvertised). It is ``Host(auto_install=True)`` on
    ``nspv2_catalog``: what it advertises it installs there first.
``nspv2_advertise``
    ``nspv2_advertise(provider)`` advertises a Provider on ``nspv2_host`` and
    returns it, typed as what was passed: annotate the parameter with
    :class:`Advertise` and ``nspv2_advertise(Presence())`` is a ``Presence``
    to mypy.
``nspv2_client``
    a fresh client session on ``nspv2_host`` (``.lookup``, ``.set_service``,
    ``.close()``, ``.abandon()``).
``nspv2_harness``
    ``nspv2_harness(provider)`` returns a :class:`nspv2.testing.SlotHarness`:
    call one entry point in isolation through its C function pointer
    (annotate with :class:`MakeHarness`). It also takes a native table (a
    :class:`nspv2.host.NativeTable`, or an ``NSPV2_ROUTINE`` filled by C
    with ``provider_id=``).
``nspv2_native``
    ``nspv2_native(path, entry="main", args=[...])`` loads a native provider
    library (:meth:`nspv2.host.NativeProvider.load`) and returns it; it is
    closed after the test (console close event, then whatever it left
    advertised is unadvertised). Annotate with :class:`LoadNative`.
``nspv2_served``
    ``nspv2_served("mymodule:MyProvider", "--threads", "2")`` (or a Provider
    class, or ``"--native", "lib.so"``) starts ``nspv2 serve`` as a real
    provider process in a private runtime folder, after installing a
    Python provider in ``nspv2_catalog``, and returns a
    :class:`nspv2.testing.served.Served` once it listens (``.socket``,
    ``.pid``, ``.client()``, ``.log()``, ``.wait_log(pattern)``,
    ``.stop()``); it is stopped (SIGTERM, then SIGKILL) after the test.
    Annotate with :class:`Serve`. docs/serve.md.
``nspv2_no_unraisable``
    fails the test if any exception reached ``sys.unraisablehook`` (what
    ctypes does with an exception escaping a callback).

See ``docs/tutorial.md`` for a complete test file. Typed parameters::

    from nspv2.testing.pytest_plugin import Advertise

    def test_sign_in(nspv2_advertise: Advertise, nspv2_client: ClientSession) -> None:
        presence = nspv2_advertise(Presence())  # a Presence, not just a Provider
"""

from __future__ import annotations

import contextlib
import os
import sys
import uuid
from collections.abc import Iterable, Iterator
from typing import Any, Protocol, TypeVar

import pytest

from ..host.catalog import Catalog
from ..host.host import ClientSession, Host
from ..host.native_provider import NativeProvider, NativeTable
from ..provider.base import Provider
from ..sdk.ws2spi import NSPV2_ROUTINE
from .harness import SlotHarness
from .served import Served, serving

__all__ = [
    "Advertise",
    "LoadNative",
    "MakeHarness",
    "Serve",
    "nspv2_advertise",
    "nspv2_catalog",
    "nspv2_client",
    "nspv2_harness",
    "nspv2_host",
    "nspv2_native",
    "nspv2_no_unraisable",
    "nspv2_served",
]


_P = TypeVar("_P", bound=Provider)


class Advertise(Protocol):
    """The ``nspv2_advertise`` fixture: advertises ``provider`` and returns it,
    with the type it was given."""

    def __call__(self, provider: _P, /) -> _P: ...


class MakeHarness(Protocol):
    """The ``nspv2_harness`` fixture: a SlotHarness for ``provider``, closed
    (with a Python provider) after the test."""

    def __call__(
        self,
        provider: Provider | NativeTable | NSPV2_ROUTINE,
        /,
        *,
        provider_id: uuid.UUID | None = None,
    ) -> SlotHarness: ...


class LoadNative(Protocol):
    """The ``nspv2_native`` fixture: NativeProvider.load, closed after the test."""

    def __call__(
        self,
        path: str | os.PathLike[str],
        entry: str = "main",
        args: Iterable[str] = (),
        *,
        timeout: float = 10.0,
        expect: int = 1,
    ) -> NativeProvider: ...


@pytest.fixture
def nspv2_catalog(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Catalog]:
    """A namespace catalog for one test: NSPV2_CATALOG names a file in a
    fresh temporary folder (inherited by the processes the test starts).
    Set apart from the test's ``monkeypatch``: its ``undo()`` leaves it."""
    path = tmp_path_factory.mktemp("nspv2-catalog") / "catalog"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("NSPV2_CATALOG", str(path))
        yield Catalog()


@pytest.fixture
def nspv2_host(nspv2_catalog: Catalog) -> Iterator[Host]:
    """The native NSPv2 host, for one test; it installs what it advertises
    in ``nspv2_catalog`` (auto_install) and uninstalls it after."""
    with Host(auto_install=True) as host:
        yield host


@pytest.fixture
def nspv2_advertise(nspv2_host: Host) -> Advertise:
    """Advertise a provider on ``nspv2_host``; it is unadvertised after the test."""

    def advertise(provider: _P, /) -> _P:
        nspv2_host.advertise(provider)
        return provider

    return advertise


@pytest.fixture
def nspv2_client(nspv2_host: Host) -> Iterator[ClientSession]:
    """A client session on ``nspv2_host`` (closed after the test if still open)."""
    session = nspv2_host.open_session()
    yield session
    session.close()


@pytest.fixture
def nspv2_harness() -> Iterator[MakeHarness]:
    """Make isolated-call harnesses: ``h = nspv2_harness(MyProvider())``,
    ``nspv2_harness(native_provider.tables[0])``."""
    made: list[SlotHarness] = []

    def make(
        provider: Provider | NativeTable | NSPV2_ROUTINE,
        /,
        *,
        provider_id: uuid.UUID | None = None,
    ) -> SlotHarness:
        harness = SlotHarness(provider, provider_id=provider_id)
        made.append(harness)
        return harness

    yield make
    for harness in made:
        harness.close()
        if harness.provider is not None:
            harness.provider.close()


@pytest.fixture
def nspv2_native() -> Iterator[LoadNative]:
    """Load native providers for one test: ``nspv2_native("build/provider.so")``."""
    loaded: list[NativeProvider] = []

    def load(
        path: str | os.PathLike[str],
        entry: str = "main",
        args: Iterable[str] = (),
        *,
        timeout: float = 10.0,
        expect: int = 1,
    ) -> NativeProvider:
        provider = NativeProvider.load(path, entry, args, timeout=timeout, expect=expect)
        loaded.append(provider)
        return provider

    yield load
    for provider in reversed(loaded):
        provider.close()


class Serve(Protocol):
    """The ``nspv2_served`` fixture: ``nspv2 serve SPEC ARGS...`` as a process,
    stopped after the test."""

    def __call__(
        self,
        spec: str | type[Provider],
        /,
        *args: str,
        timeout: float = 20.0,
        env: dict[str, str] | None = None,
    ) -> Served: ...


def _spec_of(provider: str | type[Provider]) -> str:
    """A Provider class as serve names it: its file and class name (a test
    module need not be importable by name in the server's process)."""
    if isinstance(provider, str):
        return provider
    import inspect

    return f"{inspect.getfile(provider)}:{provider.__name__}"


@pytest.fixture
def nspv2_served(nspv2_catalog: Catalog) -> Iterator[Serve]:
    """Serve providers from real processes for one test:
    ``served = nspv2_served(MyProvider)``; ``with served.client() as c: ...``.
    A Python provider is installed in ``nspv2_catalog`` first."""
    with contextlib.ExitStack() as started:

        def serve(
            spec: str | type[Provider],
            /,
            *args: str,
            timeout: float = 20.0,
            env: dict[str, str] | None = None,
        ) -> Served:
            return started.enter_context(serving(_spec_of(spec), *args, timeout=timeout, env=env))

        yield serve


@pytest.fixture
def nspv2_no_unraisable() -> Iterator[list[Any]]:
    """Fail the test if an exception reached sys.unraisablehook."""
    seen: list[Any] = []
    previous = sys.unraisablehook
    sys.unraisablehook = seen.append
    try:
        yield seen
    finally:
        sys.unraisablehook = previous
    if seen:
        pytest.fail(f"an exception reached sys.unraisablehook: {seen[0].exc_value!r}")
