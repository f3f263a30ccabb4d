"""Small NS_EMAIL providers for the routing tests (tests/test_routing.py),
each served from its own ``nspv2 serve tests/routing_providers.py:CLASS``
process; named by file, since the ``tests`` package is not importable where
the server runs.

Every provider has a GUID of its own and an installation blob (its domains
and level). A lookup's results carry the provider's label as
``lpszComment``, so a client sees who answered. Two environment variables
of the server process steer it:

* ``ROUTING_MODE``: ``answer`` (default: one result, ``name`` with the
  label as comment), ``none`` (Begin fails with WSASERVICE_NOT_FOUND),
  ``empty`` (Begin succeeds, Next has no result), ``fail-next`` (Next fails
  with WSANO_RECOVERY);
* ``ROUTING_CALLS``: a file every call into the provider is appended to,
  one line each (``startup``, ``begin NAME``, ``next NAME``, ``set NAME
  OP``), so a test can tell that a provider was never called (the file
  does not exist).
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Iterable, Iterator
from typing import ClassVar

from nspv2.provider.base import Provider
from nspv2.provider.errors import WinsockError
from nspv2.provider.queryset import QuerySet
from nspv2.provider.registry import Session
from nspv2.sdk.nsemail import NAPI_PROVIDER_LEVEL, DomainDescription, InstallationBlob
from nspv2.sdk.winsock2 import WSAESETSERVICEOP, WSAError

_lock = threading.Lock()

PRIMARY, SECONDARY = (
    NAPI_PROVIDER_LEVEL.ProviderLevel_Primary,
    NAPI_PROVIDER_LEVEL.ProviderLevel_Secondary,
)
#: The namespace of OtherSpace (NS_DNS): routed for NS_ALL queries only.
NS_DNS = 12


def _call(line: str) -> None:
    path = os.environ.get("ROUTING_CALLS")
    if path:
        with _lock, open(path, "a", encoding="utf-8") as out:
            out.write(line + "\n")


class Routed(Provider):
    """The behaviour every routing test provider shares."""

    label: ClassVar[str] = "routed"

    def startup(self, session: Session) -> None:
        _call("startup")

    def lookup(self, session: Session, restrictions: QuerySet, flags: int) -> Iterable[QuerySet]:
        name = restrictions.service_instance_name or ""
        _call(f"begin {name}")
        mode = os.environ.get("ROUTING_MODE", "answer")
        if mode == "none":
            raise WinsockError(WSAError.WSASERVICE_NOT_FOUND, f"{self.label} does not know {name}")
        return self._results(name, mode)

    def _results(self, name: str, mode: str) -> Iterator[QuerySet]:
        _call(f"next {name}")
        if mode == "fail-next":
            raise WinsockError(WSAError.WSANO_RECOVERY, f"{self.label} failed")
        if mode == "answer":
            yield QuerySet(name, comment=self.label)

    def set_service(
        self, session: Session, reg_info: QuerySet, operation: WSAESETSERVICEOP, flags: int
    ) -> None:
        _call(f"set {reg_info.service_instance_name} {int(operation)}")


def _blob(*domains: tuple[str, int], wildcard: bool = False) -> bytes:
    return InstallationBlob(
        wildcard=wildcard, domains=[DomainDescription(d, level) for d, level in domains]
    ).pack()


class Primary(Routed):
    provider_id = uuid.UUID("6a1d3f10-0d6e-4c1b-9a01-00000000a001")
    name = "RoutingPrimary"
    label = "primary"
    install_blob = _blob(("example.com", PRIMARY))


class Secondary(Routed):
    provider_id = uuid.UUID("6a1d3f10-0d6e-4c1b-9a01-00000000a002")
    name = "RoutingSecondary"
    label = "secondary"
    install_blob = _blob(("example.com", SECONDARY))


class Wildcard(Routed):
    provider_id = uuid.UUID("6a1d3f10-0d6e-4c1b-9a01-00000000a003")
    name = "RoutingWildcard"
    label = "wildcard"
    install_blob = _blob(wildcard=True)


class OtherDomain(Routed):
    """The primary of example.org: never routed for example.com."""

    provider_id = uuid.UUID("6a1d3f10-0d6e-4c1b-9a01-00000000a004")
    name = "RoutingOtherDomain"
    label = "other-domain"
    install_blob = _blob(("example.org", PRIMARY))


class OtherSpace(Routed):
    """A provider of another namespace (NS_DNS), installed without a blob."""

    provider_id = uuid.UUID("6a1d3f10-0d6e-4c1b-9a01-00000000a005")
    namespace = NS_DNS
    name = "RoutingOtherSpace"
    label = "other-space"
    install_blob = None


ALL: tuple[type[Routed], ...] = (Primary, Secondary, Wildcard, OtherDomain, OtherSpace)
