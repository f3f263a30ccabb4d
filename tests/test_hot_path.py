"""The scaffold's hot path keeps its contracts.

- Restrictions and reg_info are read completely during the call that
  receives them: a provider reading them later (a generator at NextEx, a
  copy kept in ``session.data``) sees the same values after the caller's
  buffer was overwritten, and under ASan the host's freed buffer is never
  read.
- A GUID is copied as bytes and built into a ``uuid.UUID`` on first access;
  the query set is still an ordinary, equal, hashable ``QuerySet``.
- Each slot of a plain Provider is one Python frame (guard and body
  together); a subclass wrapping ``_slot_callables`` still receives raising
  callables inside the table's guards.
- Tokens stay unique when taken from many threads at once.
"""

from __future__ import annotations

import ctypes
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from nspv2 import Provider, QuerySet, WinsockError, WSAError
from nspv2.provider.queryset import AfProtocol, CsAddr, SocketAddress, Version
from nspv2.provider.registry import Session, new_token
from nspv2.sdk.winsock2 import NO_ERROR, SOCKET_ERROR, WSAESETSERVICEOP, WSAQUERYSET2W
from nspv2.testing import SlotHarness

from .asan import AsanHost, asan_host, sanitizer_reports

__all__ = ["asan_host"]  # the fixture, imported for the test below

PID = uuid.UUID("6e737032-686f-7470-6174-680000000001")
CLASS_ID = uuid.UUID("6e737032-686f-7470-6174-6800000000c1")
FULL = QuerySet(
    "alice@example.com",
    version=Version(3),
    comment="a comment",
    provider_id=PID,
    context="ctx",
    protocols=(AfProtocol(2, 6),),
    query_string="q=1",
    cs_addrs=(CsAddr(None, SocketAddress.parse("192.0.2.1", 80)),),
    output_flags=4,
    blob=b"\x01\x02\x03",
)
SMALL = QuerySet("bob@example.com", provider_id=PID)


class Keeper(Provider):
    """Keeps what it was given and reads it at NextEx and later."""

    provider_id = PID

    def __init__(self) -> None:
        self.seen_at_next: list[QuerySet] = []
        self.registered: list[QuerySet] = []

    def lookup(self, session: Session, restrictions: QuerySet, flags: int) -> Iterator[QuerySet]:
        session.data["kept"] = restrictions
        return self._results(restrictions)

    def _results(self, restrictions: QuerySet) -> Iterator[QuerySet]:
        # Runs at the first NextEx, after Begin returned.
        self.seen_at_next.append(_copy(restrictions))
        yield QuerySet(restrictions.service_instance_name, comment="found")

    def set_service(
        self, session: Session, reg_info: QuerySet, operation: WSAESETSERVICEOP, flags: int
    ) -> None:
        self.registered.append(reg_info)


def _copy(qs: QuerySet) -> QuerySet:
    """A QuerySet built field by field from ``qs`` (reads every field)."""
    return QuerySet(
        qs.service_instance_name,
        qs.version,
        qs.comment,
        qs.namespace,
        qs.provider_id,
        qs.context,
        qs.protocols,
        qs.query_string,
        qs.cs_addrs,
        qs.output_flags,
        qs.blob,
        qs.service_class_id,
    )


@pytest.mark.parametrize("asked", [FULL, SMALL], ids=["every-field", "name-and-guid"])
def test_restrictions_read_after_begin_do_not_touch_the_callers_buffer(asked: QuerySet) -> None:
    provider = Keeper()
    with SlotHarness(provider) as h:
        token = h.startup().value
        buf = asked.to_buffer("2W")
        begin = h.begin(token, ctypes.addressof(buf))
        assert begin.code == NO_ERROR
        ctypes.memset(buf, 0, ctypes.sizeof(buf))  # the caller reuses its buffer
        del buf
        first = h.next(begin.value)
        assert first.completion == NO_ERROR and first.result is not None
        assert first.result.service_instance_name == asked.service_instance_name
        assert h.end(begin.value).code == NO_ERROR
        session = provider.registry.session(token)
        assert session is not None
        kept = session.data["kept"]
        assert h.cleanup(token).code == NO_ERROR
    assert provider.seen_at_next == [asked]
    assert _copy(kept) == asked and kept == asked and hash(kept) == hash(asked)
    assert type(kept) is QuerySet


def test_reg_info_read_after_set_service_does_not_touch_the_callers_buffer() -> None:
    provider = Keeper()
    with SlotHarness(provider) as h:
        token = h.startup().value
        for asked in (FULL, SMALL):
            buf = asked.to_buffer("2W")
            call = h.set_service(token, ctypes.addressof(buf), 0)
            assert call.completion == NO_ERROR
            ctypes.memset(buf, 0, ctypes.sizeof(buf))
        h.cleanup(token)
    assert [_copy(r) for r in provider.registered] == [FULL, SMALL]


def test_a_guid_is_built_on_first_access_from_bytes_copied_at_read() -> None:
    buf = QuerySet("x", provider_id=PID).to_buffer("2W")
    qs = QuerySet.from_address(ctypes.addressof(buf))
    assert "provider_id" not in vars(qs)  # not built yet: only its bytes
    ctypes.memset(buf, 0, ctypes.sizeof(buf))
    assert qs.provider_id == PID and vars(qs)["provider_id"] == PID
    w = QuerySet("y", provider_id=PID, service_class_id=CLASS_ID).to_buffer("W")
    wide = QuerySet.from_address(ctypes.addressof(w), "W")
    assert wide == QuerySet("y", provider_id=PID, service_class_id=CLASS_ID)
    assert QuerySet.provider_id is None  # the field's default, read on the class
    assert QuerySet("z").provider_id is None and QuerySet("z", provider_id=PID).provider_id == PID


def test_session_provider_id_and_data_are_made_on_first_access() -> None:
    provider = Keeper()
    with SlotHarness(provider) as h:
        token = h.startup().value
        session = provider.registry.session(token)
        assert session is not None
        assert session._data is None and type(session._pid) is bytes
        assert session.provider_id == uuid.UUID(bytes_le=bytes(h.guid))
        session.data["n"] = 1
        assert session.data == {"n": 1}
        h.cleanup(token)


def test_each_slot_of_a_plain_provider_is_one_frame() -> None:
    frames: list[str] = []

    class Framed(Keeper):
        def lookup(
            self, session: Session, restrictions: QuerySet, flags: int
        ) -> Iterator[QuerySet]:
            frames.append(sys._getframe(1).f_code.co_name)
            frames.append(sys._getframe(2).f_code.co_name)
            return iter(())

    with SlotHarness(Framed()) as h:
        token = h.startup().value
        assert h.begin(token, QuerySet("a")).code == NO_ERROR
    # lookup() <- the Begin slot <- the harness's call into C: no guard frame between.
    assert frames == ["begin", "_int_call"]


def test_wrapped_slot_callables_still_see_raising_callables() -> None:
    """The hook ``nspv2 demo`` uses: a wrapper sees a failure as the
    exception, and the call still fails with its code."""
    seen: list[tuple[str, object]] = []

    class Wrapped(Keeper):
        def _slot_callables(self) -> dict[str, Callable[..., Any]]:
            def wrap(key: str, fn: Callable[..., Any]) -> Callable[..., Any]:
                def wrapper(*args: Any) -> Any:
                    try:
                        result = fn(*args)
                    except WinsockError as exc:
                        seen.append((key, exc.code))
                        raise
                    seen.append((key, result))
                    return result

                return wrapper

            return {k: wrap(k, f) for k, f in super()._slot_callables().items()}

    with SlotHarness(Wrapped()) as h:
        token = h.startup().value
        bad = h.begin(token + 1, QuerySet("a"))
        assert (bad.returned, bad.last_error) == (SOCKET_ERROR, WSAError.WSAEINVAL)
        good = h.begin(token, QuerySet("a"))
        assert h.next(good.value).completion == NO_ERROR
        assert h.cleanup(token).code == NO_ERROR
    assert ("begin", WSAError.WSAEINVAL) in seen
    assert [k for k, _ in seen] == ["startup", "begin", "begin", "next_ex", "cleanup"]


def test_a_closed_table_refuses_every_fused_slot() -> None:
    """A late call through a closed table's own function pointers."""
    provider = Keeper()
    with SlotHarness(provider) as h:
        token = h.startup().value
        handle = h.begin(token, QuerySet("a")).value
        assert h.routine is not None
        fn = {slot: h.function(slot) for slot in h.routine.implemented}
        provider.close()
        channel = h.channel
        out = ctypes.c_void_p()
        query = QuerySet("a").to_buffer("2W")
        as_qs = ctypes.cast(query, ctypes.POINTER(WSAQUERYSET2W))
        int_calls = {
            "NSPv2Startup": (None, ctypes.byref(out)),
            "NSPv2Cleanup": (None, token),
            "NSPv2LookupServiceBegin": (None, as_qs, 0, token, ctypes.byref(out)),
            "NSPv2LookupServiceEnd": (handle,),
        }
        for slot, args in int_calls.items():
            channel.set_last_error(0)
            assert fn[slot](*args) == SOCKET_ERROR, slot
            assert channel.get_last_error() == WSAError.WSAEINVALIDPROVIDER, slot
        length = ctypes.c_uint32(256)
        result = ctypes.create_string_buffer(256)
        call = channel.new_call()
        out_qs = ctypes.cast(result, ctypes.POINTER(WSAQUERYSET2W))
        fn["NSPv2LookupServiceNextEx"](call, handle, 0, ctypes.byref(length), out_qs)
        assert channel.wait(call) == WSAError.WSAEINVALIDPROVIDER
        call = channel.new_call()
        fn["NSPv2SetServiceEx"](call, None, as_qs, 0, 0, token)
        assert channel.wait(call) == WSAError.WSAEINVALIDPROVIDER
        fn["NSPv2ClientSessionRundown"](None, token)  # ignored, logged


def test_tokens_stay_unique_across_threads() -> None:
    found: list[list[int]] = [[] for _ in range(8)]

    def take(out: list[int]) -> None:
        out.extend(new_token() for _ in range(20000))

    threads = [threading.Thread(target=take, args=(out,)) for out in found]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = [token for out in found for token in out]
    assert len(set(every)) == len(every) == 8 * 20000 and all(every)


def test_restrictions_kept_past_begin_under_asan(asan_host: AsanHost) -> None:
    """Through the native host, whose Begin buffer is freed once Begin
    returns: a generator reading the restrictions at NextEx and a provider
    reading the copy it kept after the lookup; ASan reports nothing."""
    code = f"""
import uuid
from nspv2 import Host, Provider, QuerySet
from nspv2.provider.queryset import CsAddr, SocketAddress, Version

PID = uuid.UUID("{PID}")

class Keeper(Provider):
    provider_id = PID

    def lookup(self, session, restrictions, flags):
        session.data.setdefault("kept", []).append(restrictions)
        return self.results(restrictions)

    def results(self, restrictions):
        yield QuerySet(restrictions.service_instance_name, comment=restrictions.comment,
                       context=restrictions.context, blob=restrictions.blob)

    def cleanup(self, session):
        for r in session.data["kept"]:
            print(r.service_instance_name, r.comment, r.context, r.provider_id,
                  r.version, r.cs_addrs[0].remote if r.cs_addrs else None, r.blob)

asked = [
    QuerySet("alice@example.com", comment="c1", context="x", version=Version(2),
             cs_addrs=(CsAddr(None, SocketAddress.parse("192.0.2.7", 9)),), blob=b"ab"),
    QuerySet("bob@example.com", provider_id=PID),
]
with Host(auto_install=True) as host:
    host.advertise(Keeper())
    with host.open_session() as client:
        for qs in asked:
            got = client.lookup(qs)
            print(got[0].service_instance_name, got[0].comment, got[0].context, got[0].blob)
"""
    proc = asan_host.run(code)
    output = proc.stdout + proc.stderr
    assert not sanitizer_reports(output), output[-4000:]
    assert proc.returncode == 0, output[-4000:]
    assert proc.stdout.splitlines() == [
        "alice@example.com c1 x b'ab'",
        "bob@example.com None None None",
        "alice@example.com c1 x None Version(version=2, how=<WSAECOMPARATOR.COMP_EQUAL: 0>)"
        " 192.0.2.7:9 b'ab'",
        f"bob@example.com None None {PID} None None None",
    ]
