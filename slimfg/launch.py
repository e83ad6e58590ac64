"""Start-up settings for PyTorch on CPU: glibc's malloc tunables.

At every training step PyTorch allocates and frees activation tensors of tens of MB. glibc
serves a block over its mmap threshold (at most 32 MB) with a fresh mmap and unmaps it on
free, so each step page-faults its activations in again: in a lite0 prune at 160 px on 2
cores the kernel took 27% of the CPU time. Three glibc tunables avoid it:
- `mmap_max=0`: every block comes from the heap, so freed memory is reused;
- `trim_threshold=1 GiB`: up to 1 GiB freed at the top of the heap stays mapped;
- `hugetlb=1`: the heap is backed by transparent huge pages (fewer faults and TLB misses).
Measured on 2 cores (docs/method.md, "glibc's malloc on CPU"): the default flowers102 prune
16.3 instead of 23.7 minutes, with the same results, at 7.3 instead of 6.0 GB peak memory;
benchmarks/malloc.py pairs shorter runs.

Tunables are read only when a process starts: the `slimfg` command re-runs itself once with
them (`slimfg.cli.run`, via `reexec()`), and `python -m slimfg.launch CMD ...` runs any other command
with them (your own training script, pytest in `make test`). Neither touches a
GLIBC_TUNABLES already set (`GLIBC_TUNABLES= slimfg ...` runs with glibc's defaults).
Elsewhere than glibc on Linux, nothing changes.
"""

from __future__ import annotations

import os
import sys

TUNABLES = "glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=1073741824:glibc.malloc.hugetlb=1"


def glibc() -> bool:
    """True where the C library is glibc."""
    try:
        return (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc")
    except (AttributeError, ValueError, OSError):  # no confstr (Windows) or no such name
        return False


def applies() -> bool:
    """True where the tunables would change something: glibc, and GLIBC_TUNABLES not set."""
    return "GLIBC_TUNABLES" not in os.environ and glibc()


def reexec() -> None:
    """Replace this process by the same command line with the tunables set (no return);
    do nothing where they do not apply. Call it before anything else runs."""
    if applies() and sys.executable:
        os.environ["GLIBC_TUNABLES"] = TUNABLES
        os.execv(sys.executable, sys.orig_argv)


def main() -> None:
    """`python -m slimfg.launch CMD [ARGS...]`: run CMD with the tunables set."""
    if len(sys.argv) < 2:
        sys.exit("usage: python -m slimfg.launch CMD [ARGS...] (runs CMD with glibc malloc tunables)")
    if applies():
        os.environ["GLIBC_TUNABLES"] = TUNABLES
    os.execvp(sys.argv[1], sys.argv[1:])


if __name__ == "__main__":
    main()
