"""Host-level facts: sudo, glibc, free disk, listening ports, systemd units."""
from __future__ import annotations

import shlex
import time

from .command import Cmd, StepFailed, known


def sudo_works() -> Cmd:
    """ssh works and sudo needs no password (tasks run unattended)."""
    return Cmd("sudo -n true", user=None)


def glibc() -> Cmd:
    return Cmd("getconf GNU_LIBC_VERSION", user=None)


def free_disk(path: str) -> Cmd:
    return Cmd(f"df -PB1 {shlex.quote(path)}", user=None)


def listeners(port: int) -> Cmd:
    """Who listens on a TCP port: process names (as root) and the socket owner's uid."""
    return Cmd(f"ss -Htlnpe 'sport = :{port}'")


def unit_process(unit: str) -> Cmd:
    """The main process of a unit and its uid (readable even where its sockets are not)."""
    return Cmd(f'pid=$(systemctl show -p MainPID --value {unit}); echo "$pid $(ps -o uid= -p "$pid")"', user=None)


MARK = "mastodon-migration"  # every line or block this tool adds to a shared file carries this mark


def read_file(path: str, user: str = "root") -> Cmd:
    """A file's text (exit 1 when missing); only for files that hold no secret."""
    return Cmd(f"cat {shlex.quote(path)}", user=user)


def replace_lines(path: str, marker: str, lines: str, user: str, mode: str = "0600", secrets=()) -> Cmd:
    """Drop the lines containing `marker` from a file and append `lines`, atomically.
    The new lines (which may hold a secret) travel on stdin."""
    return Cmd(f"set -e\nf={shlex.quote(path)}\n"
               f'mkdir -p -m 700 "$(dirname "$f")" && touch "$f"\n'
               f'{{ grep -vF {shlex.quote(marker)} "$f" || true; cat; }} > "$f.{MARK}"\n'
               f'chmod {mode} "$f.{MARK}" && mv "$f.{MARK}" "$f"', user=user, stdin=lines, secrets=secrets)


def block(name: str, lines: list[str]) -> str:
    return "\n".join([f"# BEGIN {MARK} {name}", *lines, f"# END {MARK} {name}"]) + "\n"


def put_block(path: str, name: str, lines: list[str], user: str, backup_suffix: str) -> Cmd:
    """Put a block marked BEGIN/END `name` at the top of a config file (first match wins in files
    such as pg_hba.conf), replacing an older copy; the previous file is kept as PATH.BACKUP_SUFFIX."""
    begin, end = f"# BEGIN {MARK} {name}", f"# END {MARK} {name}"
    return Cmd(f"set -e\nf={shlex.quote(path)}\n"
               f'cp -p "$f" "$f.{backup_suffix}"\n'
               f"{{ cat; sed '/^{begin}$/,/^{end}$/d' \"$f.{backup_suffix}\"; }} > \"$f.{MARK}\"\n"
               f'chmod --reference="$f.{backup_suffix}" "$f.{MARK}" && mv "$f.{MARK}" "$f"',
               user=user, stdin=block(name, lines))


def unit_state(unit: str) -> Cmd:
    """`systemctl is-active` prints active/inactive/failed/activating (exit code varies)."""
    return Cmd(f"systemctl is-active {unit}", user=None)


def unit_enabled(unit: str) -> Cmd:
    """`systemctl is-enabled` prints enabled/disabled/static/masked."""
    return Cmd(f"systemctl is-enabled {unit}", user=None)


def systemctl(*words: str) -> Cmd:
    return Cmd("systemctl " + " ".join(words))


def converge_file(remote, path: str, want: str, have, *, header: str, force: bool, owner: str = "root",
                  mode: str = "0644", secrets=()) -> bool:
    """Make `path` hold `want`. A file that differs and was not written by this tool (it lacks
    `header`) is replaced only with `force`; a replaced file is kept as PATH.mig-TIMESTAMP.
    Returns whether anything changed. `have` is the current text (None: no file; UNKNOWN: planning)."""
    if known(have) and have == want:
        return False
    if known(have) and have is not None:
        if not have.startswith(header) and not force:
            raise StepFailed(f"{path} on {remote.alias} differs from what this tool would write and was not "
                             "written by it; nothing was changed. Compare the two, then run again with --force "
                             "(the file is kept as a backup).")
        remote.run(Cmd(f"cp -p {path} {path}.mig-{time.strftime('%Y%m%d%H%M%S')}"))
    remote.write_file(path, want, owner=owner, mode=mode, secrets=secrets)
    return True


def remove_files(remote, *paths: str) -> None:
    """Remove the files that exist (checked first, so a re-run does nothing)."""
    listed = " ".join(shlex.quote(p) for p in paths)
    present = remote.fact(Cmd(f"ls -d {listed} 2>/dev/null"), lambda out: out.stdout.split())
    if not known(present) or present:
        remote.run(Cmd(f"rm -f {' '.join(shlex.quote(p) for p in (present if known(present) else paths))}"))


def remove_marked_lines(remote, path: str, marker: str, user: str) -> None:
    """Drop the lines holding `marker` from a shared file (authorized_keys, .pgpass), if there are any."""
    found = remote.fact(Cmd(f"grep -cF {shlex.quote(marker)} {shlex.quote(path)}", user=user),
                        lambda out: out.stdout.strip() not in ("", "0"))
    if found is not False:
        remote.run(replace_lines(path, marker, "", user=user))
