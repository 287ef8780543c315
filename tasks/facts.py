"""Facts: pure functions from a command's output to data. No I/O here; unit-tested on captured output.

The commands that produce this output are built by the subsystem modules; each parser's docstring
names the command it expects.
"""
from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Output:
    """What a remote command returned."""

    exited: int
    stdout: str = ""
    stderr: str = ""

    @property
    def ok(self) -> bool:
        return self.exited == 0

    def why(self) -> str:
        """A one-line reason for a failure, for error messages: the first line that names an error
        (nginx -t ends with a generic line), else the last line."""
        lines = [x.strip() for x in (self.stderr or self.stdout).strip().splitlines() if x.strip()]
        named = [x for x in lines if re.search(r"\[emerg\]|\berror\b|ERROR|FATAL", x)]
        return (named or lines or [f"exit code {self.exited}"])[0 if named else -1]


class Unparseable(ValueError):
    """The output does not have the expected shape."""


def psql_row(out: Output, columns: int) -> list[str]:
    """First row of `psql -XAtq` output (fields separated by |)."""
    lines = [x for x in out.stdout.splitlines() if x.strip()]
    if not out.ok or not lines:
        raise Unparseable(f"no result from psql: {out.why()}")
    fields = lines[0].split("|")
    if len(fields) != columns:
        raise Unparseable(f"expected {columns} fields from psql, got {lines[0]!r}")
    return fields


def pg_major(out: Output) -> int:
    """`SHOW server_version_num` -> major version (150012 -> 15)."""
    (num,) = psql_row(out, 1)
    if not num.isdigit():
        raise Unparseable(f"not a server_version_num: {num!r}")
    return int(num) // 10000


@dataclass(frozen=True)
class ReplicationCapacity:
    wal_level: str
    free_wal_senders: int
    free_slots: int


def replication_capacity(out: Output) -> ReplicationCapacity:
    """wal_level | max_wal_senders - active senders | max_replication_slots - slots in use."""
    level, senders, slots = psql_row(out, 3)
    return ReplicationCapacity(level, int(senders), int(slots))


@dataclass(frozen=True)
class ClusterIdentity:
    in_recovery: bool
    system_identifier: str
    user_databases: tuple[str, ...]
    data_directory: str


def cluster_identity(out: Output) -> ClusterIdentity:
    """pg_is_in_recovery() | system_identifier | databases other than postgres and templates | data_directory."""
    recovery, sysid, dbs, data_directory = psql_row(out, 4)
    return ClusterIdentity(recovery == "t", sysid, tuple(x for x in dbs.split(",") if x), data_directory)


def glibc_version(out: Output) -> str:
    """`getconf GNU_LIBC_VERSION` -> '2.36'."""
    match = re.search(r"glibc\s+(\S+)", out.stdout)
    if not out.ok or not match:
        raise Unparseable(f"no glibc version: {out.why()}")
    return match.group(1)


def df_available_bytes(out: Output) -> int:
    """`df -PB1 PATH` -> bytes available on that file system."""
    lines = out.stdout.strip().splitlines()
    if not out.ok or len(lines) < 2:
        raise Unparseable(f"no df result: {out.why()}")
    return int(lines[-1].split()[3])


def first_int(out: Output) -> int:
    """A command printing one integer, e.g. the database size in bytes."""
    text = out.stdout.strip()
    if not out.ok or not text.lstrip("-").isdigit():
        raise Unparseable(f"expected a number: {out.why() if not out.ok else text!r}")
    return int(text)


def mastodon_revision(out: Output) -> str:
    """`git rev-parse HEAD || sha256sum lib/mastodon/version.rb` -> an identifier of the code version."""
    words = out.stdout.split()
    if not out.ok or not words:
        raise Unparseable(f"Mastodon not found: {out.why()}")
    return words[0]


@dataclass(frozen=True)
class Listener:
    process: str  # "" when the kernel would not tell (another user's process, no ptrace right)
    pid: int
    uid: int


def port_listeners(out: Output) -> list[Listener]:
    """`ss -Htlnpe 'sport = :PORT'` -> who listens on that port (empty: the port is free)."""
    found = []
    for line in out.stdout.splitlines():
        if not line.strip():
            continue
        uid = int(re.search(r"\buid:(\d+)", line).group(1)) if "uid:" in line else 0
        users = re.findall(r'\("([^"]+)",pid=(\d+)', line)
        found += [Listener(name, int(pid), uid) for name, pid in users] or [Listener("", 0, uid)]
    return found


@dataclass(frozen=True)
class UnitProcess:
    pid: int  # 0 when the unit is not running
    uid: int | None


def unit_process(out: Output) -> UnitProcess:
    """`MainPID UID` of a unit (see system.unit_process)."""
    words = out.stdout.split()
    if not words or not words[0].isdigit():
        return UnitProcess(0, None)
    return UnitProcess(int(words[0]), int(words[1]) if len(words) > 1 and words[1].isdigit() else None)


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def psql_rows(out: Output, columns: int) -> list[list[str]]:
    """Every row of `psql -XAtq` output (may be none)."""
    if not out.ok:
        raise Unparseable(f"psql failed: {out.why()}")
    rows = [x.split("|") for x in out.stdout.splitlines() if x.strip()]
    if any(len(r) != columns for r in rows):
        raise Unparseable(f"expected {columns} fields from psql, got {out.stdout.strip()!r}")
    return rows


def single_value(out: Output) -> str:
    """A command (or query) printing one value; '' when it printed nothing."""
    if not out.ok:
        raise Unparseable(out.why())
    return out.stdout.strip()


def line_count(out: Output) -> int:
    """`grep -c`: exit 1 with 0 means no match, exit 2 (missing file) counts as none too."""
    text = out.stdout.strip()
    return int(text) if text.isdigit() else 0


@dataclass(frozen=True)
class Sender:
    """One row of old's pg_stat_replication."""

    application_name: str
    client_addr: str
    state: str
    sent_lsn: str
    write_lsn: str
    flush_lsn: str
    replay_lsn: str
    lag_bytes: int


def senders(out: Output) -> list[Sender]:
    return [Sender(*row[:7], int(row[7] or 0)) for row in psql_rows(out, 8)]


@dataclass(frozen=True)
class Slot:
    name: str
    active: bool
    wal_status: str
    retained_bytes: int


def slot(out: Output) -> Slot | None:
    """Our slot on old (None when it does not exist)."""
    rows = psql_rows(out, 4)
    if not rows:
        return None
    name, active, wal_status, retained = rows[0]
    return Slot(name, active == "t", wal_status, int(retained or 0))


@dataclass(frozen=True)
class Standby:
    """new's view: recovery state, WAL receiver and replay positions."""

    in_recovery: bool
    receiver_status: str  # 'streaming', 'starting', ... or '' when no receiver runs
    receive_lsn: str
    replay_lsn: str
    last_replay: str
    replay_age_seconds: float | None
    system_identifier: str


def standby(out: Output) -> Standby:
    recovery, status, receive, replay, last, age, sysid = psql_row(out, 7)
    return Standby(recovery == "t", status, receive, replay, last, float(age) if age else None, sysid)


def public_key(out: Output) -> str | None:
    """An OpenSSH public key file ('type base64 comment'); None when missing."""
    words = out.stdout.split()
    if not out.ok or len(words) < 2 or not words[0].startswith(("ssh-", "ecdsa-")):
        return None
    return f"{words[0]} {words[1]}"


def lsn(text: str) -> int:
    """A WAL position such as '0/5000028' as a number (for comparisons)."""
    high, _, low = text.strip().partition("/")
    try:
        return (int(high, 16) << 32) | int(low, 16)
    except ValueError:
        raise Unparseable(f"not an LSN: {text!r}") from None


@dataclass(frozen=True)
class ControlData:
    state: str  # 'shut down', 'in production', 'in archive recovery', ...
    checkpoint_lsn: str
    timeline: int


def control_data(out: Output) -> ControlData:
    """`pg_controldata DATADIR` -> cluster state, latest checkpoint location and its timeline."""
    fields = dict(line.split(":", 1) for line in out.stdout.splitlines() if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    try:
        return ControlData(fields["Database cluster state"], fields["Latest checkpoint location"],
                           int(fields["Latest checkpoint's TimeLineID"]))
    except (KeyError, ValueError):
        raise Unparseable(f"no pg_controldata output: {out.why()}") from None
