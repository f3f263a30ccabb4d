"""nsemail.h: the NS_EMAIL provider installation blobs (NAPI).

An NS_EMAIL provider passes ``NAPI_PROVIDER_INSTALLATION_BLOB`` (followed by
its domain descriptions) as the ``LPBLOB`` of ``WSCInstallNameSpaceEx``.
Offsets are byte offsets from the start of the installation blob.

:class:`InstallationBlob` and :class:`DomainDescription` are the blob as
values: :meth:`InstallationBlob.pack` lays one out (header, the domain
descriptions one after the other, then the names, UTF-16LE and
NUL-terminated), :meth:`InstallationBlob.parse` reads one back and
:func:`installation_blob_problems` names every rule a blob breaks:

>>> from nspv2.sdk.nsemail import InstallationBlob, installation_blob_problems
>>> blob = InstallationBlob(domains=["example.com", "example.org"])
>>> data = blob.pack()
>>> len(data), installation_blob_problems(data)
(100, [])
>>> InstallationBlob.parse(data).domains[1].name
'example.org'
>>> installation_blob_problems(data[:-4] + b"x")
['domain #2: its name (11 characters at offset 76) ends past the blob (97 bytes)']

The rules, from nsemail.h: dwVersion 1; dwProviderType 1 (application) or
2 (service); each AuthLevel a NAPI_PROVIDER_LEVEL (0, 1 or 2);
OffsetFirstDomain and each OffsetNextDomainDescription multiples of 4, each
OffsetThisDomainName of 2 (the blob's size is not a rule: the padding pack()
adds is a choice); every structure and name inside the blob
and past its header; cDomains domains in the chain, the last one's
OffsetNextDomainDescription 0, no domain visited twice; cchDomainName
counting the name's characters without its terminator (no NUL among them,
and the character after them, when the blob holds one, the NUL).
"""

from __future__ import annotations

import ctypes
import enum
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .wintypes import DWORD

__all__ = [
    "BLOB_VERSION",
    "NAPI_DOMAIN_DESCRIPTION_BLOB",
    "NAPI_PROVIDER_INSTALLATION_BLOB",
    "NAPI_PROVIDER_LEVEL",
    "NAPI_PROVIDER_TYPE",
    "PNAPI_DOMAIN_DESCRIPTION_BLOB",
    "PNAPI_PROVIDER_INSTALLATION_BLOB",
    "BlobError",
    "DomainDescription",
    "InstallationBlob",
    "installation_blob_problems",
]


# typedef enum _NAPI_PROVIDER_TYPE {
#     ProviderType_Application = 1, ProviderType_Service
# } NAPI_PROVIDER_TYPE;
class NAPI_PROVIDER_TYPE(enum.IntEnum):
    """Whether the provider is an application or a service."""

    ProviderType_Application = 1
    ProviderType_Service = 2


# typedef enum _NAPI_PROVIDER_LEVEL {
#     ProviderLevel_None = 0, ProviderLevel_Secondary, ProviderLevel_Primary
# } NAPI_PROVIDER_LEVEL;
class NAPI_PROVIDER_LEVEL(enum.IntEnum):
    """How authoritative the provider is for a domain (AuthLevel)."""

    ProviderLevel_None = 0
    ProviderLevel_Secondary = 1
    ProviderLevel_Primary = 2


# typedef struct _NAPI_DOMAIN_DESCRIPTION_BLOB {
#     DWORD AuthLevel;
#     DWORD cchDomainName;
#     DWORD OffsetNextDomainDescription;
#     DWORD OffsetThisDomainName;
# } NAPI_DOMAIN_DESCRIPTION_BLOB, *PNAPI_DOMAIN_DESCRIPTION_BLOB;
class NAPI_DOMAIN_DESCRIPTION_BLOB(ctypes.Structure):
    if TYPE_CHECKING:
        AuthLevel: int
        cchDomainName: int
        OffsetNextDomainDescription: int
        OffsetThisDomainName: int

    _fields_ = [
        ("AuthLevel", DWORD),
        ("cchDomainName", DWORD),
        ("OffsetNextDomainDescription", DWORD),
        ("OffsetThisDomainName", DWORD),
    ]


PNAPI_DOMAIN_DESCRIPTION_BLOB = ctypes.POINTER(NAPI_DOMAIN_DESCRIPTION_BLOB)


# typedef struct _NAPI_PROVIDER_INSTALLATION_BLOB {
#     DWORD dwVersion;
#     DWORD dwProviderType;
#     DWORD fSupportsWildCard;
#     DWORD cDomains;
#     DWORD OffsetFirstDomain;
# } NAPI_PROVIDER_INSTALLATION_BLOB, *PNAPI_PROVIDER_INSTALLATION_BLOB;
class NAPI_PROVIDER_INSTALLATION_BLOB(ctypes.Structure):
    if TYPE_CHECKING:
        dwVersion: int
        dwProviderType: int
        fSupportsWildCard: int
        cDomains: int
        OffsetFirstDomain: int

    _fields_ = [
        ("dwVersion", DWORD),
        ("dwProviderType", DWORD),
        ("fSupportsWildCard", DWORD),
        ("cDomains", DWORD),
        ("OffsetFirstDomain", DWORD),
    ]


PNAPI_PROVIDER_INSTALLATION_BLOB = ctypes.POINTER(NAPI_PROVIDER_INSTALLATION_BLOB)


# -- the blob as values ---------------------------------------------------------------

#: The installation blob's dwVersion.
BLOB_VERSION = 1
_HEADER = struct.Struct("<5I")  # NAPI_PROVIDER_INSTALLATION_BLOB
_DOMAIN = struct.Struct("<4I")  # NAPI_DOMAIN_DESCRIPTION_BLOB
assert _HEADER.size == ctypes.sizeof(NAPI_PROVIDER_INSTALLATION_BLOB)
assert _DOMAIN.size == ctypes.sizeof(NAPI_DOMAIN_DESCRIPTION_BLOB)
_TYPES = frozenset(int(t) for t in NAPI_PROVIDER_TYPE)
_LEVELS = frozenset(int(level) for level in NAPI_PROVIDER_LEVEL)


class BlobError(ValueError):
    """An installation blob breaks nsemail.h's rules; ``problems`` names each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class DomainDescription:
    """One NAPI_DOMAIN_DESCRIPTION_BLOB: a domain and the AuthLevel for it."""

    name: str
    level: int = NAPI_PROVIDER_LEVEL.ProviderLevel_Primary

    def problems(self) -> list[str]:
        """What would make this domain break the blob's rules."""
        out = []
        if int(self.level) not in _LEVELS:
            out.append(f"{self.name!r}: AuthLevel {self.level} is not 0, 1 or 2")
        if not self.name:
            out.append("a domain with an empty name")
        elif "\0" in self.name:
            out.append(f"{self.name!r}: a NUL in the name")
        return out


@dataclass(frozen=True, init=False)
class InstallationBlob:
    """NAPI_PROVIDER_INSTALLATION_BLOB and its domain descriptions, as values.

    ``domains`` are :class:`DomainDescription` values or names; a name gets
    ``level`` (primary by default).
    """

    provider_type: int
    wildcard: bool
    domains: tuple[DomainDescription, ...]
    version: int

    def __init__(
        self,
        provider_type: int = NAPI_PROVIDER_TYPE.ProviderType_Application,
        level: int = NAPI_PROVIDER_LEVEL.ProviderLevel_Primary,
        wildcard: bool = False,
        domains: Iterable[DomainDescription | str] = (),
        version: int = BLOB_VERSION,
    ) -> None:
        described = tuple(
            d if isinstance(d, DomainDescription) else DomainDescription(d, level) for d in domains
        )
        object.__setattr__(self, "provider_type", provider_type)
        object.__setattr__(self, "wildcard", bool(wildcard))
        object.__setattr__(self, "domains", described)
        object.__setattr__(self, "version", version)

    def pack(self) -> bytes:
        """The blob's bytes: header, domain descriptions, then the names
        (UTF-16LE, NUL-terminated), padded to a multiple of 4 bytes."""
        names = [d.name.encode("utf-16-le") + b"\0\0" for d in self.domains]
        first = _HEADER.size if self.domains else 0
        at_name = _HEADER.size + _DOMAIN.size * len(self.domains)
        body = bytearray()
        for i, (domain, encoded) in enumerate(zip(self.domains, names, strict=True)):
            nxt = _HEADER.size + _DOMAIN.size * (i + 1) if i + 1 < len(self.domains) else 0
            cch = len(encoded) // 2 - 1
            body += _DOMAIN.pack(int(domain.level), cch, nxt, at_name)
            at_name += len(encoded)
        header = _HEADER.pack(
            int(self.version), int(self.provider_type), int(self.wildcard), len(self.domains), first
        )
        data = header + bytes(body) + b"".join(names)
        return data + bytes(-len(data) % 4)

    @classmethod
    def parse(cls, data: bytes) -> InstallationBlob:
        """Read a blob back; :class:`BlobError` listing every problem if it
        breaks a rule (:func:`installation_blob_problems`)."""
        problems = installation_blob_problems(data)
        if problems:
            raise BlobError(problems)
        version, ptype, wildcard, count, offset = _HEADER.unpack_from(data)
        domains = []
        for _ in range(count):
            level, cch, nxt, at = _DOMAIN.unpack_from(data, offset)
            name = data[at : at + 2 * cch].decode("utf-16-le")
            domains.append(DomainDescription(name, level))
            offset = nxt
        return cls(ptype, wildcard=bool(wildcard), domains=domains, version=version)

    def problems(self) -> list[str]:
        """Every rule the packed blob would break (names, levels, type...)."""
        own = [p for d in self.domains for p in d.problems()]
        return own + [p for p in installation_blob_problems(self.pack()) if p not in own]


def installation_blob_problems(data: bytes) -> list[str]:
    """Every rule of nsemail.h the installation blob ``data`` breaks, named
    (an empty list: a good blob)."""
    size = len(data)
    if size < _HEADER.size:
        return [
            f"the blob is {size} bytes, shorter than NAPI_PROVIDER_INSTALLATION_BLOB ({_HEADER.size})"
        ]
    out: list[str] = []
    version, ptype, _wildcard, count, first = _HEADER.unpack_from(data)
    if version != BLOB_VERSION:
        out.append(f"dwVersion is {version}, not {BLOB_VERSION}")
    if ptype not in _TYPES:
        out.append(f"dwProviderType is {ptype}, not 1 (application) or 2 (service)")
    if count == 0:
        if first != 0:
            out.append(f"cDomains is 0 but OffsetFirstDomain is {first}, not 0")
        return out
    if first == 0:
        out.append(f"cDomains is {count} but OffsetFirstDomain is 0")
        return out
    seen: dict[int, int] = {}
    offset, via = first, "OffsetFirstDomain"
    for number in range(1, count + 1):
        where = f"domain #{number} at offset {offset} ({via})"
        if offset in seen:
            out.append(f"{where}: a loop, back to domain #{seen[offset]}")
            return out
        bad = _placement(offset, _DOMAIN.size, 4, size)
        if bad:
            out.append(f"{where}: {bad}")
            return out
        seen[offset] = number
        level, cch, nxt, at = _DOMAIN.unpack_from(data, offset)
        label = f"domain #{number}"
        if level not in _LEVELS:
            out.append(f"{label}: AuthLevel {level} is not 0, 1 or 2 (NAPI_PROVIDER_LEVEL)")
        out += [f"{label}: {p}" for p in _name_problems(data, at, cch)]
        if number == count:
            if nxt != 0:
                out.append(
                    f"{label}, the last of cDomains {count}: OffsetNextDomainDescription is {nxt}, not 0"
                )
        elif nxt == 0:
            out.append(f"cDomains is {count} but the chain ends after {number} domain(s)")
            return out
        offset, via = nxt, f"OffsetNextDomainDescription of domain #{number}"
    return out


def _placement(offset: int, length: int, align: int, size: int) -> str | None:
    """Why ``length`` bytes at ``offset`` are misplaced in a ``size``-byte blob."""
    if offset % align:
        return f"offset {offset} is not a multiple of {align}"
    if offset < _HEADER.size:
        return f"offset {offset} overlaps the {_HEADER.size}-byte header"
    if offset + length > size:
        return f"ends past the blob ({size} bytes)"
    return None


def _name_problems(data: bytes, at: int, cch: int) -> list[str]:
    size = len(data)
    if cch == 0:
        return ["cchDomainName is 0 (an empty name)"]
    if at % 2:
        return [f"OffsetThisDomainName {at} is not a multiple of 2"]
    if at < _HEADER.size:
        return [f"OffsetThisDomainName {at} overlaps the {_HEADER.size}-byte header"]
    if at + 2 * cch > size:
        return [f"its name ({cch} characters at offset {at}) ends past the blob ({size} bytes)"]
    units = struct.unpack_from(f"<{cch}H", data, at)
    if 0 in units:
        return [f"cchDomainName is {cch} but the name ends after {units.index(0)} characters"]
    end = at + 2 * cch
    if end + 2 <= size and data[end : end + 2] != b"\0\0":
        return [f"cchDomainName is {cch} but the name goes on (no NUL after {cch} characters)"]
    return []
