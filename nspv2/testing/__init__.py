"""Testing providers: :class:`SlotHarness` (one entry point at a time,
through the C function pointer) and the pytest plugin (:mod:`nspv2.testing.pytest_plugin`)."""

from .harness import GUARD_BYTES, NextCall, SlotCall, SlotHarness

__all__ = ["GUARD_BYTES", "NextCall", "SlotCall", "SlotHarness"]
