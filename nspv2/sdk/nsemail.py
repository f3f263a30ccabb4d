"""nsemail.h: the NS_EMAIL provider installation blobs (NAPI).

An NS_EMAIL provider passes ``NAPI_PROVIDER_INSTALLATION_BLOB`` (followed by
its domain descriptions) as the ``LPBLOB`` of ``WSCInstallNameSpaceEx``.
Offsets are byte offsets from the start of the installation blob.
"""

from __future__ import annotations

import ctypes
import enum
from typing import TYPE_CHECKING

from .wintypes import DWORD

__all__ = [
    "NAPI_DOMAIN_DESCRIPTION_BLOB",
    "NAPI_PROVIDER_INSTALLATION_BLOB",
    "NAPI_PROVIDER_LEVEL",
    "NAPI_PROVIDER_TYPE",
    "PNAPI_DOMAIN_DESCRIPTION_BLOB",
    "PNAPI_PROVIDER_INSTALLATION_BLOB",
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
