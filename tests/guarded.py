"""A memory arena followed by an inaccessible page: a read past its end
crashes the process instead of going unnoticed."""

from __future__ import annotations

import ctypes
import mmap
import sys

import pytest

PAGE = mmap.PAGESIZE


class GuardedArena:
    """``size`` usable bytes ending exactly where a PROT_NONE page begins."""

    def __init__(self, size: int) -> None:
        if sys.platform == "win32":
            pytest.skip("guarded arenas use mprotect (POSIX only)")
        pages = (size + PAGE - 1) // PAGE + 1
        self._map = mmap.mmap(-1, pages * PAGE, prot=mmap.PROT_READ | mmap.PROT_WRITE)
        self._base = ctypes.addressof(ctypes.c_char.from_buffer(self._map))
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        guard = self._base + (pages - 1) * PAGE
        if libc.mprotect(guard, PAGE, 0) != 0:
            raise OSError(ctypes.get_errno(), "mprotect failed")
        self.end = guard
        self.start = guard - size
        self.size = size

    def write(self, offset: int, data: bytes) -> int:
        assert 0 <= offset and offset + len(data) <= self.size
        ctypes.memmove(self.start + offset, data, len(data))
        return self.start + offset
