"""The NS_EMAIL installation blob: InstallationBlob values and the validator."""

from __future__ import annotations

import ctypes
import doctest
import struct
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nspv2 import NS, Host, Provider, QuerySet, Session
from nspv2.examples.email import EMAIL_PROVIDER_ID, EmailDirectory
from nspv2.sdk import nsemail
from nspv2.sdk.guiddef import GUID
from nspv2.sdk.nsemail import (
    NAPI_DOMAIN_DESCRIPTION_BLOB,
    NAPI_PROVIDER_INSTALLATION_BLOB,
    NAPI_PROVIDER_LEVEL,
    NAPI_PROVIDER_TYPE,
    BlobError,
    DomainDescription,
    InstallationBlob,
    installation_blob_problems,
)

HEADER = struct.Struct("<5I")
DOMAIN = struct.Struct("<4I")


def test_module_examples() -> None:
    assert doctest.testmod(nsemail).failed == 0


def test_pack_lays_out_the_header_structures() -> None:
    blob = InstallationBlob(
        NAPI_PROVIDER_TYPE.ProviderType_Service,
        wildcard=True,
        domains=[
            "example.com",
            DomainDescription("example.org", NAPI_PROVIDER_LEVEL.ProviderLevel_Secondary),
        ],
    )
    data = blob.pack()
    header = NAPI_PROVIDER_INSTALLATION_BLOB.from_buffer_copy(data)
    assert (header.dwVersion, header.dwProviderType, header.fSupportsWildCard) == (1, 2, 1)
    assert (header.cDomains, header.OffsetFirstDomain) == (2, 20)
    first = NAPI_DOMAIN_DESCRIPTION_BLOB.from_buffer_copy(data, header.OffsetFirstDomain)
    second = NAPI_DOMAIN_DESCRIPTION_BLOB.from_buffer_copy(data, first.OffsetNextDomainDescription)
    assert (first.AuthLevel, second.AuthLevel) == (2, 1)
    assert second.OffsetNextDomainDescription == 0
    for desc, name in ((first, "example.com"), (second, "example.org")):
        assert desc.cchDomainName == len(name)  # the NUL is not counted
        at = desc.OffsetThisDomainName
        assert data[at : at + 2 * len(name) + 2] == name.encode("utf-16-le") + b"\0\0"
    assert len(data) % 4 == 0
    assert installation_blob_problems(data) == []
    assert InstallationBlob.parse(data) == blob
    assert blob.problems() == []


def test_a_blob_without_domains() -> None:
    data = InstallationBlob(wildcard=True).pack()
    assert data == HEADER.pack(1, 1, 1, 0, 0)
    assert installation_blob_problems(data) == []


def blob(
    *domains: tuple[int, int, int, int],
    version: int = 1,
    ptype: int = 1,
    count: int | None = None,
    first: int = 20,
    tail: bytes = b"",
) -> bytes:
    """A hand-made blob: header, the given descriptions at 20, 36..., then ``tail``."""
    n = len(domains) if count is None else count
    return (
        HEADER.pack(version, ptype, 0, n, first if domains or count is not None else 0)
        + b"".join(DOMAIN.pack(*d) for d in domains)
        + tail
    )


NAME = "example.com".encode("utf-16-le") + b"\0\0"  # 24 bytes


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (blob(version=2), "dwVersion is 2, not 1"),
        (blob(ptype=0), "dwProviderType is 0, not 1 (application) or 2 (service)"),
        (blob(ptype=3), "dwProviderType is 3"),
        (blob((3, 11, 0, 36), tail=NAME), "domain #1: AuthLevel 3 is not 0, 1 or 2"),
        (
            b"\1\0\0\0" * 4,
            "the blob is 16 bytes, shorter than NAPI_PROVIDER_INSTALLATION_BLOB (20)",
        ),
        (
            blob((2, 11, 0, 40), first=22, tail=bytes(2) + NAME),
            "domain #1 at offset 22 (OffsetFirstDomain): offset 22 is not a multiple of 4",
        ),
        (
            blob((2, 11, 0, 37), tail=NAME),
            "domain #1: OffsetThisDomainName 37 is not a multiple of 2",
        ),
        (
            blob((2, 11, 0, 36), first=400, tail=NAME),
            "domain #1 at offset 400 (OffsetFirstDomain): ends past the blob",
        ),
        (blob((2, 11, 0, 36), first=4, tail=NAME), "offset 4 overlaps the 20-byte header"),
        (
            blob((2, 11, 0, 8), tail=NAME),
            "domain #1: OffsetThisDomainName 8 overlaps the 20-byte header",
        ),
        (
            blob((2, 11, 0, 60), tail=NAME),
            "domain #1: its name (11 characters at offset 60) ends past the blob (60 bytes)",
        ),
        (
            blob((2, 11, 20, 36), tail=NAME),
            "domain #1, the last of cDomains 1: OffsetNextDomainDescription is 20, not 0",
        ),
        (
            blob((2, 11, 0, 36), count=2, tail=NAME),
            "cDomains is 2 but the chain ends after 1 domain(s)",
        ),
        (
            blob((2, 11, 20, 36), count=3, tail=NAME),
            "domain #2 at offset 20 (OffsetNextDomainDescription of domain #1): a loop, back to domain #1",
        ),
        (
            blob((2, 11, 100, 36), count=2, tail=NAME),
            "domain #2 at offset 100 (OffsetNextDomainDescription of domain #1): ends past the blob",
        ),
        (
            blob((2, 12, 0, 36), tail=NAME),
            "domain #1: cchDomainName is 12 but the name ends after 11 characters",
        ),
        (
            blob((2, 10, 0, 36), tail=NAME),
            "domain #1: cchDomainName is 10 but the name goes on (no NUL after 10 characters)",
        ),
        (blob((2, 0, 0, 36), tail=NAME), "domain #1: cchDomainName is 0 (an empty name)"),
        (
            blob(first=20, count=0) + DOMAIN.pack(2, 11, 0, 36) + NAME,
            "cDomains is 0 but OffsetFirstDomain is 20, not 0",
        ),
        (HEADER.pack(1, 1, 0, 1, 0), "cDomains is 1 but OffsetFirstDomain is 0"),
    ],
    ids=lambda value: value if isinstance(value, str) else "",
)
def test_each_rule_is_named(data: bytes, expected: str) -> None:
    problems = installation_blob_problems(data)
    assert any(expected in p for p in problems), problems
    with pytest.raises(BlobError) as caught:
        InstallationBlob.parse(data)
    assert caught.value.problems == problems


def test_the_cases_above_are_good_without_their_fault() -> None:
    # the hand-made blob the cases start from passes: each case fails by its fault
    assert installation_blob_problems(blob((2, 11, 0, 36), tail=NAME)) == []
    assert InstallationBlob.parse(blob((2, 11, 0, 36), tail=NAME)).domains == (
        DomainDescription("example.com"),
    )


def test_a_name_without_terminator_at_the_end_is_accepted() -> None:
    # nsemail.h: NUL-termination is recommended, not required
    data = blob((2, 2, 0, 36), tail="ab".encode("utf-16-le"))
    assert installation_blob_problems(data) == []


def test_several_faults_are_all_named() -> None:
    data = blob((7, 11, 0, 37), version=0, ptype=9, tail=NAME)
    problems = installation_blob_problems(data)
    assert len(problems) == 4, problems


def test_value_problems() -> None:
    value = InstallationBlob(
        provider_type=5, domains=[DomainDescription("", 1), DomainDescription("a\0b", 9)]
    )
    problems = value.problems()
    assert "a domain with an empty name" in problems
    assert "'a\\x00b': AuthLevel 9 is not 0, 1 or 2" in problems
    assert "'a\\x00b': a NUL in the name" in problems
    assert any("dwProviderType is 5" in p for p in problems)


domain_names = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"), min_size=1, max_size=20
)


@given(
    st.sampled_from([1, 2]),
    st.booleans(),
    st.lists(st.tuples(domain_names, st.sampled_from([0, 1, 2])), max_size=6),
)
def test_any_good_value_packs_to_a_good_blob(
    ptype: int, wildcard: bool, domains: list[tuple[str, int]]
) -> None:
    value = InstallationBlob(
        ptype, wildcard=wildcard, domains=[DomainDescription(n, lv) for n, lv in domains]
    )
    data = value.pack()
    assert installation_blob_problems(data) == []
    assert InstallationBlob.parse(data) == value


@given(st.binary(max_size=200))
def test_any_bytes_give_problems_or_a_value(data: bytes) -> None:
    try:
        value = InstallationBlob.parse(data)
    except BlobError as exc:
        assert exc.problems
    else:
        assert InstallationBlob.parse(value.pack()) == value


def test_layout_matches_the_ctypes_mirrors() -> None:
    assert ctypes.sizeof(NAPI_PROVIDER_INSTALLATION_BLOB) == HEADER.size
    assert ctypes.sizeof(NAPI_DOMAIN_DESCRIPTION_BLOB) == DOMAIN.size


# -- Host.advertise installs a Python provider with its install_blob ------------------


def _installed(host: Host, pid: uuid.UUID) -> tuple[int, int, bytes]:
    """nspv2_host_installed: (namespace, has_blob, blob) the host recorded."""
    lib = host.winsock.library
    try:
        installed = lib.nspv2_host_installed
    except AttributeError:
        pytest.skip("this host library has no nspv2_host_installed")
    installed.restype = ctypes.c_int
    installed.argtypes = [ctypes.c_void_p] * 5
    guid = GUID.from_uuid(pid)
    ns, has, size = ctypes.c_uint32(), ctypes.c_uint32(), ctypes.c_uint32(4096)
    data = (ctypes.c_uint8 * 4096)()
    rc = installed(
        ctypes.addressof(guid),
        ctypes.addressof(ns),
        ctypes.addressof(has),
        ctypes.addressof(data),
        ctypes.addressof(size),
    )
    assert rc == 0
    return ns.value, has.value, bytes(data[: size.value])


def test_host_installs_the_example_with_its_blob() -> None:
    with Host(auto_install=True) as host:
        host.advertise(EmailDirectory())
        ns, has, data = _installed(host, EMAIL_PROVIDER_ID)
    assert (ns, has) == (NS.NS_EMAIL, 1)
    assert data == EmailDirectory.install_blob
    assert InstallationBlob.parse(data).domains == (
        DomainDescription("example.com"),
        DomainDescription("example.org"),
    )


class NoBlob(Provider):
    provider_id = uuid.UUID("aaaaaaaa-0000-4000-8000-0000000000b0")

    def lookup(self, session: Session, restrictions: QuerySet, flags: int) -> list[QuerySet]:
        return []


def test_host_installs_without_a_blob_by_default() -> None:
    assert NoBlob.install_blob is None
    with Host(auto_install=True) as host:
        host.advertise(NoBlob())
        _ns, has, data = _installed(host, NoBlob.provider_id)
    assert (has, data) == (0, b"")
