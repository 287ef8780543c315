"""Facts: each question the tool asks a host is one object holding its command and its parser.

In the style of pyinfra's FactBase: `remote.fact(UnitState("nginx"))` runs the command (or, in a plan,
shows it) and returns the parsed answer. A fact only reads. `passes` says what its answer looks like,
for the runbook's reader; each parser is unit-tested on output captured from real hosts.

This module holds the host-level and PostgreSQL facts that preflight judges; each subsystem module
defines its own facts (and its "is this done?" fact) next to the commands that change the same thing.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from typing import ClassVar, Generic, TypeVar

from . import redis_cli
from .core import UNKNOWN, Secret
from .shell import Cmd, Output, quoted

T = TypeVar("T")


class Unparseable(ValueError):
    """The output does not have the expected shape."""


class Fact(Generic[T]):
    """A read-only question to a host: `command()` asks it, `parse(output)` reads the answer.

    `passes` describes the answer for a person running the command by hand; `planned` is what a plan
    uses in its place (a placeholder for text that later commands show, never for decisions); `stable`
    facts do not change during a run, so the command layer asks them once."""

    passes: ClassVar[str] = ""
    stable: ClassVar[bool] = False
    planned = UNKNOWN

    def command(self) -> Cmd:
        raise NotImplementedError

    def parse(self, out: Output) -> T:
        raise NotImplementedError

    def describe(self) -> str:
        return self.passes.format(**vars(self)) if vars(self) else self.passes


@dataclass(frozen=True)
class Raw(Fact[Output]):
    """Another fact's answer as it came, for judgements that read it later (preflight)."""

    inner: Fact

    def command(self) -> Cmd:
        return self.inner.command()

    def parse(self, out: Output) -> Output:
        return out

    def describe(self) -> str:
        return self.inner.describe()


# --- files and paths -----------------------------------------------------------------------------


@dataclass(frozen=True)
class FileText(Fact["str | None"]):
    """A file that holds no secret, as text; None when it does not exist."""

    path: str
    user: str = "root"
    passes: ClassVar[str] = "prints the file; nothing (and `No such file`) when it does not exist yet"

    def command(self) -> Cmd:
        return Cmd(f"cat {shlex.quote(self.path)}", user=self.user)

    def parse(self, out: Output) -> str | None:
        return out.stdout if out.ok else None


@dataclass(frozen=True)
class SecretFileText(Fact["str | None"]):
    """A file full of secrets (.env.production): read for the tool only, never printed or logged."""

    path: str
    user: str = "root"
    passes: ClassVar[str] = (
        "prints the file, which holds secrets: run it only to look, never into a log; "
        "the phase reads it without showing it"
    )

    def command(self) -> Cmd:
        return Cmd(f"cat {shlex.quote(self.path)}", user=self.user, secret_output=True)

    def parse(self, out: Output) -> str | None:
        return out.stdout if out.ok else None


@dataclass(frozen=True)
class PathExists(Fact[bool]):
    path: str
    test: str = "-e"  # `test`'s operator: -e exists, -f a file, -x executable
    passes: ClassVar[str] = "exits 0 when {path} exists (test {test}), 1 when not"

    def command(self) -> Cmd:
        return Cmd(f"test {self.test} {shlex.quote(self.path)}")

    def parse(self, out: Output) -> bool:
        return out.ok


@dataclass(frozen=True)
class PresentPaths(Fact["list[str]"]):
    paths: tuple[str, ...]
    passes: ClassVar[str] = "prints the paths that exist, one a line; nothing when none does"

    def command(self) -> Cmd:
        return Cmd(f"ls -d {' '.join(shlex.quote(p) for p in self.paths)} 2>/dev/null")

    def parse(self, out: Output) -> list[str]:
        return out.stdout.split()


@dataclass(frozen=True)
class LinesWith(Fact[str]):
    """The lines of a file that contain `text` (or are exactly `text`): "" when none, or no file. They are
    logged: never for a file that holds secrets (see CountLines)."""

    path: str
    text: str
    user: str = "root"
    whole_line: bool = False
    passes: ClassVar[str] = "prints the matching lines; nothing when there is none (or no file yet)"

    def command(self) -> Cmd:
        flags = "-sxF" if self.whole_line else "-sF"
        return Cmd(f"grep {flags} -- {quoted(self.text)} {shlex.quote(self.path)}", user=self.user)

    def parse(self, out: Output) -> str:
        return out.stdout if out.ok else ""


@dataclass(frozen=True)
class CountLines(Fact[int]):
    """How many lines of a file contain `text` (or are exactly `text`): 0 when none, or no file. Only the
    count comes back, so it suits files that hold secrets (.pgpass)."""

    path: str
    text: str
    user: str = "root"
    whole_line: bool = False
    passes: ClassVar[str] = "prints how many lines match: 0 when there is none (or no file yet)"

    def command(self) -> Cmd:
        flags = "-csxF" if self.whole_line else "-csF"
        return Cmd(f"grep {flags} -- {quoted(self.text)} {shlex.quote(self.path)}", user=self.user)

    @staticmethod
    def parse(out: Output) -> int:
        text = out.stdout.strip()
        return int(text) if text.isdigit() else 0


@dataclass(frozen=True)
class LinkTarget(Fact[str]):
    path: str
    passes: ClassVar[str] = "prints where {path} leads"

    def command(self) -> Cmd:
        return Cmd(f"readlink -f {shlex.quote(self.path)}")

    def parse(self, out: Output) -> str:
        return out.stdout.strip()


@dataclass(frozen=True)
class HomeDir(Fact[str]):
    user: str
    passes: ClassVar[str] = "prints {user}'s home directory"
    stable: ClassVar[bool] = True

    def command(self) -> Cmd:
        return Cmd("echo $HOME", user=self.user)

    def parse(self, out: Output) -> str:
        return out.stdout.strip()


@dataclass(frozen=True)
class PublicKey(Fact["str | None"]):
    """An OpenSSH public key file ('type base64 comment') as 'type base64'; None when missing."""

    path: str
    user: str = "root"
    passes: ClassVar[str] = (
        "prints one public key (`ssh-ed25519 AAAA... comment`); `No such file` means it was not created yet"
    )

    def command(self) -> Cmd:
        return Cmd(f"cat {shlex.quote(self.path)}", user=self.user)

    @staticmethod
    def parse(out: Output) -> str | None:
        words = out.stdout.split()
        if not out.ok or len(words) < 2 or not words[0].startswith(("ssh-", "ecdsa-")):
            return None
        return f"{words[0]} {words[1]}"


# --- the host: sudo, glibc, disk, ports, units --------------------------------------------------------


@dataclass(frozen=True)
class SudoWorks(Fact[Output]):
    passes: ClassVar[str] = "prints nothing and exits 0: ssh works and sudo asks for no password"

    def command(self) -> Cmd:
        return Cmd("sudo -n true", user=None)

    @staticmethod
    def parse(out: Output) -> Output:
        return out


@dataclass(frozen=True)
class Glibc(Fact[str]):
    passes: ClassVar[str] = "prints `glibc 2.36` or the like: both hosts should print the same"

    def command(self) -> Cmd:
        return Cmd("getconf GNU_LIBC_VERSION", user=None)

    @staticmethod
    def parse(out: Output) -> str:
        match = re.search(r"glibc\s+(\S+)", out.stdout)
        if not out.ok or not match:
            raise Unparseable(f"no glibc version: {out.why()}")
        return match.group(1)


@dataclass(frozen=True)
class FreeDisk(Fact[int]):
    path: str
    passes: ClassVar[str] = "the 4th column of the last line is the bytes free on {path}'s file system"

    def command(self) -> Cmd:
        return Cmd(f"df -PB1 {shlex.quote(self.path)}", user=None)

    @staticmethod
    def parse(out: Output) -> int:
        lines = out.stdout.strip().splitlines()
        if not out.ok or len(lines) < 2:
            raise Unparseable(f"no df result: {out.why()}")
        return int(lines[-1].split()[3])


@dataclass(frozen=True)
class Listener:
    process: str  # "" when the kernel would not tell (another user's process, no ptrace right)
    pid: int
    uid: int


@dataclass(frozen=True)
class Listeners(Fact["list[Listener]"]):
    """Who listens on a TCP port: process names (as root) and the socket owner's uid."""

    port: int
    passes: ClassVar[str] = "prints nothing when port {port} is free, else a line per listening socket"

    def command(self) -> Cmd:
        return Cmd(f"ss -Htlnpe 'sport = :{self.port}'")

    @staticmethod
    def parse(out: Output) -> list[Listener]:
        found = []
        for line in out.stdout.splitlines():
            if not line.strip():
                continue
            uid = int(re.search(r"\buid:(\d+)", line).group(1)) if "uid:" in line else 0
            users = re.findall(r'\("([^"]+)",pid=(\d+)', line)
            found += [Listener(name, int(pid), uid) for name, pid in users] or [Listener("", 0, uid)]
        return found


@dataclass(frozen=True)
class Process:
    pid: int  # 0 when the unit is not running
    uid: int | None


@dataclass(frozen=True)
class UnitProcess(Fact[Process]):
    """The main process of a unit and its uid (readable even where its sockets are not)."""

    unit: str
    passes: ClassVar[str] = "prints `PID UID` of {unit}'s main process, or `0` when it does not run"

    def command(self) -> Cmd:
        return Cmd(
            f"pid=$(systemctl show -p MainPID --value {self.unit})\n"
            f'if [ "${{pid:-0}}" = 0 ]; then echo 0; else echo "$pid $(ps -o uid= -p "$pid")"; fi',
            user=None,
        )

    @staticmethod
    def parse(out: Output) -> Process:
        words = out.stdout.split()
        if not words or not words[0].isdigit():
            return Process(0, None)
        return Process(int(words[0]), int(words[1]) if len(words) > 1 and words[1].isdigit() else None)


def stopped(state: str) -> bool:
    """A unit state that means "not running" (the one definition, for every unit)."""
    return state in ("inactive", "failed")


@dataclass(frozen=True)
class UnitState(Fact[str]):
    """`systemctl is-active`: active, inactive, failed, activating... (its exit code varies)."""

    unit: str
    passes: ClassVar[str] = "prints `active` while {unit} runs; `inactive` or `failed` when it is stopped"

    def command(self) -> Cmd:
        return Cmd(f"systemctl is-active {self.unit}", user=None)

    @staticmethod
    def parse(out: Output) -> str:
        return out.stdout.strip()


@dataclass(frozen=True)
class UnitStates(Fact["dict[str, str]"]):
    """Several units' states at once: `systemctl is-active A B C` prints one a line, in order."""

    units: tuple[str, ...]
    passes: ClassVar[str] = "prints one state a line (`active`, `inactive`, ...), in the order of the units"

    def command(self) -> Cmd:
        return Cmd("systemctl is-active " + " ".join(self.units), user=None)

    def parse(self, out: Output) -> dict[str, str]:
        states = out.stdout.split()
        return {unit: states[i] if i < len(states) else "unknown" for i, unit in enumerate(self.units)}


@dataclass(frozen=True)
class UnitEnabled(Fact[str]):
    unit: str
    passes: ClassVar[str] = (
        "prints `enabled` when {unit} starts at boot (`disabled`, `masked` or `static` otherwise)"
    )

    def command(self) -> Cmd:
        return Cmd(f"systemctl is-enabled {self.unit}", user=None)

    @staticmethod
    def parse(out: Output) -> str:
        return out.stdout.strip()


@dataclass(frozen=True)
class Journal(Fact[str]):
    units: tuple[str, ...]
    lines: int = 25
    passes: ClassVar[str] = "prints the units' last journal lines, for the error message"

    def command(self) -> Cmd:
        return Cmd(f"journalctl -u {' -u '.join(self.units)} -n {self.lines} --no-pager")

    def parse(self, out: Output) -> str:
        return out.stdout


@dataclass(frozen=True)
class MastodonRevision(Fact[str]):
    """The git revision of the checkout, or a checksum of the version file when it is no git checkout."""

    directory: str
    user: str
    passes: ClassVar[str] = (
        "prints the code's git revision (or a checksum of its version file): both hosts alike"
    )

    def command(self) -> Cmd:
        return Cmd(
            f"cd {shlex.quote(self.directory)} && "
            "{ git rev-parse HEAD 2>/dev/null || sha256sum lib/mastodon/version.rb; }",
            user=self.user,
        )

    @staticmethod
    def parse(out: Output) -> str:
        words = out.stdout.split()
        if not out.ok or not words:
            raise Unparseable(f"Mastodon not found: {out.why()}")
        return words[0]


# --- several facts in one round trip -------------------------------------------------------------------

SECTION = "@@ "


@dataclass(frozen=True)
class Batch(Fact[dict]):
    """Several facts in one script, one round trip: each part's output under a line `@@ NAME`, its exit
    status on a line `@@= N`. A missing unit or file is an answer, not an error: error messages are
    silenced and the script exits 0. Each part is parsed by its own fact (None when unparseable)."""

    parts: tuple[tuple[str, Fact], ...]
    passes: ClassVar[str] = "prints each part under a line `@@ NAME`; an empty part means not there (yet)"

    def command(self) -> Cmd:
        lines = ["exec 2>/dev/null"]
        for name, fact in self.parts:
            cmd = fact.command()
            if cmd.user not in (None, "root") or cmd.stdin is not None:
                raise ValueError(f"{name}: a batched fact runs as root and reads no input")
            lines += [f"echo '{SECTION}{name}'", cmd.script, 'echo "@@= $?"']
        secrets: tuple[Secret, ...] = tuple(s for _, fact in self.parts for s in fact.command().secrets)
        return Cmd("\n".join([*lines, "true"]), secrets=secrets)

    def parse(self, out: Output) -> dict:
        sections = parse_sections(out)
        found = {}
        for name, fact in self.parts:
            exited, text = sections.get(name, (1, ""))
            try:
                found[name] = fact.parse(Output(exited, text))
            except (Unparseable, ValueError):
                found[name] = None
        return found


def parse_sections(out: Output) -> dict[str, tuple[int, str]]:
    """A Batch's output: NAME -> (exit status, its output). A part without a status line exited 0."""
    found: dict[str, list] = {}
    for line in out.stdout.splitlines():
        if line.startswith("@@= ") and found:
            status = line[4:].strip()
            found[next(reversed(found))][0] = int(status) if status.isdigit() else 1
        elif line.startswith(SECTION):
            found[line[len(SECTION) :]] = [0, []]
        elif found:
            found[next(reversed(found))][1].append(line)
    return {
        name: (exited, "\n".join(lines).strip() + ("\n" if lines else ""))
        for name, (exited, lines) in found.items()
    }


# --- PostgreSQL -----------------------------------------------------------------------------------------


def psql(sql: str, port: int, database: str = "postgres", secrets=()) -> Cmd:
    """SQL as the postgres superuser over the local socket; the SQL travels on stdin."""
    return Cmd(
        f"psql -XAtq -v ON_ERROR_STOP=1 -p {port} -d {database}", user="postgres", stdin=sql, secrets=secrets
    )


def psql_row(out: Output, columns: int) -> list[str]:
    """First row of `psql -XAtq` output (fields separated by |)."""
    lines = [x for x in out.stdout.splitlines() if x.strip()]
    if not out.ok or not lines:
        raise Unparseable(f"no result from psql: {out.why()}")
    fields = lines[0].split("|")
    if len(fields) != columns:
        raise Unparseable(f"expected {columns} fields from psql, got {lines[0]!r}")
    return fields


def psql_rows(out: Output, columns: int) -> list[list[str]]:
    """Every row of `psql -XAtq` output (may be none)."""
    if not out.ok:
        raise Unparseable(f"psql failed: {out.why()}")
    rows = [x.split("|") for x in out.stdout.splitlines() if x.strip()]
    if any(len(r) != columns for r in rows):
        raise Unparseable(f"expected {columns} fields from psql, got {out.stdout.strip()!r}")
    return rows


@dataclass(frozen=True)
class Query(Fact[str]):
    """One value from a query as postgres; '' when it printed nothing. `means`: what the value says."""

    sql: str
    port: int
    means: str = "prints one value"

    def command(self) -> Cmd:
        return psql(self.sql, self.port)

    def parse(self, out: Output) -> str:
        if not out.ok:
            raise Unparseable(out.why())
        return out.stdout.strip()

    def describe(self) -> str:
        return self.means


@dataclass(frozen=True)
class ServerVersion(Fact[int]):
    port: int
    passes: ClassVar[str] = "prints server_version_num, e.g. 150012 for 15.12: both hosts the same major (15)"

    def command(self) -> Cmd:
        return psql("SHOW server_version_num;", self.port)

    @staticmethod
    def parse(out: Output) -> int:
        (num,) = psql_row(out, 1)
        if not num.isdigit():
            raise Unparseable(f"not a server_version_num: {num!r}")
        return int(num) // 10000


@dataclass(frozen=True)
class Capacity:
    wal_level: str
    free_wal_senders: int
    free_slots: int


@dataclass(frozen=True)
class ReplicationCapacity(Fact[Capacity]):
    port: int
    passes: ClassVar[str] = (
        "prints `wal_level|free WAL senders|free slots`: replica (or logical), at least 2 senders and 1 slot"
    )

    def command(self) -> Cmd:
        return psql(
            "SELECT current_setting('wal_level'),\n"
            "       current_setting('max_wal_senders')::int - (SELECT count(*) FROM pg_stat_replication),\n"
            "       current_setting('max_replication_slots')::int\n"
            "       - (SELECT count(*) FROM pg_replication_slots);",
            self.port,
        )

    @staticmethod
    def parse(out: Output) -> Capacity:
        level, senders, slots = psql_row(out, 3)
        return Capacity(level, int(senders), int(slots))


@dataclass(frozen=True)
class Identity:
    in_recovery: bool
    system_identifier: str
    user_databases: tuple[str, ...]
    data_directory: str


@dataclass(frozen=True)
class ClusterIdentity(Fact[Identity]):
    port: int
    passes: ClassVar[str] = (
        "prints `in recovery (t/f)|system identifier|user databases|data directory`; on new "
        "before phase 1: `f|...||<data directory>` (a fresh cluster, no databases)"
    )

    def command(self) -> Cmd:
        return psql(
            "SELECT pg_is_in_recovery(), (SELECT system_identifier FROM pg_control_system()),\n"
            "       (SELECT coalesce(string_agg(datname, ',' ORDER BY datname), '') FROM pg_database\n"
            "        WHERE datname NOT IN ('postgres', 'template0', 'template1')),\n"
            "       current_setting('data_directory');",
            self.port,
        )

    @staticmethod
    def parse(out: Output) -> Identity:
        recovery, sysid, dbs, data_directory = psql_row(out, 4)
        return Identity(recovery == "t", sysid, tuple(x for x in dbs.split(",") if x), data_directory)


@dataclass(frozen=True)
class DataDirEntries(Fact[Output]):
    """What the data directory holds when no cluster answers (a missing directory lists nothing)."""

    path: str
    passes: ClassVar[str] = "prints nothing when {path} is empty or missing"

    def command(self) -> Cmd:
        return Cmd(f"test ! -e {shlex.quote(self.path)} || ls -A {shlex.quote(self.path)}")

    @staticmethod
    def parse(out: Output) -> Output:
        return out


# A hot standby refuses to start when one of these is lower than on its primary.
HOT_STANDBY_SETTINGS = (
    "max_connections",
    "max_worker_processes",
    "max_wal_senders",
    "max_prepared_transactions",
    "max_locks_per_transaction",
)


@dataclass(frozen=True)
class StandbySettings(Fact["dict[str, int] | None"]):
    """The settings a hot standby must have at least as high as its primary; None when no cluster answers."""

    port: int
    passes: ClassVar[str] = "prints `name|value` for each of " + ", ".join(HOT_STANDBY_SETTINGS)

    def command(self) -> Cmd:
        names = ", ".join(f"'{name}'" for name in HOT_STANDBY_SETTINGS)
        return psql(
            f"SELECT name, setting FROM pg_settings WHERE name IN ({names}) ORDER BY name;", self.port
        )

    @staticmethod
    def parse(out: Output) -> dict[str, int] | None:
        if not out.ok:
            return None
        rows = psql_rows(out, 2)
        return {name: int(value) for name, value in rows if value.lstrip("-").isdigit()}


def too_low(old: dict[str, int], new: dict[str, int]) -> dict[str, tuple[int, int]]:
    """Each hot-standby setting lower on new than on old: name -> (old's value, new's)."""
    return {
        name: (old[name], new[name])
        for name in HOT_STANDBY_SETTINGS
        if name in old and name in new and new[name] < old[name]
    }


@dataclass(frozen=True)
class DatabaseSize(Fact[int]):
    port: int
    passes: ClassVar[str] = "prints the size of all databases in bytes"

    def command(self) -> Cmd:
        return psql("SELECT sum(pg_database_size(datname))::bigint FROM pg_database;", self.port)

    @staticmethod
    def parse(out: Output) -> int:
        text = out.stdout.strip()
        if not out.ok or not text.lstrip("-").isdigit():
            raise Unparseable(f"expected a number: {out.why() if not out.ok else text!r}")
        return int(text)


@dataclass(frozen=True)
class Cluster:
    """Where Debian keeps a cluster: its version and name, data directory, unit, binaries, pg_hba.conf and
    start.conf."""

    version: int
    name: str
    data_dir: str
    hba_file: str

    @property
    def unit(self) -> str:
        return f"postgresql@{self.version}-{self.name}"

    @property
    def bindir(self) -> str:
        return f"/usr/lib/postgresql/{self.version}/bin"

    @property
    def config_dir(self) -> str:
        return f"/etc/postgresql/{self.version}/{self.name}"

    @property
    def start_conf(self) -> str:
        return f"{self.config_dir}/start.conf"

    @property
    def log_file(self) -> str:
        return f"/var/log/postgresql/postgresql-{self.version}-{self.name}.log"


# A plan reads no host: the runbook shows what the real run finds with pg_lsclusters.
PLANNED_CLUSTER = Cluster("<version>", "<cluster>", "<data_directory>", "<hba_file>")  # type: ignore[arg-type]
PLAIN_PATH = re.compile(r"/[A-Za-z0-9._+@:-]+(/[A-Za-z0-9._+@:-]+)+")
# Folders that hold more than one cluster's data: never a data directory to replace (or remove).
SHARED_FOLDERS = (
    "/var/lib",
    "/var/lib/postgresql",
    "/usr/lib",
    "/usr/local",
    "/home",
    "/srv",
    "/opt",
    "/var",
)


@dataclass(frozen=True)
class ClusterOnPort(Fact[Cluster]):
    """The cluster configured for `port`, found with Debian's pg_lsclusters whether or not it runs (and even
    while its data directory is moved aside): its version, name and data directory as the host has them,
    and its pg_hba.conf as its configuration names it. Never guessed from a folder's name."""

    port: int
    passes: ClassVar[str] = (
        "prints `VERSION NAME DATA_DIRECTORY hba_file = '...'` for the cluster on port {port} "
        "(from pg_lsclusters, running or not)"
    )
    stable: ClassVar[bool] = True

    def command(self) -> Cmd:
        return Cmd(
            "pg_lsclusters -h | while read -r version name port status owner data rest; do\n"
            f'  if [ "$port" = {self.port} ]; then\n'
            '    echo "$version $name $data $(pg_conftool "$version" "$name" show hba_file 2>/dev/null)"\n'
            "  fi\ndone"
        )

    def parse(self, out: Output) -> Cluster:
        lines = out.stdout.strip().splitlines()
        words = lines[0].split(None, 3) if len(lines) == 1 else []
        if len(words) < 3 or not words[0].isdigit():
            listed = "several clusters" if len(lines) > 1 else "no cluster"
            raise Unparseable(
                f"pg_lsclusters lists {listed} on port {self.port}"
                + (f" ({out.why()})" if not out.ok else "")
                + ": PG_PORT must name the port of the one cluster Mastodon uses"
            )
        version, name, data = int(words[0]), words[1], words[2]
        # the base backup replaces this directory (rm -rf of a failed copy): a plain path, two levels deep
        # at least, never a shared system folder
        if not PLAIN_PATH.fullmatch(data) or "/." in data or data.rstrip("/") in SHARED_FOLDERS:
            raise Unparseable(
                f"cluster {version}/{name} has a data directory this tool will not touch: {data!r}"
            )
        setting = re.search(r"hba_file\s*=\s*'?([^'\s]+)'?", words[3] if len(words) > 3 else "")
        return Cluster(
            version,
            name,
            data,
            setting.group(1) if setting else f"/etc/postgresql/{version}/{name}/pg_hba.conf",
        )


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


@dataclass(frozen=True)
class Senders(Fact["list[Sender]"]):
    port: int
    passes: ClassVar[str] = (
        "prints a line per replica: `name|address|state|sent|write|flush|replay|lag bytes`; "
        "new's line says `streaming`"
    )

    def command(self) -> Cmd:
        return psql(
            "SELECT application_name, coalesce(host(client_addr), 'local'), state,\n"
            "       coalesce(sent_lsn::text, ''), coalesce(write_lsn::text, ''),\n"
            "       coalesce(flush_lsn::text, ''),\n"
            "       coalesce(replay_lsn::text, ''),\n"
            "       coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn), 0)::bigint\n"
            "FROM pg_stat_replication;",
            self.port,
        )

    @staticmethod
    def parse(out: Output) -> list[Sender]:
        return [Sender(*row[:7], int(row[7] or 0)) for row in psql_rows(out, 8)]


@dataclass(frozen=True)
class Slot:
    name: str
    active: bool
    wal_status: str
    retained_bytes: int


@dataclass(frozen=True)
class SlotState(Fact["Slot | None"]):
    port: int
    slot: str
    passes: ClassVar[str] = (
        "prints `{slot}|active (t/f)|wal_status|retained bytes`; nothing when the slot does not exist"
    )

    def command(self) -> Cmd:
        return psql(
            f"SELECT slot_name, active, coalesce(wal_status, ''),\n"
            f"       coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn), 0)::bigint\n"
            f"FROM pg_replication_slots WHERE slot_name = '{self.slot}';",
            self.port,
        )

    @staticmethod
    def parse(out: Output) -> Slot | None:
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


@dataclass(frozen=True)
class StandbyState(Fact["Standby | None"]):
    """new's recovery state and WAL positions; None when no cluster answers."""

    port: int
    passes: ClassVar[str] = (
        "prints `in recovery|receiver status|received LSN|replayed LSN|last replayed "
        "transaction|its age in s|system identifier`; a streaming replica prints `t|streaming|...`"
    )

    def command(self) -> Cmd:
        return psql(
            "SELECT pg_is_in_recovery(), coalesce((SELECT status FROM pg_stat_wal_receiver), ''),\n"
            "       coalesce(pg_last_wal_receive_lsn()::text, ''),\n"
            "       coalesce(pg_last_wal_replay_lsn()::text, ''),\n"
            "       coalesce(pg_last_xact_replay_timestamp()::text, ''),\n"
            "       coalesce(extract(epoch FROM now() - pg_last_xact_replay_timestamp())::text, ''),\n"
            "       (SELECT system_identifier FROM pg_control_system());",
            self.port,
        )

    @staticmethod
    def parse(out: Output) -> Standby | None:
        try:
            recovery, status, receive, replay, last, age, sysid = psql_row(out, 7)
        except Unparseable:
            return None  # no cluster answers
        return Standby(recovery == "t", status, receive, replay, last, float(age) if age else None, sysid)


def lsn(text: str) -> int:
    """A WAL position such as '0/5000028' as a number (for comparisons)."""
    high, _, low = text.strip().partition("/")
    try:
        return (int(high, 16) << 32) | int(low, 16)
    except ValueError:
        raise Unparseable(f"not an LSN: {text!r}") from None


@dataclass(frozen=True)
class Control:
    state: str  # 'shut down', 'in production', 'in archive recovery', ...
    checkpoint_lsn: str
    timeline: int


@dataclass(frozen=True)
class ControlData(Fact[Control]):
    """`pg_controldata DATADIR`: cluster state, latest checkpoint location and its timeline."""

    bindir: str
    data_dir: str
    passes: ClassVar[str] = (
        "prints the control file; after a clean shutdown `Database cluster state: shut down`, "
        "and `Latest checkpoint location` is the position new must pass"
    )

    def command(self) -> Cmd:
        return Cmd(f"{self.bindir}/pg_controldata {shlex.quote(self.data_dir)}", user="postgres")

    @staticmethod
    def parse(out: Output) -> Control:
        fields = dict(line.split(":", 1) for line in out.stdout.splitlines() if ":" in line)
        fields = {k.strip(): v.strip() for k, v in fields.items()}
        try:
            return Control(
                fields["Database cluster state"],
                fields["Latest checkpoint location"],
                int(fields["Latest checkpoint's TimeLineID"]),
            )
        except (KeyError, ValueError):
            raise Unparseable(f"no pg_controldata output: {out.why()}") from None


@dataclass(frozen=True)
class Fork:
    parent: int  # the timeline it left
    lsn: str  # where


@dataclass(frozen=True)
class TimelineFork(Fact["Fork | None"]):
    """Where the cluster's newest timeline began: the last line of the newest history file in pg_wal."""

    data_dir: str
    passes: ClassVar[str] = (
        "prints `PARENT_TIMELINE<TAB>LSN<TAB>reason` of the newest timeline switch; nothing before any "
        "promotion"
    )

    def command(self) -> Cmd:
        wal = shlex.quote(f"{self.data_dir}/pg_wal")
        return Cmd(
            f'f=$(ls {wal}/*.history 2>/dev/null | sort | tail -n 1); [ -z "$f" ] || tail -n 1 "$f"',
            user="postgres",
        )

    @staticmethod
    def parse(out: Output) -> Fork | None:
        fields = out.stdout.strip().split("\t")
        if len(fields) < 2 or not fields[0].isdigit() or "/" not in fields[1]:
            return None
        return Fork(int(fields[0]), fields[1])


@dataclass(frozen=True)
class PgReady(Fact[bool]):
    port: int
    host: str = "127.0.0.1"
    passes: ClassVar[str] = (
        "prints `{host}:{port} - accepting connections` and exits 0 when PostgreSQL answers there"
    )

    def command(self) -> Cmd:
        return Cmd(f"pg_isready -h {self.host} -p {self.port}", user="postgres")

    @staticmethod
    def parse(out: Output) -> bool:
        return out.ok


@dataclass(frozen=True)
class ServerLog(Fact[str]):
    """The last lines of a cluster's log (why it did not start), for an error message."""

    path: str
    lines: int = 8
    passes: ClassVar[str] = "prints the cluster log's last lines: they say why it stopped or did not start"

    def command(self) -> Cmd:
        return Cmd(f"tail -n {self.lines} {shlex.quote(self.path)}")

    @staticmethod
    def parse(out: Output) -> str:
        return out.stdout.strip() or out.why()


@dataclass(frozen=True)
class JsonFile(Fact["dict | None"]):
    """A JSON record this tool wrote; None when missing or damaged."""

    path: str
    passes: ClassVar[str] = "prints the JSON record; nothing (and `No such file`) when it was not written"

    def command(self) -> Cmd:
        return Cmd(f"cat {shlex.quote(self.path)}")

    @staticmethod
    def parse(out: Output) -> dict | None:
        try:
            return json.loads(out.stdout) if out.ok and out.stdout.strip() else None
        except ValueError:
            return None


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class Front:
    """The program that takes Mastodon's database connections on a host: `postgres`, `pgbouncer`, ... ("" when
    nothing local listens there); for PgBouncer, its configuration file and pool mode."""

    program: str
    config: str = ""
    pool_mode: str = ""

    @property
    def pgbouncer(self) -> bool:
        return self.program == "pgbouncer"


@dataclass(frozen=True)
class DatabaseFront(Fact[Front]):
    """Who takes connections where Mastodon connects for its database (DB_HOST, DB_PORT): a PgBouncer whose
    configuration listens on that port, or the PostgreSQL cluster of that port. Found from the processes'
    own configuration, not from the socket's owner: in a container root may not see that."""

    port: int
    passes: ClassVar[str] = (
        "prints `program pgbouncer`, `config FILE` and `pool_mode MODE` when a PgBouncer listens on "
        "port {port} (PgBouncer's default mode is session), `program postgres` when a cluster does, "
        "nothing otherwise"
    )
    planned: ClassVar[Front] = Front("postgres")

    def command(self) -> Cmd:
        setting = "sed -n 's/^[[:space:]]*{0}[[:space:]]*=[[:space:]]*\\([a-z0-9]*\\).*/\\1/p' \"$ini\""
        return Cmd(
            "for pid in $(pgrep -x pgbouncer); do\n"
            "  ini=$(tr '\\0' '\\n' < \"/proc/$pid/cmdline\" | grep '\\.ini$' | tail -n 1)\n"
            f"  port=$({setting.format('listen_port')} | tail -n 1)\n"
            f'  [ "${{port:-6432}}" = {self.port} ] || continue\n'
            '  echo program pgbouncer; echo "config $ini"\n'
            f'  echo "pool_mode $({setting.format("pool_mode")})"\n'
            "  exit 0\n"
            "done\n"
            f"pg_lsclusters -h | awk '$3 == {self.port} {{ print \"program postgres\" }}'"
        )

    @staticmethod
    def parse(out: Output) -> Front:
        found = dict(line.split(" ", 1) for line in out.stdout.splitlines() if " " in line)
        program = found.get("program", "")
        mode = found.get("pool_mode", "").strip() or ("session" if program == "pgbouncer" else "")
        return Front(program, found.get("config", ""), mode)


NO_PASSWORD = "called without any password configured"


@dataclass(frozen=True)
class Server:
    """What `INFO server` told, with the password of Mastodon's settings."""

    run_id: str  # this server process's id: two answers with the same id came from one server
    config_file: str
    no_password: bool  # it answered, but has no password while the settings give one
    problem: str  # why it did not answer ("" when it did)


@dataclass(frozen=True)
class RedisServer(Fact[Server]):
    """Which Redis answers at a target of Mastodon's settings, and whether it takes their password."""

    target: redis_cli.Target
    passes: ClassVar[str] = (
        "prints INFO server (run_id, config_file); NOAUTH or WRONGPASS when the password is refused, "
        f"`AUTH failed: ... {NO_PASSWORD}` when Redis has none"
    )

    def command(self):
        return redis_cli.script(self.target, "r INFO server 2>&1")

    @staticmethod
    def parse(out: Output) -> Server:
        text = out.stdout + out.stderr
        found = dict(re.findall(r"^(run_id|config_file):(.*?)\r?$", text, re.M))
        problem = "" if found.get("run_id") else (text.strip().splitlines() or [out.why()])[-1]
        return Server(found.get("run_id", ""), found.get("config_file", ""), NO_PASSWORD in text, problem)


@dataclass(frozen=True)
class PackageInstalled(Fact[bool]):
    """Whether a Debian package is installed."""

    package: str
    passes: ClassVar[str] = "prints `install ok installed` when {package} is installed"

    def command(self) -> Cmd:
        return Cmd(f"dpkg-query -W -f='${{Status}}' {self.package}")

    @staticmethod
    def parse(out: Output) -> bool:
        return "install ok installed" in out.stdout
