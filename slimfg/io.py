"""Atomic file writes: a temp file next to the target, renamed into place only on success.

A killed run never leaves a file that looks complete: readers see the old file or the
new one, never half of one. Temporary files and folders are hidden (`.NAME.tmp-PID...`);
ones left by a killed process (`kill -9` runs no cleanup) are removed by the next write
to the same place once their process is gone.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

from slimfg.errors import check_stop


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def clean_stale(path: Path) -> None:
    """Remove `.{path.name}.tmp-PID*` files and folders whose process has exited."""
    for stale in path.parent.glob(f".{path.name}.tmp-*"):
        pid = stale.name[len(path.name) + 6 :].split("-")[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            if stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)
            else:
                stale.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_path(path: str | Path):
    """Yield a temp path next to `path`; rename it into place only if the body succeeds.

    The file gets the permissions of any file the user creates (0666 less the umask):
    some writers (safetensors) create theirs 0600."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        check_stop()  # a SIGTERM that came while the file was written: no finished file
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def temp_dir(near: str | Path):
    """A hidden temporary folder next to `near` (same file system, so renames out of it
    are atomic), removed on every exit path a process can run code on."""
    near = Path(near)
    near.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(near)
    tmp = tempfile.mkdtemp(prefix=f".{near.name}.tmp-{os.getpid()}-", dir=near.parent)
    try:
        yield Path(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
