"""The namespace catalog through the native host's C functions
(WSCInstallNameSpaceEx, WSCUnInstallNameSpace, WSCEnableNSProvider,
WSAEnumNameSpaceProvidersExW, nspv2_catalog_*, nspv2_email_blob_check),
bound with ctypes by :mod:`nspv2.host.catalog`.

Every test has its own catalog file (NSPV2_CATALOG, conftest's
``catalog_path``); the processes started here inherit it. The crash tests
kill installer processes with SIGKILL while they are half-way through
writing (NSPV2_TEST_CATALOG_PAUSE_MS holds a writer after half of the
temporary file) and read the catalog back.
"""

from __future__ import annotations

import ctypes
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nspv2.host.catalog import MEMORY, Catalog, CatalogEntry, blob_check, use_catalog
from nspv2.host.winsock import load_native_host
from nspv2.provider.errors import WinsockError
from nspv2.sdk.guiddef import GUID
from nspv2.sdk.nsemail import DomainDescription, InstallationBlob, installation_blob_problems
from nspv2.sdk.winsock2 import NS, SOCKET_ERROR, WSANAMESPACE_INFOEXW, WSAError

NO_RECOVERY = int(WSAError.WSANO_RECOVERY)
EINVAL = int(WSAError.WSAEINVAL)
EFAULT = int(WSAError.WSAEFAULT)


def pid(n: int) -> uuid.UUID:
    return uuid.UUID(f"aaaaaaaa-0000-4000-8000-{n:012x}")


def email_blob(*domains: str, level: int = 2, wildcard: bool = False) -> bytes:
    return InstallationBlob(level=level, wildcard=wildcard, domains=domains).pack()


# -- WSAEnumNameSpaceProvidersExW ------------------------------------------------------


def test_enumeration_at_every_buffer_size_from_0_to_what_it_needs(catalog_path: Path) -> None:
    """Each size short of the need: SOCKET_ERROR, WSAEFAULT, the need in
    *lpdwBufferLength and not a byte written past the size given; the need
    exactly: every entry, its strings and blobs inside the buffer."""
    catalog = Catalog()
    catalog.install(pid(1), NS.NS_EMAIL, "mail", email_blob("example.com", "example.org"))
    catalog.install(pid(2), NS.NS_DNS, "dns ✉ 𝄞", b"\x01\x02\x03")
    catalog.install(pid(3), NS.NS_EMAIL, None, email_blob(wildcard=True))
    catalog.enable(pid(2), False)
    enum = catalog.functions.WSAEnumNameSpaceProvidersExW
    winsock = load_native_host()

    length = ctypes.c_uint32(0)
    assert enum(ctypes.byref(length), None) == SOCKET_ERROR
    assert winsock.last_error() == EFAULT
    needed = length.value
    assert needed >= 3 * ctypes.sizeof(WSANAMESPACE_INFOEXW)
    assert enum(None, None) == SOCKET_ERROR and winsock.last_error() == EFAULT

    guard = 64
    for size in range(needed + 1):
        room = (ctypes.c_uint8 * (size + guard))(*([0xA5] * (size + guard)))
        length.value = size
        rc = enum(ctypes.byref(length), ctypes.cast(room, ctypes.POINTER(WSANAMESPACE_INFOEXW)))
        assert bytes(room)[size:] == b"\xa5" * guard, f"written past {size} bytes"
        if size < needed:
            assert rc == SOCKET_ERROR, size
            assert winsock.last_error() == EFAULT and length.value == needed, size
            continue
        assert rc == 3
        base = ctypes.addressof(room)
        infos = ctypes.cast(room, ctypes.POINTER(WSANAMESPACE_INFOEXW))
        for i in range(3):
            ident = ctypes.cast(infos[i].lpszIdentifier, ctypes.c_void_p).value
            assert ident is not None and base <= ident < base + needed
            data = ctypes.cast(infos[i].ProviderSpecific.pBlobData, ctypes.c_void_p).value
            assert data is not None
            assert base <= data and data + infos[i].ProviderSpecific.cbSize <= base + needed
    entries = catalog.entries()
    assert [e.provider_id for e in entries] == [pid(1), pid(2), pid(3)]
    assert [e.identifier for e in entries] == ["mail", "dns ✉ 𝄞", ""]
    assert [e.active for e in entries] == [True, False, True]


def test_an_empty_catalog_enumerates_as_none(catalog_path: Path) -> None:
    assert Catalog().entries() == []
    assert not catalog_path.exists()  # reading creates nothing
    assert Catalog().location == str(catalog_path)


# -- install, uninstall, enable ----------------------------------------------------------


def test_round_trip_of_identifiers_blobs_versions(catalog_path: Path) -> None:
    catalog = Catalog()
    long_name = "x" * 1024
    cases = [
        (pid(1), NS.NS_EMAIL, "nspv2 e-mail presence", email_blob("example.com"), 1),
        (pid(2), NS.NS_EMAIL, "secondary", email_blob("example.com", level=1), 7),
        (pid(3), NS.NS_DNS, "éè ✉ 𝄞 \u200b", bytes(range(256)), 0xFFFFFFFF),
        (pid(4), 12345, long_name, None, 0),
        (pid(5), NS.NS_NLA, "", b"\0" * 65536, 2),
    ]
    for provider_id, ns, ident, blob, version in cases:
        catalog.install(provider_id, ns, ident, blob, version)
    expected = [CatalogEntry(p, int(ns), True, v, ident, blob) for p, ns, ident, blob, v in cases]
    assert catalog.entries() == expected
    # another process reads the same file back the same way
    code = (
        "from nspv2.host.catalog import Catalog\n"
        "for e in Catalog().entries():\n"
        "    print(e.provider_id, e.namespace, int(e.active), e.version, "
        "len(e.identifier), None if e.blob is None else e.blob.hex()[:40])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    lines = out.stdout.splitlines()
    assert len(lines) == len(cases)
    assert lines[3] == f"{pid(4)} 12345 1 0 1024 None"
    assert catalog.find(pid(2)) == expected[1]
    assert catalog.find(pid(9)) is None
    parsed = expected[1].install_blob
    assert parsed is not None and parsed.domains == (DomainDescription("example.com", 1),)
    assert expected[2].install_blob is None  # not NS_EMAIL


def test_a_zero_length_blob_and_no_identifier_read_back_as_none_and_empty(
    catalog_path: Path,
) -> None:
    catalog = Catalog()
    catalog.install(pid(1), NS.NS_DNS, None, b"")
    [entry] = catalog.entries()
    assert entry.identifier == "" and entry.blob is None  # pBlobData NULL, cbSize 0
    assert "provider aaaaaaaa-0000-4000-8000-000000000001 12 1 1 - =\n" in catalog_path.read_text()


def test_installing_twice_is_wsano_recovery_and_changes_nothing(catalog_path: Path) -> None:
    catalog = Catalog()
    catalog.install(pid(1), NS.NS_EMAIL, "first", email_blob("example.com"))
    before = catalog_path.read_bytes()
    with pytest.raises(WinsockError) as raised:
        catalog.install(pid(1), NS.NS_DNS, "second")
    assert raised.value.code == NO_RECOVERY
    assert "WSCInstallNameSpaceEx" in str(raised.value) and "installed" in str(raised.value)
    assert catalog_path.read_bytes() == before
    assert [e.identifier for e in catalog.entries()] == ["first"]


def test_uninstall_and_enable_errors(catalog_path: Path) -> None:
    catalog = Catalog()
    with pytest.raises(WinsockError) as raised:
        catalog.uninstall(pid(1))
    assert raised.value.code == EINVAL
    with pytest.raises(WinsockError) as raised:
        catalog.enable(pid(1), False)
    assert raised.value.code == EINVAL
    f = catalog.functions
    winsock = load_native_host()
    assert f.WSCUnInstallNameSpace(None) == SOCKET_ERROR and winsock.last_error() == EFAULT
    assert f.WSCEnableNSProvider(None, 1) == SOCKET_ERROR and winsock.last_error() == EFAULT
    assert f.WSCInstallNameSpaceEx(None, None, 12, 1, None, None) == SOCKET_ERROR
    assert winsock.last_error() == EFAULT

    catalog.install(pid(1), NS.NS_DNS, "dns")
    written = catalog_path.stat().st_mtime_ns
    catalog.enable(pid(1), True)  # already enabled: no write
    assert catalog_path.stat().st_mtime_ns == written
    catalog.enable(pid(1), False)
    assert catalog.find(pid(1)) == CatalogEntry(pid(1), 12, False, 1, "dns", None)
    catalog.uninstall(pid(1))
    assert catalog.entries() == []
    with pytest.raises(WinsockError) as raised:
        catalog.uninstall(pid(1))
    assert raised.value.code == EINVAL


def test_what_the_catalog_refuses_to_install(catalog_path: Path) -> None:
    catalog = Catalog()
    bad = email_blob("example.com")[:-6]
    for args in (
        (pid(1), NS.NS_EMAIL, "bad blob", bad),
        (pid(2), NS.NS_DNS, "x" * 1025, None),
        (pid(3), NS.NS_DNS, "big", b"\0" * 65537),
    ):
        with pytest.raises(WinsockError) as raised:
            catalog.install(*args)
        assert raised.value.code == EINVAL, args
    assert catalog.entries() == []
    # cbSize > 0 with a NULL pBlobData
    from nspv2.sdk.winsock2 import BLOB

    guid = GUID.from_uuid(pid(4))
    empty = BLOB(4, None)
    rc = catalog.functions.WSCInstallNameSpaceEx(
        None, None, 12, 1, ctypes.byref(guid), ctypes.byref(empty)
    )
    assert rc == SOCKET_ERROR and load_native_host().last_error() == EINVAL


def test_install_refuses_what_c_would_wrap_or_cut(catalog_path: Path) -> None:
    """A namespace or version outside a DWORD would wrap, an identifier with
    a NUL would be cut there: ValueError before any call."""
    catalog = Catalog()
    for kwargs in (
        {"namespace": 2**32 + 12},
        {"namespace": -1},
        {"version": -1},
        {"version": 2**32},
        {"identifier": "ab\0cd"},
    ):
        args: dict[str, object] = {"namespace": NS.NS_DNS, "identifier": "x", "version": 1}
        args.update(kwargs)
        with pytest.raises(ValueError, match=r"outside|NUL"):
            catalog.install(pid(1), **args)  # type: ignore[arg-type]
    assert catalog.entries() == [] and not catalog_path.exists()
    catalog.install(pid(1), 0xFFFFFFFF, "x", version=0xFFFFFFFF)  # the edges are fine
    [entry] = catalog.entries()
    assert (entry.namespace, entry.version) == (0xFFFFFFFF, 0xFFFFFFFF)


def test_a_corrupt_file_names_its_line_and_is_never_overwritten(catalog_path: Path) -> None:
    good = InstallationBlob(domains=["example.com"]).pack().hex()
    text = (
        "nspv2-catalog 1\n"
        f"provider {pid(1)} 37 1 1 - {good}\n"
        "# a comment\n"
        f"provider {pid(2)} 12 1 2 - -\n"
        "end 2\n"
    )
    catalog_path.write_text(text)
    catalog = Catalog()
    for call in (catalog.entries, lambda: catalog.install(pid(3), 12, "x")):
        with pytest.raises(WinsockError) as raised:
            call()
        assert raised.value.code == NO_RECOVERY
        assert "line 4" in str(raised.value) and str(catalog_path) in str(raised.value)
    assert catalog_path.read_text() == text
    for corrupt in (
        "nspv2-catalog 1\nprovider nonsense\nend 1\n",  # too few fields
        f"nspv2-catalog 1\nprovider {pid(1)} 12 1 1 - -\n",  # no end line: cut short
        "nspv2-catalog 2\nend 0\n",  # another format
        "",  # empty file
    ):
        catalog_path.write_text(corrupt)
        with pytest.raises(WinsockError) as raised:
            catalog.entries()
        assert raised.value.code == NO_RECOVERY, corrupt


def test_use_catalog_chooses_a_file_or_memory(tmp_path: Path, catalog_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere" / "catalog"
    try:
        use_catalog(elsewhere)
        assert Catalog().location == str(elsewhere)
        Catalog().install(pid(1), NS.NS_DNS, "there")
        assert elsewhere.is_file() and not catalog_path.exists()
        use_catalog(MEMORY)
        assert Catalog().location == MEMORY and Catalog().entries() == []
        Catalog().install(pid(2), NS.NS_DNS, "in memory")
        assert [e.identifier for e in Catalog().entries()] == ["in memory"]
        # the memory catalog lives as long as the process: leave it empty
        Catalog().uninstall(pid(2))
    finally:
        use_catalog(None)
    assert Catalog().location == str(catalog_path)
    assert Catalog().entries() == []
    with pytest.raises(ValueError, match="one catalog"):
        Catalog(wow64=True)


# -- crashes and concurrency --------------------------------------------------------------

#: A child installing (or uninstalling) one provider, saying when it starts.
CHILD = """
import sys, uuid
from nspv2.host.catalog import Catalog
op, n = sys.argv[1], int(sys.argv[2])
catalog = Catalog()
catalog.entries()  # host loaded, catalog read: the write is next
print("go", flush=True)
pid = uuid.UUID(f"aaaaaaaa-0000-4000-8000-{n:012x}")
if op == "install":
    catalog.install(pid, 12, f"provider {n} " + "x" * 200, bytes(range(256)) * 4)
else:
    catalog.uninstall(pid)
print("done", flush=True)
"""


def start_child(op: str, n: int, pause_ms: int) -> subprocess.Popen[str]:
    env = dict(os.environ, NSPV2_TEST_CATALOG_PAUSE_MS=str(pause_ms))
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, op, str(n)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def test_sigkill_of_installers_mid_write_never_corrupts_the_catalog(catalog_path: Path) -> None:
    """50 installer processes: most killed with SIGKILL while half of the new
    catalog is written (their temporary file is there to prove it), every
    fifth one left to finish. After each, the catalog reads back and holds
    exactly what the finished ones committed."""
    rng = random.Random(13)
    committed: list[uuid.UUID] = []
    killed_mid_write = 0
    iterations = 50
    Catalog().install(pid(0), 12, "before")
    committed.append(pid(0))
    for i in range(1, iterations + 1):
        finish = i % 5 == 0
        if committed and rng.random() < 0.4:
            op, n = "uninstall", int(str(rng.choice(committed))[-12:], 16)
        else:
            op, n = "install", 1000 + i
        child = start_child(op, n, 0 if finish else 400)
        assert child.stdout is not None
        assert child.stdout.readline() == "go\n", child.stderr and child.stderr.read()
        if finish:
            out = child.stdout.read()  # what readline has not buffered already
            _rest, err = child.communicate(timeout=60)
            assert child.returncode == 0 and out == "done\n", err
            if op == "install":
                committed.append(pid(n))
            else:
                committed.remove(pid(n))
        else:
            time.sleep(0.15)  # inside the 400 ms pause, after half the file
            tmp = catalog_path.with_name(f"{catalog_path.name}.tmp.{child.pid}")
            killed_mid_write += tmp.exists()
            os.kill(child.pid, signal.SIGKILL)
            child.communicate(timeout=60)
            assert child.returncode == -signal.SIGKILL
        assert [e.provider_id for e in Catalog().entries()] == committed, (i, op, n)
    # the window was hit (a loaded machine may miss a few)
    assert killed_mid_write >= iterations * 4 // 5 - 5, killed_mid_write
    # the next writer removes the dead writers' temporary files
    Catalog().install(pid(999), 12, "after")
    leftovers = [p.name for p in catalog_path.parent.iterdir() if ".tmp." in p.name]
    assert leftovers == []
    assert Catalog().entries()[-1].identifier == "after"


INSTALLER = """
import sys, time, uuid
from pathlib import Path
from nspv2.host.catalog import Catalog
first, count, start = int(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
catalog = Catalog()
while not start.exists():
    time.sleep(0.001)
for n in range(first, first + count):
    catalog.install(uuid.UUID(f"aaaaaaaa-0000-4000-8000-{n:012x}"), 12, f"p{n}")
"""


def test_concurrent_installers_serialize(tmp_path: Path, catalog_path: Path) -> None:
    """4 processes x 20 installs at once, each write held 2 ms half-way: a
    read-modify-write without the lock would lose installs."""
    processes, each = 4, 20
    start = tmp_path / "start"
    env = dict(os.environ, NSPV2_TEST_CATALOG_PAUSE_MS="2")
    children = [
        subprocess.Popen(
            [sys.executable, "-c", INSTALLER, str(100 * (k + 1)), str(each), str(start)],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        for k in range(processes)
    ]
    time.sleep(0.5)  # let them load the host
    start.touch()
    for child in children:
        _out, err = child.communicate(timeout=120)
        assert child.returncode == 0, err
    entries = Catalog().entries()
    wanted = {pid(100 * (k + 1) + j) for k in range(processes) for j in range(each)}
    assert len(entries) == processes * each
    assert {e.provider_id for e in entries} == wanted
    # each process's installs stay in its own order (appended one by one)
    for k in range(processes):
        mine = [e.provider_id for e in entries if e.provider_id.int % 2**48 // 100 == k + 1]
        assert mine == [pid(100 * (k + 1) + j) for j in range(each)]


# -- the blob validator: C and Python agree ------------------------------------------------

VALID = [
    email_blob("example.com"),
    email_blob("example.com", "example.org", level=1),
    email_blob(wildcard=True),
    InstallationBlob(2, domains=[DomainDescription("a", 0), DomainDescription("é.𝄞", 2)]).pack(),
]


def agree(data: bytes) -> None:
    python = installation_blob_problems(data)
    c = blob_check(data)
    assert (c is None) == (python == []), (data.hex(), c, python)


def test_the_c_blob_check_accepts_what_python_accepts() -> None:
    for data in VALID:
        assert blob_check(data) is None and installation_blob_problems(data) == []
    assert blob_check(b"") is not None
    assert "dwVersion" in (blob_check(b"\x02" + VALID[0][1:]) or "")


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    base=st.sampled_from(VALID),
    edits=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=4),
    cut=st.integers(0, 8),
    words=st.lists(
        st.tuples(st.integers(0, 10**6), st.sampled_from([0, 1, 2, 3, 4, 20, 0xFFFFFFFF])),
        max_size=2,
    ),
)
def test_c_and_python_agree_on_mutated_valid_blobs(
    base: bytes, edits: list[tuple[int, int]], cut: int, words: list[tuple[int, int]]
) -> None:
    data = bytearray(base)
    for at, value in edits:
        data[at % len(data)] = value
    for at, value in words:  # a whole DWORD field: counts, offsets, levels
        spot = (at % (len(data) // 4)) * 4
        data[spot : spot + 4] = value.to_bytes(4, "little")
    agree(bytes(data[: len(data) - cut]))


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=200))
def test_c_and_python_agree_on_random_bytes(data: bytes) -> None:
    agree(data)


# -- private_catalog: process-wide, blocks nested or overlapping across threads -------------


def test_private_catalog_blocks_overlapping_across_threads(
    tmp_path: Path, catalog_path: Path
) -> None:
    """t1's block (memory) ends while t2's (a file) is open: t2 keeps its
    catalog, and when t2's ends the catalog of before both comes back."""
    import threading

    from nspv2.tools.private_catalog import private_catalog

    theirs = tmp_path / "t2" / "catalog"
    seen: dict[str, str] = {}
    t1_in, t2_in, t1_out = threading.Event(), threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def t1() -> None:
        try:
            with private_catalog():
                t1_in.set()
                assert t2_in.wait(10)
            t1_out.set()
        except BaseException as exc:
            errors.append(exc)
            t1_out.set()

    def t2() -> None:
        try:
            assert t1_in.wait(10)
            with private_catalog(theirs):
                t2_in.set()
                assert t1_out.wait(10)
                seen["inside"] = Catalog().location
                Catalog().install(pid(9), NS.NS_DNS, "written by t2")
            seen["after"] = Catalog().location
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=t1), threading.Thread(target=t2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    try:
        assert errors == []
        assert seen == {"inside": str(theirs), "after": str(catalog_path)}
        assert str(pid(9)) in theirs.read_text() and not catalog_path.exists()
    finally:
        use_catalog(None)


def test_private_catalog_nested_blocks_restore_the_enclosing_one(
    tmp_path: Path, catalog_path: Path
) -> None:
    from nspv2.tools.private_catalog import private_catalog

    outer, inner = tmp_path / "outer", tmp_path / "inner"
    try:
        with private_catalog(outer):
            with private_catalog(inner):
                assert Catalog().location == str(inner)
                with private_catalog():
                    assert Catalog().location == MEMORY
                assert Catalog().location == str(inner)
            assert Catalog().location == str(outer)
        assert Catalog().location == str(catalog_path)
        use_catalog(outer)  # chosen in this process before the block: chosen again after
        with private_catalog():
            assert Catalog().location == MEMORY
        assert Catalog().location == str(outer)
    finally:
        use_catalog(None)
