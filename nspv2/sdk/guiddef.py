"""guiddef.h: the GUID structure, with conversion to and from ``uuid.UUID``."""

from __future__ import annotations

import ctypes
import uuid
from typing import TYPE_CHECKING

from .wintypes import BYTE, DWORD, USHORT

__all__ = ["GUID", "LPCGUID", "LPGUID", "REFGUID"]


# typedef struct _GUID {
#     unsigned long  Data1;
#     unsigned short Data2;
#     unsigned short Data3;
#     unsigned char  Data4[8];
# } GUID;
class GUID(ctypes.Structure):
    """A Windows GUID. Data1..Data3 are little-endian in memory, as on Windows."""

    if TYPE_CHECKING:
        Data1: int
        Data2: int
        Data3: int
        Data4: ctypes.Array[ctypes.c_uint8]

    _fields_ = [
        ("Data1", DWORD),
        ("Data2", USHORT),
        ("Data3", USHORT),
        ("Data4", BYTE * 8),
    ]

    @classmethod
    def from_uuid(cls, value: uuid.UUID | str) -> GUID:
        """Build a GUID from a ``uuid.UUID`` or its string form."""
        if isinstance(value, str):
            value = uuid.UUID(value)
        return cls.from_buffer_copy(value.bytes_le)

    def to_uuid(self) -> uuid.UUID:
        """Return the GUID as a ``uuid.UUID``."""
        return uuid.UUID(bytes_le=bytes(self))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, GUID):
            return bytes(self) == bytes(other)
        if isinstance(other, uuid.UUID):
            return self.to_uuid() == other
        return NotImplemented

    def __hash__(self) -> int:
        return hash(bytes(self))

    def __repr__(self) -> str:
        return f"GUID('{self.to_uuid()}')"

    def __str__(self) -> str:
        return "{" + str(self.to_uuid()).upper() + "}"


# typedef GUID *LPGUID;  typedef const GUID *LPCGUID;  #define REFGUID const GUID *
LPGUID = ctypes.POINTER(GUID)
LPCGUID = LPGUID
REFGUID = LPGUID
