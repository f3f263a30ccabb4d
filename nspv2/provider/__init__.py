"""The provider scaffold: Python callables as NSPv2 entry points.

:class:`Routine` is the raw level (a routine table of guarded thunks with
``WSAEOPNOTSUPP`` stubs in empty slots); :class:`Provider` is the high level
(sessions, lookups and exact ``WSAQUERYSET2W`` packing); :class:`QuerySet`
reads and packs query sets; the error channel is how a table reports to its
host.
"""

from .base import Provider
from .channel import ErrorChannel, InProcessChannel
from .errors import WinsockError
from .queryset import AfProtocol, CsAddr, QuerySet, RawSocketAddress, SocketAddress, Version
from .registry import EndedBy, Lookup, Registry, Session
from .routine import Routine, RoutineClosedError

__all__ = [
    "AfProtocol",
    "CsAddr",
    "EndedBy",
    "ErrorChannel",
    "InProcessChannel",
    "Lookup",
    "Provider",
    "QuerySet",
    "RawSocketAddress",
    "Registry",
    "Routine",
    "RoutineClosedError",
    "Session",
    "SocketAddress",
    "Version",
    "WinsockError",
]
