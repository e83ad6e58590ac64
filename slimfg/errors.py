"""User-facing errors: the CLI prints the message on one line and exits nonzero."""

import difflib

_stop_requested = False


class SlimfgError(Exception):
    """A failure the user can fix (bad input, missing dependency, offline download)."""


def unknown_name(kind: str, name: str, valid: list[str]) -> SlimfgError:
    """Error for an unknown name that suggests the closest valid one."""
    close = difflib.get_close_matches(name, valid, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    shown = ", ".join(valid[:12]) + (", ..." if len(valid) > 12 else "")
    return SlimfgError(f"unknown {kind} {name!r}: {hint}valid: {shown}")


def request_stop(_signum=None, _frame=None) -> None:
    """SIGTERM handler: unwind like Ctrl-C, so temp files and directories are removed.

    The KeyboardInterrupt is lost when the signal lands in code whose exceptions Python
    ignores (a fork hook while DataLoader workers start), so the flag is also set and
    the training loop checks it every batch (`check_stop`)."""
    global _stop_requested
    _stop_requested = True
    raise KeyboardInterrupt


def check_stop() -> None:
    if _stop_requested:
        raise KeyboardInterrupt
