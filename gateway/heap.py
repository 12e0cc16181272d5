"""The C heap of the gateway process: large blocks go back to the system when freed.

glibc serves a block above its mmap threshold from a fresh mapping that ``free`` unmaps,
but by default it raises that threshold to the size of every such block freed (up to
32 MiB). One 16 MiB scrypt work area of the token endpoint (bridge/secrets.py) is then
enough for every later one to come from an arena that keeps it: with its two secret
threads the process held 32 MiB more after a burst of token requests, for good (the soak
of CONTRACT §4c, BENCHMARKS.md). A fixed threshold keeps large blocks mapped, and turns
off the dynamic raise of the trim threshold too, so freed tops of the heap are returned.
"""

from __future__ import annotations

import ctypes
import logging
from typing import Final

log = logging.getLogger("streambridge.heap")

M_MMAP_THRESHOLD: Final = -3  # <malloc.h>
MMAP_THRESHOLD: Final = 1 << 20  # a 1 MiB block and larger: its own mapping


def return_large_blocks() -> bool:
    """Fix glibc's mmap threshold at MMAP_THRESHOLD; False where the C library is not
    glibc (musl and others do not raise thresholds, nothing to do)."""
    libc = ctypes.CDLL(None)  # the process's own symbols, the C library's among them
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None or not hasattr(libc, "gnu_get_libc_version"):
        return False
    done = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    if not done:
        log.warning("could not fix the malloc mmap threshold", extra={"bytes": MMAP_THRESHOLD})
    return done
