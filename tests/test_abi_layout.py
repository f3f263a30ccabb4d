"""The ctypes layouts against what real C compilers say.

host: native_stub's mirror header compiled by this machine's cc.
x64 / x86: mingw-w64's own Windows headers (winsock2.h, ws2spi.h,
nsemail.h), read from the cross compiler's assembly output.
"""

from __future__ import annotations

import ctypes
import re
from pathlib import Path

import pytest

from nspv2.sdk.layout import (
    ABI,
    STRUCTS,
    all_layouts,
    layout,
    pointer_size,
    render_layout,
    retarget,
)
from nspv2.sdk.winsock2 import WSAQUERYSET2W
from nspv2.sdk.ws2spi import NSPV2_ROUTINE

from .cprobe import CFLAGS, INCLUDE, PROBE_DIR, measure, require_compiler, run

PROBE = PROBE_DIR / "layout_probe.c"

# The figures DESIGN-checked with mingw-w64 gcc 12, restated as a floor that
# does not depend on any compiler being present.
KNOWN_SIZES = {
    "WSAQUERYSET2W": (56, 112),
    "WSAQUERYSETW": (60, 120),
    "NSPV2_ROUTINE": (40, 72),
    "CSADDR_INFO": (24, 40),
    "SOCKET_ADDRESS": (8, 16),
    "BLOB": (8, 16),
    "WSANSCLASSINFOW": (20, 32),
    "WSANAMESPACE_INFOEXW": (40, 56),
    "AFPROTOCOLS": (8, 8),
    "WSAVERSION": (8, 8),
}


@pytest.fixture(scope="module", params=["host", "x64", "x86"])
def probed(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[ABI, dict[str, int]]:
    abi = ABI(request.param)
    compiler = require_compiler(abi.value)
    values = measure(compiler, PROBE, tmp_path_factory.mktemp(f"probe-{abi.value}"))
    return abi, values


def test_probe_list_names_exactly_the_ctypes_fields() -> None:
    listed: dict[str, list[str]] = {}
    for line in (PROBE_DIR / "probe_structs.h").read_text().splitlines():
        m = re.match(r"PROBE_STRUCT\((\w+)\)", line)
        if m:
            listed[m.group(1)] = []
        m = re.match(r"PROBE_FIELD\((\w+), (\w+)\)", line)
        if m:
            listed[m.group(1)].append(m.group(2))
    expected = {s.__name__: [f[0] for f in s._fields_] for s in STRUCTS}
    assert listed == expected


def test_every_struct_and_field_matches_the_compiler(probed: tuple[ABI, dict[str, int]]) -> None:
    abi, values = probed
    mismatches = []
    checked = 0
    for s in all_layouts(abi):
        pairs = [(f"size__{s.name}", s.size), (f"align__{s.name}", s.alignment)]
        for f in s.fields:
            pairs.append((f"offset__{s.name}__{f.name}", f.offset))
            pairs.append((f"fsize__{s.name}__{f.name}", f.size))
        for key, ours in pairs:
            checked += 1
            if values.get(key) != ours:
                mismatches.append(f"{abi.value} {key}: compiler {values.get(key)}, nspv2 {ours}")
    assert not mismatches, "\n".join(mismatches)
    assert checked >= 2 * len(STRUCTS) + 2 * 100


def test_prototypes_as_the_compiler_sees_them(probed: tuple[ABI, dict[str, int]]) -> None:
    """Host (mirror of the SDK): every prototype has the SDK signature.

    mingw-w64 declares NextEx, SetServiceEx and ClientSessionRundown as
    returning int; the SDK declares them VOID. The SDK is what Windows'
    ws2_32.dll was built against and what providers are documented with, so
    nspv2 follows it: restype None. Parameter lists agree everywhere.
    """
    abi, values = probed
    void_slots = {
        "LPNSPV2LOOKUPSERVICENEXTEX",
        "LPNSPV2SETSERVICEEX",
        "LPNSPV2CLIENTSESSIONRUNDOWN",
    }
    for typedef in (
        "LPNSPV2STARTUP",
        "LPNSPV2CLEANUP",
        "LPNSPV2LOOKUPSERVICEBEGIN",
        "LPNSPV2LOOKUPSERVICENEXTEX",
        "LPNSPV2LOOKUPSERVICEEND",
        "LPNSPV2SETSERVICEEX",
        "LPNSPV2CLIENTSESSIONRUNDOWN",
    ):
        sdk = values[f"proto__{typedef}__sdk"]
        intret = values[f"proto__{typedef}__intret"]
        if abi is ABI.HOST or typedef not in void_slots:
            assert sdk == 1, f"{abi.value}: {typedef} lacks the SDK signature"
        else:
            # mingw-w64's deviation: same parameters, int instead of VOID.
            assert (sdk, intret) == (0, 1), f"{abi.value}: {typedef} sdk={sdk} intret={intret}"
    if abi is not ABI.HOST:
        # mingw-w64: WSAAdvertiseProvider(const GUID *, const LPCNSPV2_ROUTINE *),
        # a pointer to a pointer; the SDK passes the table itself.
        assert values["advertise__sdk"] == 0
        assert values["advertise__ptrptr"] == 1


@pytest.mark.parametrize("name", sorted(KNOWN_SIZES))
def test_known_sizes(name: str) -> None:
    struct = next(s for s in STRUCTS if s.__name__ == name)
    x86, x64 = KNOWN_SIZES[name]
    assert layout(struct, ABI.X86).size == x86
    assert layout(struct, ABI.X64).size == x64


def test_wsaqueryset2w_offsets_per_abi() -> None:
    x64 = [f.offset for f in layout(WSAQUERYSET2W, ABI.X64).fields]
    assert x64 == [0, 8, 16, 24, 32, 40, 48, 56, 64, 72, 80, 88, 96, 104]
    x86 = [f.offset for f in layout(WSAQUERYSET2W, ABI.X86).fields]
    assert x86 == list(range(0, 56, 4))
    routine = layout(NSPV2_ROUTINE, ABI.X64)
    assert routine.field("NSPv2Startup").offset == 16
    assert routine.field("NSPv2ClientSessionRundown").offset == 64


def test_host_layout_is_the_real_ctypes_class() -> None:
    for s in STRUCTS:
        assert retarget(s, ABI.HOST) is s
        assert layout(s, ABI.HOST).size == ctypes.sizeof(s)
    assert pointer_size(ABI.HOST) == ctypes.sizeof(ctypes.c_void_p)


def test_no_platform_dependent_integer_in_any_struct() -> None:
    """c_long / c_ulong / c_wchar differ between Windows and Linux: never used."""
    forbidden = {ctypes.c_long, ctypes.c_ulong, ctypes.c_wchar, ctypes.c_wchar_p}
    seen: set[type] = set()

    def walk(t: type) -> None:
        if t in seen:
            return
        seen.add(t)
        assert t not in forbidden, t
        if isinstance(t, type) and issubclass(t, (ctypes.Structure, ctypes.Union)):
            for f in t._fields_:
                walk(f[1])
        if isinstance(t, type) and issubclass(t, ctypes.Array):
            walk(t._type_)

    for s in STRUCTS:
        walk(s)


def test_generated_c_asserts_compile_against_the_real_headers(tmp_path: Path) -> None:
    """`layout --format c` output is itself a compile-time check."""
    source = tmp_path / "asserts.c"
    source.write_text('#include "nspv2_abi.h"\n' + render_layout(["x64", "x86", "host"], "c"))
    for abi in ("host", "x64", "x86"):
        compiler = require_compiler(abi)
        run(
            [
                compiler.command,
                *CFLAGS,
                f"-I{INCLUDE}",
                "-c",
                str(source),
                "-o",
                str(tmp_path / f"a-{abi}.o"),
            ]
        )
