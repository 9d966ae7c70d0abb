"""How this process's CPU allocator treats freed memory: the setting a CPU training turns on, and whether it is on.

Here rather than in the engine because the models ask it too: on a CPU, ``fast="auto"`` picks the fused
hyper recurrence for large batches only when freed memory is kept (see
``sketchlab.models.sketch_rnn.recurrence.FUSED_HYPER_MAX_WORK``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform

# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_kept = False  # set by keep_freed_memory


def has_glibc_malloc() -> bool:
    """Whether this process allocates with glibc's malloc (the one :func:`keep_freed_memory` tunes)."""
    return platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


def keep_freed_memory() -> bool:
    """Make glibc's malloc keep freed memory for reuse instead of returning it to the kernel.

    A CPU training step allocates the same large buffers every step (the recurrences' activation tapes:
    hundreds of MB at magenta's sizes). glibc serves blocks over its mmap threshold (at most 32 MB) with
    fresh mmaps and unmaps them on free, so every step first-touches them again: about a million page
    faults per step, seconds of kernel time. Serving everything from the heap and never trimming it
    makes later steps reuse the same pages. The price: the process keeps its peak memory until it exits.

    This is the effect PyTorch's CPU tuning guide gets by preloading jemalloc or tcmalloc; those need
    system packages and must be chosen before the process starts, so we set glibc's own knobs instead.
    Returns whether the setting was applied (False off glibc, e.g. macOS or musl).
    """
    if not has_glibc_malloc():
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return False
    # A trim threshold of -1 turns trimming off for any size (mallopt(3)). The largest positive one, 2 GiB,
    # is not enough: a CPU step at magenta's sizes frees more than that at once (the hyper cell's fused
    # tapes), and glibc then handed the top of the heap back: about 0.6 M page faults a call of that recurrence
    # at batch 100, hidden 512 (scripts/bench_recurrence.py).
    # mallopt returns 1 on success
    global _kept
    _kept = _kept or (bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, -1)))
    return _kept


def freed_memory_kept() -> bool:
    """Whether :func:`keep_freed_memory` has taken effect in this process (it lasts until the process exits)."""
    return _kept
