"""The guarded arena of nspv2.tools.fuzz, skipped (with the reason) where
mprotect does not exist."""

from __future__ import annotations

import sys

import pytest

from nspv2.tools.fuzz import GuardedArena as _Arena


def GuardedArena(size: int) -> _Arena:
    if sys.platform == "win32":
        pytest.skip("guarded arenas use mprotect (POSIX only)")
    return _Arena(size)
