"""User-facing errors: the CLI prints the message on one line and exits nonzero."""

import difflib


class SlimfgError(Exception):
    """A failure the user can fix (bad input, missing dependency, offline download)."""


def unknown_name(kind: str, name: str, valid: list[str]) -> SlimfgError:
    """Error for an unknown name that suggests the closest valid one."""
    close = difflib.get_close_matches(name, valid, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    shown = ", ".join(valid[:12]) + (", ..." if len(valid) > 12 else "")
    return SlimfgError(f"unknown {kind} {name!r}: {hint}valid: {shown}")
