"""User-facing errors: the CLI prints the message on one line and exits nonzero."""

import difflib

_stop_requested = False  # set by SIGTERM (request_stop)
_stoppable_depth = 0  # how many `stoppable` loops are running


class SlimfgError(Exception):
    """A failure the user can fix (bad input, missing dependency, offline download)."""


def unknown_name(kind: str, name: str, valid: list[str]) -> SlimfgError:
    """Error for an unknown name that suggests the closest valid one."""
    close = difflib.get_close_matches(name, valid, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    shown = ", ".join(valid[:12]) + (", ..." if len(valid) > 12 else "")
    return SlimfgError(f"unknown {kind} {name!r}: {hint}valid: {shown}")


def request_stop(_signum=None, frame=None) -> None:
    """SIGTERM handler: unwind like Ctrl-C, so temp files and directories are removed.

    A KeyboardInterrupt raised inside a lock's code can leave the lock held: a DataLoader
    queue's lock hung a prune's exit in CI (docs/method.md, "SIGTERM, locks and the
    DataLoader"). So the handler raises only where no such code runs. Inside a `stoppable`
    loop (every pass over a DataLoader), or with a frame of `LOCKING_MODULES` on the main
    thread's stack, it only sets a flag: the loop raises at its next item (`check_stop`),
    and `io.atomic_path` refuses to finish a file once the flag is set."""
    global _stop_requested
    _stop_requested = True
    if _stoppable_depth == 0 and not _in_locking_code(frame):
        raise KeyboardInterrupt


# Python code that takes locks which a KeyboardInterrupt could leave held.
LOCKING_MODULES = (
    "threading", "queue", "multiprocessing", "concurrent", "logging", "tqdm", "torch.utils.data",
)  # fmt: skip


def _in_locking_code(frame) -> bool:
    while frame is not None:
        name = frame.f_globals.get("__name__", "")
        if any(name == m or name.startswith(m + ".") for m in LOCKING_MODULES):
            return True
        frame = frame.f_back
    return False


def stoppable(items):
    """Iterate `items` (a DataLoader) so that SIGTERM stops the loop at its next item."""
    global _stoppable_depth
    _stoppable_depth += 1
    try:
        for item in items:
            check_stop()
            yield item
    finally:
        _stoppable_depth -= 1


def check_stop() -> None:
    """Raise KeyboardInterrupt if SIGTERM arrived (`request_stop`)."""
    if _stop_requested:
        raise KeyboardInterrupt
