"""Routine: the raw table, its stubs and its exception guard, called through C pointers."""

from __future__ import annotations

import ctypes
import logging
from typing import Any

import pytest

from nspv2 import NO_ERROR, SOCKET_ERROR, Routine, RoutineClosedError, WinsockError, WSAError
from nspv2.provider.queryset import QuerySet
from nspv2.provider.routine import FALLBACK_ERROR, code_for_exception
from nspv2.sdk.wintypes import LPVOID
from nspv2.sdk.ws2spi import NSPV2_ROUTINE, NSPV2_SLOTS, PROTOTYPES, Prototype
from nspv2.testing import SlotHarness


def ok_int(*_a: Any) -> int:
    return NO_ERROR


def ok_async(h: int, *_a: Any) -> None:
    pass


def minimal(**extra: Any) -> Routine:
    kw: dict[str, Any] = {"begin": ok_int, "next_ex": ok_async, "end": ok_int}
    kw.update(extra)
    return Routine(**kw)


@pytest.mark.parametrize("missing", ["begin", "next_ex", "end"])
def test_required_slots(missing: str) -> None:
    kw: dict[str, Any] = {"begin": ok_int, "next_ex": ok_async, "end": ok_int}
    del kw[missing]
    with pytest.raises(ValueError, match="Winsock refuses to advertise"):
        Routine(**kw)


def test_not_callable_is_refused() -> None:
    with pytest.raises(TypeError, match="startup must be callable"):
        minimal(startup=42)


def test_table_header_and_no_null_slot() -> None:
    with minimal() as r:
        t = r.table
        assert t.cbSize == ctypes.sizeof(NSPV2_ROUTINE)
        assert (t.dwMajorVersion, t.dwMinorVersion) == (1, 1)
        for slot in NSPV2_SLOTS:
            assert r.slot_address(slot) != 0
    with Routine(begin=ok_int, next_ex=ok_async, end=ok_int, version=(2, 7)) as r:
        assert (r.table.dwMajorVersion, r.table.dwMinorVersion) == (2, 7)


def test_stubs_fail_with_wsaeopnotsupp(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, "nspv2")
    with minimal() as r, SlotHarness(r) as h:
        startup = h.startup()
        assert (startup.returned, startup.last_error) == (SOCKET_ERROR, WSAError.WSAEOPNOTSUPP)
        cleanup = h.cleanup(1234)
        assert (cleanup.returned, cleanup.last_error) == (SOCKET_ERROR, WSAError.WSAEOPNOTSUPP)
        assert h.set_service(1, None, 0).completion == WSAError.WSAEOPNOTSUPP
        assert h.rundown(1).returned is None
        assert "NSPv2ClientSessionRundown: not implemented" in caplog.text


def test_raw_callables_receive_ctypes_arguments() -> None:
    seen: dict[str, Any] = {}

    def startup(guid: Any, pp: Any) -> int:
        seen["types"] = (type(guid).__name__, type(pp).__name__)
        seen["guid"] = guid.contents.to_uuid()
        pp[0] = 0xABC
        return NO_ERROR

    import uuid

    pid = uuid.UUID("0d2b6c7a-9a8e-4d1e-8b55-8f5f3b1e2a10")
    with minimal(startup=startup) as r, SlotHarness(r, provider_id=pid) as h:
        call = h.startup()
    assert call.returned == NO_ERROR and call.value == 0xABC
    assert seen["types"] == ("LP_GUID", "LP_c_void_p")
    assert seen["guid"] == pid


class Weird(Exception):
    def __str__(self) -> str:
        raise RuntimeError("even str() fails")


EXCEPTIONS: list[tuple[BaseException, int]] = [
    (WinsockError(WSAError.WSASERVICE_NOT_FOUND), WSAError.WSASERVICE_NOT_FOUND),
    (WinsockError(4242), 4242),
    (MemoryError(), WSAError.WSA_NOT_ENOUGH_MEMORY),
    (ValueError("boom"), FALLBACK_ERROR),
    (KeyError("k"), FALLBACK_ERROR),
    (RecursionError(), FALLBACK_ERROR),
    (KeyboardInterrupt(), FALLBACK_ERROR),
    (SystemExit(3), FALLBACK_ERROR),
    (Weird(), FALLBACK_ERROR),
]


def raiser(exc: BaseException) -> Any:
    def fn(*_a: Any) -> Any:
        raise exc

    return fn


@pytest.mark.parametrize("exc, code", EXCEPTIONS, ids=lambda v: type(v).__name__)
def test_guard_on_every_slot(
    exc: BaseException, code: int, caplog: pytest.LogCaptureFixture
) -> None:
    """No exception of any kind reaches C (the autouse fixture watches
    sys.unraisablehook); each slot fails with the documented code."""
    f = raiser(exc)
    with (
        Routine(
            startup=f,
            cleanup=f,
            begin=f,
            next_ex=f,
            end=f,
            set_service_ex=f,
            client_session_rundown=f,
        ) as r,
        SlotHarness(r) as h,
    ):
        for call in (h.startup(), h.cleanup(1), h.begin(1, None), h.end(1)):
            assert call.returned == SOCKET_ERROR, call
            assert call.last_error == code, call
        assert h.next(1).completion == code
        assert h.set_service(1, None, 0).completion == code
        assert h.rundown(1).returned is None
    assert code_for_exception(exc) == code
    if not isinstance(exc, WinsockError):
        assert "Traceback" in caplog.text or "raised" in caplog.text


def test_int_slot_returning_garbage_fails_cleanly() -> None:
    with (
        minimal(startup=lambda *a: "not an int", cleanup=lambda *a: None) as r,
        SlotHarness(r) as h,
    ):
        bad = h.startup()
        assert (bad.returned, bad.last_error) == (SOCKET_ERROR, FALLBACK_ERROR)
        assert h.cleanup(1).returned == NO_ERROR  # None means NO_ERROR


def test_async_slot_completing_then_raising_is_logged_not_doubled(
    caplog: pytest.LogCaptureFixture,
) -> None:
    holder: dict[str, Any] = {}

    def next_ex(h: int, *_a: Any) -> None:
        holder["routine"].channel_now().complete(h, NO_ERROR)
        raise ValueError("after completing")

    with minimal(next_ex=next_ex) as r, SlotHarness(r) as h:
        holder["routine"] = r
        assert h.next(1).completion == NO_ERROR
        assert h.channel.refused == 1
    assert "after an exception returned" in caplog.text


def test_closed_table_is_unusable_and_late_calls_are_refused() -> None:
    r = minimal(startup=ok_int)
    h = SlotHarness(r)
    fn = h.function("NSPv2Startup")  # a C pointer C might still hold
    r.close()
    r.close()  # idempotent
    assert r.closed
    with pytest.raises(RoutineClosedError, match="closed"):
        _ = r.table
    with pytest.raises(RoutineClosedError):
        r.__enter__()
    arg = ctypes.c_void_p()
    h.channel.set_last_error(0)
    assert fn(None, ctypes.byref(arg)) == SOCKET_ERROR
    assert h.channel.get_last_error() == WSAError.WSAEINVALIDPROVIDER
    assert "closed" in repr(r)


def test_int_pointers_mode_passes_addresses() -> None:
    got: list[Any] = []

    def begin(pid: Any, qs: Any, flags: int, arg: Any, ph: Any) -> int:
        got.extend([type(pid), type(qs), flags, arg, type(ph)])
        ctypes.c_void_p.from_address(ph).value = 77
        return NO_ERROR

    with (
        Routine(begin=begin, next_ex=ok_async, end=ok_int, pointers="int") as r,
        SlotHarness(r) as h,
    ):
        call = h.begin(5, None, 0x10)
    assert call.value == 77
    assert got == [int, type(None), 0x10, 5, int]
    with pytest.raises(ValueError, match="pointers"):
        Routine(begin=ok_int, next_ex=ok_async, end=ok_int, pointers="bytes")  # type: ignore[arg-type]


def _is_pointer_in_c(ctype: str) -> bool:
    """Pointer-ness read from the C spelling of a parameter, not from ctypes."""
    return ctype.endswith("*") or ctype.startswith("LP") or ctype == "HANDLE"


@pytest.mark.parametrize("proto", PROTOTYPES, ids=lambda p: p.slot)
def test_address_prototypes_are_derived_from_the_sdk_ones(proto: Prototype) -> None:
    derived = proto.address_functype
    assert derived._restype_ is proto.functype._restype_
    assert len(derived._argtypes_) == proto.argcount
    for (ctype, name), sdk, mine in zip(
        proto.params, proto.functype._argtypes_, derived._argtypes_, strict=True
    ):
        if _is_pointer_in_c(ctype):
            assert mine is LPVOID, name
        else:
            assert mine is sdk, name
        assert ctypes.sizeof(mine) == ctypes.sizeof(sdk), name


def test_int_pointers_mode_passes_every_pointer_as_an_integer() -> None:
    """Every slot, called through its C pointer: pointers and handles arrive as int."""
    seen: dict[str, tuple[Any, ...]] = {}

    def record(slot: str, result: Any) -> Any:
        def fn(*args: Any) -> Any:
            seen[slot] = args
            if slot == "NSPv2Startup":
                ctypes.c_void_p.from_address(args[1]).value = 5
            return result

        return fn

    def completes(slot: str) -> Any:
        def fn(h_async: int, *args: Any) -> None:
            seen[slot] = (h_async, *args)
            r.channel_now().complete(h_async, NO_ERROR)

        return fn

    r = Routine(
        startup=record("NSPv2Startup", NO_ERROR),
        cleanup=record("NSPv2Cleanup", NO_ERROR),
        begin=record("NSPv2LookupServiceBegin", NO_ERROR),
        next_ex=completes("NSPv2LookupServiceNextEx"),
        end=record("NSPv2LookupServiceEnd", NO_ERROR),
        set_service_ex=completes("NSPv2SetServiceEx"),
        client_session_rundown=record("NSPv2ClientSessionRundown", None),
        pointers="int",
    )
    with r, SlotHarness(r) as h:
        token = h.startup().value
        assert token == 5
        h.begin(token, QuerySet("a@example.com"), 0x10)
        h.next(9)
        h.end(9)
        h.set_service(token, QuerySet("a@example.com"), 1)
        h.cleanup(token)
        h.rundown(token)
    assert set(seen) == set(NSPV2_SLOTS)
    for proto in PROTOTYPES:
        args = seen[proto.slot]
        assert len(args) == proto.argcount
        for (_ctype, name), value in zip(proto.params, args, strict=True):
            assert type(value) is int, f"{proto.slot} {name}: {value!r}"
