"""Keep freed memory for reuse: fewer page faults in the tile loop on Linux (glibc).

Each tile's forward pass allocates and frees the same large activations again and again (25 MB
tensors for a 1024² tile of the bundled restorer). glibc's ``malloc`` hands blocks above its
mmap threshold (128 kB, raised dynamically as large blocks are freed) straight back to the kernel
on ``free``, so the next tile faults every page in again: about 30,000-60,000 page faults per
1024² forward pass, some 10-15 % of its CPU time (``photomend bench`` on a 2-core AMD EPYC).

:func:`keep_freed_memory` raises the mmap threshold to 32 MB (glibc's maximum on 64-bit) and the
trim threshold to 256 MB, so blocks of a tile's size come from the heap and, freed, stay there
for the next tile (a few hundred to a few thousand faults per pass). The process's peak memory is
the same; what it keeps after its peak is at most the trim threshold more. It changes a
process-wide setting, so the command line calls it for its own process; a host application
decides for itself. Elsewhere than glibc it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

# mallopt parameters (malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20
TRIM_THRESHOLD = 256 << 20

_applied: bool | None = None


def keep_freed_memory() -> bool:
    """Tune glibc's malloc as the module docstring says (once); True when it took effect."""
    global _applied
    if _applied is None:
        _applied = False
        if sys.platform.startswith("linux"):
            try:
                libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
                mallopt = libc.mallopt
            except (OSError, AttributeError):  # musl and other C libraries have no mallopt
                return False
            mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
            _applied = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
                mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    return _applied
