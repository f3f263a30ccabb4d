"""HRESULT values: one 32-bit pattern, two Python ints.

An HRESULT is a LONG in C, so a failure code such as 0x8100060E reads as
-2130704882 through ``ctypes.c_long`` or ``c_int32`` and as 2164262414
through ``c_uint32`` or in a header. The SDK mirrors keep the unsigned form
(as the headers write them); ``hresult`` and ``as_signed`` convert, and
``HRESULTEnum`` accepts either form when an enumeration is called, so
``SESSION_RESULT(-2130704882) is SESSION_RESULT.SR_APP_NOT_REGISTERED``.
"""

from __future__ import annotations

import enum

__all__ = ["HRESULTEnum", "as_signed", "hresult"]

_MASK = 0xFFFFFFFF


def _check_range(value: int) -> int:
    value = int(value)
    if not -0x80000000 <= value <= _MASK:
        raise ValueError(f"{value} does not fit 32 bits, so it is not an HRESULT")
    return value


def hresult(value: int) -> int:
    """``value`` (signed or unsigned 32-bit) as the unsigned HRESULT.

    >>> hex(hresult(-2130704882))
    '0x8100060e'

    ValueError when ``value`` does not fit 32 bits.
    """
    return _check_range(value) & _MASK


def as_signed(value: int) -> int:
    """``value`` (signed or unsigned 32-bit) as a signed LONG, as C sees it.

    >>> as_signed(0x8100060E)
    -2130704882

    ValueError when ``value`` does not fit 32 bits.
    """
    u = hresult(value)
    return u - 0x100000000 if u & 0x80000000 else u


class HRESULTEnum(enum.IntEnum):
    """An IntEnum of HRESULTs, members in the unsigned form.

    Calling it also accepts the signed form of a member's value (what a
    LONG returned by C holds) and gives the same member. A value that is no
    member, in either form, raises ValueError naming the enumeration and
    the value in hex.
    """

    @classmethod
    def _missing_(cls, value: object) -> HRESULTEnum:
        name = cls.__name__
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError(f"{value!r} is not a {name} value (an HRESULT is an int)")
        if not -0x80000000 <= value <= _MASK:
            raise ValueError(f"{value} is not a {name} value (it does not fit 32 bits)")
        unsigned = value & _MASK
        for member in cls:
            if member.value == unsigned:
                return member
        raise ValueError(f"{value} ({unsigned:#010x}) is not a {name} value")
