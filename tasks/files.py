"""Private files on the operator's machine: the run log and the state kept next to it.

They record hosts, commands and times (secrets masked), and the DNS state: others have no business reading
them. The folder is 0700 and each file 0600 whatever the umask; a run refuses to add to a file or folder
that others can read, and says how to fix it.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from .core import StepFailed


class NotPrivate(StepFailed):
    """A log or state file (or its folder) that others can read."""


def _refuse_if_shared(path: Path, fix: str) -> None:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise NotPrivate(
            f"{path} can be read by others (mode {mode:04o}); it holds the record of this migration. "
            f"Run `{fix}`, then run again."
        )


def private_dir(path: Path) -> None:
    """The folder, created 0700; an existing one must not be open to others."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    _refuse_if_shared(path, f"chmod 700 {path}")


def _write(path: Path, text: str, flags: int) -> None:
    """Open (creating it 0600), make sure of 0600 whatever the umask or an older mode, write, close."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | flags, 0o600)
    try:
        os.fchmod(descriptor, 0o600)
        os.write(descriptor, text.encode())
    finally:
        os.close(descriptor)


def append_private(path: Path, text: str) -> None:
    """Append to a file that is created 0600 (whatever the umask) and must stay private."""
    private_dir(path.parent)
    if path.exists():
        _refuse_if_shared(path, f"chmod 600 {path}")
    _write(path, text, os.O_APPEND)


def write_private(path: Path, text: str) -> None:
    """Write a whole file, 0600, renamed into place: an interrupted run never leaves half a file."""
    private_dir(path.parent)
    partial = path.with_name(path.name + ".partial")
    _write(partial, text, os.O_TRUNC)
    os.replace(partial, path)
