"""The SDK mirrors: one module per Windows header, and their layouts.

:mod:`~nspv2.sdk.wintypes`, :mod:`~nspv2.sdk.guiddef`, :mod:`~nspv2.sdk.ws2def`,
:mod:`~nspv2.sdk.ws2ipdef`, :mod:`~nspv2.sdk.winsock2`, :mod:`~nspv2.sdk.ws2spi`,
:mod:`~nspv2.sdk.nsemail`, :mod:`~nspv2.sdk.msgrua`, :mod:`~nspv2.sdk.msgrpriv` and
:mod:`~nspv2.sdk.iphlpapi` keep the header's names, field order and constants;
:mod:`~nspv2.sdk.layout` computes every structure's x86, x64 and host layout.
Importing this package loads no library.
"""
