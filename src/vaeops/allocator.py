"""glibc's malloc tuned for training: freed tensors stay in the process for reuse.

Process-wide, so no library function calls it: the entry points do (the `vaeops` CLI's main and
`python -m benchmarks`). It imports no torch, so an entry point can call it before torch loads.
"""

from __future__ import annotations

import ctypes
import functools
import platform

# glibc's mallopt parameters (malloc.h) and the values `keep_freed_memory` gives them.
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD_BYTES = 32 << 20  # glibc's maximum: every tensor below it comes from the heap
TRIM_THRESHOLD_BYTES = 1 << 30


@functools.cache
def keep_freed_memory() -> bool:
    """Let glibc's malloc keep freed tensors for reuse instead of handing them back to the OS.

    By default glibc maps each block above 128 KiB afresh and unmaps it when it is freed, so every
    batch's activations and gradients (0.2-1.3 MB each here) page-fault anew: about 14% of a CPU
    training epoch (benchmarks/README.md). PyTorch's CPU performance guide recommends a caching
    allocator (jemalloc, tcmalloc) for this; two mallopt settings give glibc the same reuse.
    Process-wide and idempotent. Returns whether glibc accepted both settings (mallopt returns 1
    on success); False with another C library, where nothing happens.
    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(None)
    accepted = [
        libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES),
        libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES),
    ]
    return all(result == 1 for result in accepted)
