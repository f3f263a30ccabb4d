"""The SDK mirrors: one module per Windows header, and their layouts.

:mod:`~nspv2.sdk.wintypes`, :mod:`~nspv2.sdk.guiddef`, :mod:`~nspv2.sdk.ws2def`,
:mod:`~nspv2.sdk.ws2ipdef`, :mod:`~nspv2.sdk.winsock2`, :mod:`~nspv2.sdk.ws2spi`,
:mod:`~nspv2.sdk.nsemail`, :mod:`~nspv2.sdk.msgrua`, :mod:`~nspv2.sdk.msgrpriv` and
:mod:`~nspv2.sdk.iphlpapi` keep the header's names, field order and constants;
:mod:`~nspv2.sdk.layout` computes every structure's x86, x64 and host layout;
:mod:`~nspv2.sdk.hresult` converts HRESULTs between their signed and unsigned
forms (``SESSION_RESULT`` and ``SignoutResult`` accept both).
Importing this package loads no library.
"""

from pathlib import Path

__all__ = ["get_include"]

_HEADER = "nspv2_abi.h"


def get_include() -> str:
    """The folder of nspv2's public C headers.

    ``nspv2_abi.h`` (the NSPv2 ABI), ``nspv2_host.h`` (the native host),
    ``nspv2_ref_provider.h`` (the C reference provider) and the rest, as
    installed with the package; in a source checkout, ``native_stub/include``.
    ``python -m nspv2 config --cflags`` prints it as a compiler flag.
    """
    installed = Path(__file__).resolve().parent / "include"
    if (installed / _HEADER).is_file():
        return str(installed)
    checkout = Path(__file__).resolve().parents[2] / "native_stub" / "include"
    if (checkout / _HEADER).is_file():
        return str(checkout)
    raise FileNotFoundError(
        f"nspv2's C headers are missing: neither {installed} nor {checkout} has {_HEADER}"
    )
