"""Behaviour of the definitions themselves: GUIDs, strings, enums, prototypes."""

from __future__ import annotations

import ctypes
import pickle
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import nspv2
from nspv2.provider.errors import WinsockError
from nspv2.sdk.guiddef import GUID
from nspv2.sdk.hresult import HRESULTEnum, as_signed, hresult
from nspv2.sdk.iphlpapi import CPNATFWT_SESSION_TERMINATION_REASON as R
from nspv2.sdk.msgrpriv import SESSION_RESULT
from nspv2.sdk.msgrua import MISTATUS, SignoutResult
from nspv2.sdk.winsock2 import LUP, NS, WSAError, error_meaning
from nspv2.sdk.wintypes import LPWSTR, WCHAR, read_wstr, wstr
from nspv2.sdk.ws2spi import HOST_FUNCTIONS, NSPV2_ROUTINE, NSPV2_SLOTS, PROTOTYPES, Returns


@given(st.uuids())
def test_guid_round_trips_through_uuid(value: uuid.UUID) -> None:
    g = GUID.from_uuid(value)
    assert g.to_uuid() == value
    assert GUID.from_uuid(str(value)) == g
    assert g == value
    assert bytes(g) == value.bytes_le


def test_guid_memory_layout_is_little_endian_fields() -> None:
    g = GUID.from_uuid("00112233-4455-6677-8899-aabbccddeeff")
    assert g.Data1 == 0x00112233 and g.Data2 == 0x4455 and g.Data3 == 0x6677
    assert bytes(g.Data4) == bytes.fromhex("8899aabbccddeeff")
    assert str(g) == "{00112233-4455-6677-8899-AABBCCDDEEFF}"


@given(st.text())
def test_wstr_is_utf16le_and_reads_back(text: str) -> None:
    buf = wstr(text)
    assert ctypes.sizeof(WCHAR) == 2
    encoded = text.encode("utf-16-le", errors="surrogatepass")
    assert bytes(buf)[: len(encoded)] == encoded
    assert bytes(buf)[len(encoded) :] == b"\0\0"
    if "\0" not in text:
        try:
            encoded.decode("utf-16-le")
        except UnicodeDecodeError:
            return
        assert read_wstr(ctypes.cast(buf, LPWSTR)) == text


def test_wstr_encodes_non_bmp_as_surrogate_pair() -> None:
    buf = wstr("a\U0001f600")
    assert list(buf) == [0x61, 0xD83D, 0xDE00, 0]


def test_read_wstr_null_and_unterminated() -> None:
    assert read_wstr(None) is None
    assert read_wstr(0) is None
    units = (WCHAR * 4)(0x41, 0x42, 0x43, 0x44)
    with pytest.raises(ValueError, match="no terminator"):
        read_wstr(ctypes.addressof(units), max_chars=3)


def test_winsock_error_carries_code_and_name() -> None:
    e = WinsockError(WSAError.WSAEINVAL, "bad flags")
    assert e.code == 10022 and e.name == "WSAEINVAL"
    assert "WSAEINVAL" in str(e) and "bad flags" in str(e)
    again = pickle.loads(pickle.dumps(e))
    assert again.code == 10022 and again.message == "bad flags"
    assert WinsockError(4242).name == "error 4242"
    assert error_meaning(0).startswith("NO_ERROR")


def test_design_values() -> None:
    assert NS.NS_EMAIL == 37 and NS.NS_DNS == 12 and NS.NS_ALL == 0
    assert LUP.LUP_RETURN_ALL == 0x0FF0 and LUP.LUP_FLUSHPREVIOUS == 0x2000
    assert LUP.LUP_RES_SERVICE == 0x8000
    assert nspv2.SOCKET_ERROR == -1 and nspv2.NO_ERROR == 0
    assert WSAError.WSA_INVALID_HANDLE == 6 and WSAError.WSA_NOT_ENOUGH_MEMORY == 8
    assert WSAError.WSAEINVALIDPROVIDER == 10105 and WSAError.WSAEINVALIDPROCTABLE == 10104


def test_seed_enumerations_have_their_documented_values() -> None:
    assert [m.value for m in MISTATUS] == [
        0x0000, 0x0001, 0x0002, 0x0006, 0x000A, 0x000E, 0x0012, 0x0022,
        0x0032, 0x0042, 0x0100, 0x0200, 0x0300, 0x0400,
        0x0052, 0x0062, 0x0072, 0x0082, 0x0092, 0x00A2, 0x00B2,  # Communicator 2007
    ]  # fmt: skip
    assert MISTATUS.MISTATUS_IN_A_MEETING == 0x52 and MISTATUS.MISTATUS_CUSTOM == 0xB2
    values = [m.value for m in SESSION_RESULT]
    assert len(values) == 30
    assert values[:25] == list(range(0x81000601, 0x8100061A))
    assert values[25:] == list(range(0x81000620, 0x81000625))  # the documented jump
    assert SESSION_RESULT.SR_INVITED_SELF == 0x81000613
    assert [int(r) for r in R] == [0, 1, 2, 3, 4]
    assert R(4).name == "CPNATFWT_SESSION_TERMINATION_OTHER_COMMUNICATION_ERROR"
    assert SignoutResult.MSGR_E_NOT_LOGGED_ON == 0x81000300 + 0x1E
    assert SignoutResult.E_FAIL == 0x80004005 and SignoutResult.S_OK == 0
    assert MISTATUS.MISTATUS_AWAY.meaning == "away"


def test_prototypes_follow_the_sdk() -> None:
    expected = {
        "NSPv2Startup": (2, Returns.INT),
        "NSPv2Cleanup": (2, Returns.INT),
        "NSPv2LookupServiceBegin": (5, Returns.INT),
        "NSPv2LookupServiceNextEx": (5, Returns.VOID),
        "NSPv2LookupServiceEnd": (1, Returns.INT),
        "NSPv2SetServiceEx": (6, Returns.VOID),
        "NSPv2ClientSessionRundown": (2, Returns.VOID),
    }
    assert NSPV2_SLOTS == tuple(expected)
    assert [f[0] for f in NSPV2_ROUTINE._fields_[3:]] == list(NSPV2_SLOTS)
    for proto in PROTOTYPES:
        argcount, returns = expected[proto.slot]
        assert len(proto.functype._argtypes_) == argcount == proto.argcount
        if returns is Returns.VOID:
            assert proto.functype._restype_ is None
        else:
            assert proto.functype._restype_ is ctypes.c_int32
        assert dict(NSPV2_ROUTINE._fields_)[proto.slot] is proto.functype
        assert proto.c_declaration().startswith(
            f"typedef {returns.value} (WSAAPI *{proto.typedef})"
        )


def test_functype_calling_convention() -> None:
    base = ctypes.WINFUNCTYPE if sys.platform == "win32" else ctypes.CFUNCTYPE  # type: ignore[attr-defined]
    probe = base(None)
    for proto in PROTOTYPES:
        assert proto.functype._flags_ == probe._flags_


def test_host_function_descriptions() -> None:
    advertise = HOST_FUNCTIONS["WSAAdvertiseProvider"]
    # One pointer to the table (mingw-w64 wrongly has a pointer to a pointer).
    assert advertise.argtypes[1]._type_ is NSPV2_ROUTINE
    assert advertise.x86_export == "WSAAdvertiseProvider@8"
    assert (
        HOST_FUNCTIONS["WSAProviderCompleteAsyncCall"].x86_export
        == "WSAProviderCompleteAsyncCall@8"
    )
    assert HOST_FUNCTIONS["WSAUnadvertiseProvider"].x86_export == "WSAUnadvertiseProvider@4"
    assert HOST_FUNCTIONS["WSASetLastError"].restype is None
    assert len(HOST_FUNCTIONS["WSCInstallNameSpaceEx"].argtypes) == 6
    assert set(HOST_FUNCTIONS) == {
        "WSAAdvertiseProvider",
        "WSAUnadvertiseProvider",
        "WSAProviderCompleteAsyncCall",
        "WSASetLastError",
        "WSAGetLastError",
        "WSCInstallNameSpaceEx",
        "WSCUnInstallNameSpace",
    }


def test_bind_sets_argtypes_and_restype_on_a_real_library() -> None:
    """Bind a description to a real C function of the same shape (libc's abs)."""
    import ctypes.util

    from nspv2.sdk.ws2spi import FunctionSpec

    libc = ctypes.CDLL(ctypes.util.find_library("c") or None)
    spec = FunctionSpec("abs", (ctypes.c_int32,), ctypes.c_int32, "int abs(int);", "abs@4")
    fn = spec.bind(libc)
    assert fn.argtypes == [ctypes.c_int32] and fn.restype is ctypes.c_int32
    assert fn(-7) == 7


def test_import_loads_no_library() -> None:
    code = (
        "import ctypes\n"
        "def refuse(*a, **k): raise SystemExit('library loaded at import')\n"
        "ctypes.CDLL.__init__ = refuse\n"
        "import nspv2, nspv2.sdk.layout, nspv2.sdk.ws2spi, nspv2.tools.cli, nspv2.sdk.nsemail, nspv2.sdk.msgrua\n"
        "import nspv2.sdk.msgrpriv, nspv2.sdk.iphlpapi, nspv2.sdk.ws2ipdef\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_hresult_helpers_convert_between_the_two_forms() -> None:
    assert hresult(-2130704895) == 0x81000601
    assert hresult(0x81000601) == 0x81000601
    assert hresult(0) == 0 and hresult(0x7FFFFFFF) == 0x7FFFFFFF
    assert as_signed(0x81000601) == -2130704895
    assert as_signed(-2130704895) == -2130704895
    assert as_signed(0x8100031E) == ctypes.c_int32(0x8100031E).value
    assert as_signed(5) == 5
    for bad in (-0x80000001, 0x100000000):
        with pytest.raises(ValueError, match="32 bits"):
            hresult(bad)
        with pytest.raises(ValueError, match="32 bits"):
            as_signed(bad)


@pytest.mark.parametrize("enum_type", [SESSION_RESULT, SignoutResult])
def test_hresult_enums_accept_the_signed_and_the_unsigned_form(
    enum_type: type[HRESULTEnum],
) -> None:
    assert issubclass(enum_type, HRESULTEnum)
    for member in enum_type:
        assert enum_type(int(member)) is member
        assert enum_type(as_signed(member)) is member
        # what C hands back: the LONG an HRESULT is
        assert enum_type(ctypes.c_int32(member).value) is member
        assert enum_type(ctypes.c_uint32(member).value) is member


def test_hresult_enum_examples() -> None:
    assert SESSION_RESULT(-2130704895) is SESSION_RESULT.SR_APPLICATION_LAUNCH_FAILED
    assert int(SESSION_RESULT(-2130704895)) == 0x81000601
    assert SignoutResult(-2147467259) is SignoutResult.E_FAIL
    assert SignoutResult(-2130705634) is SignoutResult.MSGR_E_NOT_LOGGED_ON
    assert SignoutResult(0) is SignoutResult.S_OK


@pytest.mark.parametrize("enum_type", [SESSION_RESULT, SignoutResult])
def test_hresult_enums_refuse_other_values_clearly(enum_type: type[HRESULTEnum]) -> None:
    name = enum_type.__name__
    with pytest.raises(ValueError, match=rf"^-1 \(0xffffffff\) is not a {name} value$"):
        enum_type(-1)
    with pytest.raises(ValueError, match=rf"^5 \(0x00000005\) is not a {name} value$"):
        enum_type(5)
    with pytest.raises(ValueError, match=rf"is not a {name} value \(it does not fit 32 bits\)"):
        enum_type(0x1_0000_0000 + 0x81000601)
    with pytest.raises(ValueError, match=rf"is not a {name} value \(an HRESULT is an int\)"):
        enum_type("0x81000601")  # type: ignore[arg-type]


# -- nspv2_messenger.h against the Python enumerations ------------------------------

_INCLUDE = Path(__file__).resolve().parents[1] / "native_stub" / "include"
_MESSENGER_H = _INCLUDE / "nspv2_messenger.h"
_C_ENUMS = (MISTATUS, R)  # C enumerations
_C_HRESULTS = (SESSION_RESULT, SignoutResult)  # typedef HRESULT + #define constants


def _messenger_probe() -> tuple[str, dict[str, int]]:
    """A C file that checks every Python value against nspv2_messenger.h at
    compile time (_Static_assert) and prints it at run time; the values."""
    want: dict[str, int] = {}
    for enum_type in _C_ENUMS:
        want.update({m.name: int(m) for m in enum_type})
    for hr_type in _C_HRESULTS:
        want.update({m.name: as_signed(m) for m in hr_type})
    lines = [
        '#include "nspv2_messenger.h"',
        "#include <stdio.h>",
        '_Static_assert(sizeof(HRESULT) == 4 && (HRESULT)-1 < 0, "HRESULT is a signed LONG");',
        '_Static_assert(sizeof(SESSION_RESULT) == 4 && sizeof(SignoutResult) == 4, "HRESULTs");',
    ]
    lines += [f'_Static_assert({n} == {v}, "{n}");' for n, v in want.items()]
    lines += [
        "int main(void)",
        "{",
        "    MISTATUS m = MISTATUS_ONLINE;",
        "    CPNATFWT_SESSION_TERMINATION_REASON r = CPNATFWT_SESSION_TERMINATION_OTHER_COMMUNICATION_ERROR;",
        "    SESSION_RESULT s = SR_APP_NOT_REGISTERED;",
        "    SignoutResult o = MSGR_E_NOT_LOGGED_ON;",
        '    printf("typed %d %d %ld %ld\\n", (int)m, (int)r, (long)s, (long)o);',
    ]
    lines += [f'    printf("%s %lld\\n", "{n}", (long long)({n}));' for n in want]
    lines += ["    return 0;", "}", ""]
    return "\n".join(lines), want


def test_messenger_header_declares_exactly_the_python_names() -> None:
    text = _MESSENGER_H.read_text()
    enum_names = set(re.findall(r"^\s+((?:MISTATUS|CPNATFWT)_\w+) = ", text, re.M))
    hr_names = set(re.findall(r"^#define ((?:SR|MSGR_E|S|E)_\w+) ", text, re.M))
    assert enum_names == {m.name for e in _C_ENUMS for m in e}
    assert hr_names == {m.name for e in _C_HRESULTS for m in e}
    # the HRESULT types are not C enumerations (values above INT_MAX)
    assert "typedef HRESULT SESSION_RESULT;" in text and "typedef HRESULT SignoutResult;" in text
    assert "} MISTATUS;" in text and "} CPNATFWT_SESSION_TERMINATION_REASON;" in text


def test_messenger_header_values_match_the_python_enumerations(tmp_path: Path) -> None:
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        pytest.skip("no C compiler")
    source, want = _messenger_probe()
    (tmp_path / "probe.c").write_text(source)
    flags = ["-std=c11", "-pedantic-errors", "-Wall", "-Wextra", "-Werror", f"-I{_INCLUDE}"]
    subprocess.run(
        [cc, *flags, str(tmp_path / "probe.c"), "-o", str(tmp_path / "probe")],
        check=True,
        capture_output=True,
    )
    out = subprocess.run(
        [str(tmp_path / "probe")], check=True, capture_output=True, text=True
    ).stdout
    got = dict(line.rsplit(" ", 1) for line in out.splitlines() if not line.startswith("typed"))
    assert {n: int(v) for n, v in got.items()} == want
    assert want["SR_APP_NOT_REGISTERED"] == -2130704882 == as_signed(0x8100060E)


@pytest.mark.parametrize("cross", ["x86_64-w64-mingw32-gcc", "i686-w64-mingw32-gcc"])
def test_messenger_header_values_hold_under_windows_headers(cross: str, tmp_path: Path) -> None:
    """The same _Static_asserts with the real <winsock2.h> (winerror.h's
    HRESULT, S_OK and E_FAIL) of mingw-w64."""
    cc = shutil.which(cross)
    if cc is None:
        pytest.skip(f"{cross} not installed")
    source, _ = _messenger_probe()
    (tmp_path / "probe.c").write_text(source)
    flags = ["-std=c11", "-Wall", "-Wextra", "-Werror", f"-I{_INCLUDE}", "-fsyntax-only"]
    result = subprocess.run([cc, *flags, str(tmp_path / "probe.c")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
