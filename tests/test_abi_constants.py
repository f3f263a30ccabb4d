"""Every numeric constant of nspv2 against the C headers' value.

x64/x86: mingw-w64's headers, wherever they define the name (the names they
lack are listed exactly, so nothing goes unverified silently). host: the
mirror header in native_stub/.
"""

from __future__ import annotations

import enum
import re
from pathlib import Path

import pytest

from nspv2.sdk import nsemail, winsock2, ws2def

from .cprobe import CFLAGS, INCLUDE, measure, require_compiler, run

ENUMS: tuple[type[enum.IntEnum] | type[enum.IntFlag], ...] = (
    winsock2.NS,
    winsock2.LUP,
    winsock2.RESULT_IS,
    winsock2.WSAECOMPARATOR,
    winsock2.WSAESETSERVICEOP,
    winsock2.WSAError,
    nsemail.NAPI_PROVIDER_TYPE,
    nsemail.NAPI_PROVIDER_LEVEL,
    ws2def.AF,
    ws2def.SOCK,
    ws2def.IPPROTO,
)

#: Names nspv2 defines that mingw-w64's headers do not: checked against the
#: Windows SDK documentation instead.
ABSENT_FROM_MINGW = {"NS_LOCALNAME"}
#: The mirror header leaves the host's own socket constants alone.
ABSENT_FROM_MIRROR_PREFIXES = ("AF_", "SOCK_", "IPPROTO_")


def nspv2_constants() -> dict[str, int]:
    values: dict[str, int] = {
        "SOCKET_ERROR": winsock2.SOCKET_ERROR,
        "NO_ERROR": winsock2.NO_ERROR,
        "SERVICE_MULTIPLE": winsock2.SERVICE_MULTIPLE,
    }
    for e in ENUMS:
        for name, member in e.__members__.items():
            values[name] = int(member)
    return values


def names_known_to(compiler_cmd: str, header: Path, workdir: Path) -> set[str]:
    """Macro names and identifiers that appear once the headers are preprocessed."""
    macros = run([compiler_cmd, *CFLAGS, f"-I{INCLUDE}", "-E", "-dM", str(header)]).stdout
    names = set(re.findall(r"^#define (\w+)", macros, re.M))
    expanded = run([compiler_cmd, *CFLAGS, f"-I{INCLUDE}", "-E", str(header)]).stdout
    names |= set(re.findall(r"\b[A-Za-z_]\w*\b", expanded))
    return names


@pytest.mark.parametrize("abi", ["host", "x64", "x86"])
def test_constants_match_the_headers(abi: str, tmp_path: Path) -> None:
    compiler = require_compiler(abi)
    header = tmp_path / "incl.c"
    header.write_text('#include "nspv2_abi.h"\n')
    known = names_known_to(compiler.command, header, tmp_path)
    ours = nspv2_constants()
    present = sorted(n for n in ours if n in known)
    absent = {n for n in ours if n not in known}
    if abi == "host":
        assert all(n.startswith(ABSENT_FROM_MIRROR_PREFIXES) for n in absent), sorted(absent)
    else:
        assert absent == ABSENT_FROM_MINGW
    source = tmp_path / "consts.c"
    source.write_text(
        '#include "nspv2_abi.h"\n#include <stdint.h>\n#include <stdio.h>\n'
        + "".join(f"const int32_t nspv2_probe__const__{n} = (int32_t)({n});\n" for n in present)
        + "#ifndef NSPV2_PROBE_NO_MAIN\nint main(void) {\n"
        + "".join(
            f'  printf("const__{n} %ld\\n", (long)nspv2_probe__const__{n});\n' for n in present
        )
        + "  return 0;\n}\n#endif\n"
    )
    measured = measure(compiler, source, tmp_path)
    wrong = [
        f"{n}: header {measured[f'const__{n}']}, nspv2 {ours[n]}"
        for n in present
        if measured[f"const__{n}"] % (1 << 32) != ours[n] % (1 << 32)
    ]
    assert not wrong, "\n".join(wrong)
    assert len(present) > 100
