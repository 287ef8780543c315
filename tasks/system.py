"""Host-level actions: marked lines and blocks in shared files, whole files that converge, units."""

from __future__ import annotations

import contextlib
import shlex
import time
from typing import Iterator

from .command import Cmd, CommandFailed, Remote, StepFailed, known
from .facts import CountLines, FileText, Journal, PathExists, PresentPaths
from .shell import quoted

MARK = "mastodon-migration"  # every line or block this tool adds to a shared file carries this mark
STATE_DIR = "/var/lib/mastodon-migration"  # what this tool records on a host
UNFINISHED = f"{STATE_DIR}/unfinished"  # a file per long piece of work that began and has not ended


@contextlib.contextmanager
def unfinished(remote: Remote, name: str, note: str = "") -> Iterator[None]:
    """Long work that a kill may cut short (a copy, a precompile, a feed build) leaves partial results that
    look done. A marker on the host says it began (holding `note`); only its end removes it."""
    note = note or f"began {time.strftime('%Y-%m-%dT%H:%M:%S%z')}"
    remote.run(Cmd(f"install -d -m 0755 {UNFINISHED} && cat > {UNFINISHED}/{name}", stdin=note + "\n"))
    yield
    remote.run(Cmd(f"rm -f {UNFINISHED}/{name}"))


def cut_short(remote: Remote, name: str):
    """The note of work that began on the host and never ended (never empty); None when there is no such
    work (UNKNOWN in a plan)."""
    text = remote.fact(
        FileText(f"{UNFINISHED}/{name}"),
        then="a file here means the work began and was cut short: it is done again",
    )
    return text.strip() if known(text) and text is not None else text


def replace_lines(path: str, marker: str, lines: str, user: str, mode: str = "0600", secrets=()) -> Cmd:
    """Drop the lines containing `marker` from a file and append `lines`, atomically.
    The new lines (which may hold a secret) travel on stdin."""
    return Cmd(
        f"set -e\nf={shlex.quote(path)}\n"
        f'mkdir -p -m 700 "$(dirname "$f")" && touch "$f"\n'
        f'{{ grep -vF {quoted(marker)} "$f" || true; cat; }} > "$f.{MARK}"\n'
        f'chmod {mode} "$f.{MARK}" && mv "$f.{MARK}" "$f"',
        user=user,
        stdin=lines,
        secrets=secrets,
    )


def block(name: str, lines: list[str]) -> str:
    return "\n".join([f"# BEGIN {MARK} {name}", *lines, f"# END {MARK} {name}"]) + "\n"


def put_block(path: str, name: str, lines: list[str], user: str, backup_suffix: str) -> Cmd:
    """Put a block marked BEGIN/END `name` at the top of a config file (first match wins in files
    such as pg_hba.conf), replacing an older copy; the previous file is kept as PATH.BACKUP_SUFFIX."""
    begin, end = f"# BEGIN {MARK} {name}", f"# END {MARK} {name}"
    return Cmd(
        f"set -e\nf={shlex.quote(path)}\n"
        f'cp -p "$f" "$f.{backup_suffix}"\n'
        f'{{ cat; sed \'/^{begin}$/,/^{end}$/d\' "$f.{backup_suffix}"; }} > "$f.{MARK}"\n'
        f'chmod --reference="$f.{backup_suffix}" "$f.{MARK}" && mv "$f.{MARK}" "$f"',
        user=user,
        stdin=block(name, lines),
    )


def delete_blocks(path: str, name: str, user: str) -> Cmd:
    """Remove the block(s) marked `name` from a config file ('' : every block this tool put there)."""
    label = f" {name}" if name else " "
    end = "$" if name else ""
    return Cmd(
        f"sed -i '/^# BEGIN {MARK}{label}{end}/,/^# END {MARK}{label}{end}/d' {shlex.quote(path)}", user=user
    )


def systemctl(*words: str) -> Cmd:
    return Cmd("systemctl " + " ".join(words))


def control_unit(remote: Remote, action: str, unit: str) -> None:
    """systemctl ACTION UNIT; when it fails, the unit's last journal lines say why."""
    try:
        remote.run(systemctl(action, unit))
    except CommandFailed:
        journal = remote.fact(Journal((unit,)))
        raise StepFailed(
            f"{unit} did not {action} on {remote.alias}. Its last journal lines:\n{journal}"
        ) from None


def unit_file(unit: str) -> str:
    """Where this tool writes a unit of its own."""
    return f"/etc/systemd/system/{unit}.service"


def remove_unit(remote: Remote, unit: str) -> None:
    """Stop and disable a unit of this tool's, then remove its file (nothing to do once it is gone)."""
    path = unit_file(unit)
    if remote.fact(PathExists(path), then="when it exits 1, skip the next block") is not False:
        remote.run(systemctl("disable", "--now", unit))
        remote.run(Cmd(f"rm -f {path}"))
        remote.run(systemctl("daemon-reload"))


def converge_file(
    remote: Remote,
    path: str,
    want: str,
    have,
    *,
    header: str,
    force: bool,
    owner: str = "root",
    mode: str = "0644",
    secrets=(),
) -> bool:
    """Make `path` hold `want`. A file that differs and was not written by this tool (it lacks
    `header`) is replaced only with `force`; a replaced file is kept as PATH.mig-TIMESTAMP.
    Returns whether anything changed. `have` is the current text (None: no file; UNKNOWN: planning)."""
    if known(have) and have == want:
        return False
    if not known(have) or have is not None:  # a plan shows the backup too: it cannot know the file is there
        if known(have) and not have.startswith(header) and not force:
            raise StepFailed(
                f"{path} on {remote.alias} differs from what this tool would write and was not "
                "written by it; nothing was changed. Compare the two, then run again with --force "
                "(the file is kept as a backup)."
            )
        remote.run(Cmd(f"if [ -e {path} ]; then cp -p {path} {path}.mig-{time.strftime('%Y%m%d%H%M%S')}; fi"))
    remote.write_file(path, want, owner=owner, mode=mode, secrets=secrets)
    return True


def remove_files(remote: Remote, *paths: str) -> None:
    """Remove the files that exist (checked first, so a re-run does nothing)."""
    present = remote.fact(PresentPaths(paths), then="the next block removes those it printed")
    if not known(present) or present:
        remote.run(Cmd(f"rm -f {' '.join(shlex.quote(p) for p in (present if known(present) else paths))}"))


def remove_marked_lines(remote: Remote, path: str, marker: str, user: str) -> None:
    """Drop the lines holding `marker` from a shared file (authorized_keys, .pgpass), if there are any."""
    found = remote.fact(CountLines(path, marker, user), then="when it prints 0, skip the next block")
    if not known(found) or found:
        remote.run(replace_lines(path, marker, "", user=user))
