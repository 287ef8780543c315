"""Host-level facts: sudo, glibc, free disk, listening ports, systemd units."""
from __future__ import annotations

import shlex

from .command import Cmd


def sudo_works() -> Cmd:
    """ssh works and sudo needs no password (tasks run unattended)."""
    return Cmd("sudo -n true", user=None)


def glibc() -> Cmd:
    return Cmd("getconf GNU_LIBC_VERSION", user=None)


def free_disk(path: str) -> Cmd:
    return Cmd(f"df -PB1 {shlex.quote(path)}", user=None)


def listeners(port: int) -> Cmd:
    """Who listens on a TCP port (root sees the process names)."""
    return Cmd(f"ss -Htlnp 'sport = :{port}'")


def unit_main_pid(unit: str) -> Cmd:
    return Cmd(f"systemctl show -p MainPID --value {unit}", user=None)
