"""PgBouncer on new (DATABASE_ENDPOINT=pgbouncer): the database endpoint of new's Mastodon, whose address
never changes. Until the failover it reaches old's PostgreSQL through the tunnel; phase 3 pauses it, fences
old, promotes new, points it at new's own PostgreSQL and resumes it: Mastodon's queries wait instead of
failing, and no Mastodon process restarts.

Files on new (Debian's pgbouncer package, which runs as postgres):
- /etc/pgbouncer/pgbouncer.ini, from templates/pgbouncer.ini.j2: transaction pooling; its one database entry
  names the server (old's through the tunnel, then new's own over the socket);
- /etc/pgbouncer/userlist.txt (0600): Mastodon's role and the password it logs in with (old's DB_PASS, or
  the tunnel password of the access step where old's Mastodon logs in by peer);
- /etc/pgbouncer/mastodon-migration-hba.conf: Mastodon's Unix user over the socket (peer), and its password
  over 127.0.0.1;
- in new's PostgreSQL, a pg_hba block and an ident map: PgBouncer (Unix user postgres) logs in as Mastodon's
  role over the socket with no password, so it outlives cleanup, which removes the tunnel's.
The admin console (PAUSE, RESUME, RELOAD, SHOW) is reached over the socket as Unix user postgres.
"""

from __future__ import annotations

import shlex
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import ClassVar, Iterator

from . import access, mastodon_env, postgres, system
from .command import Cmd, CommandFailed, HostUnreachable, Secret, Session, StepFailed, known
from .facts import DatabaseFront, Fact, FileText, Output, PackageInstalled, SecretFileText, UnitState
from .mastodon import CanWrite, env_values, read_env
from .templates import render

INI = "/etc/pgbouncer/pgbouncer.ini"
AUTH_FILE = "/etc/pgbouncer/userlist.txt"
HBA_FILE = "/etc/pgbouncer/mastodon-migration-hba.conf"
HEADER = ";; Written by mastodon-migration"
UNIT = "pgbouncer"
IDENT_MAP = "mastodon-migration"
PAUSE_SECONDS = 5  # running transactions get this long to end before the pause gives up


def console(port: int, *sql: str) -> Cmd:
    """Commands on PgBouncer's admin console, in one psql, over its socket as the Unix user it runs as
    (started as root, so that status can batch it with other facts)."""
    return Cmd(
        f"runuser -u postgres -- psql -XAq -F '|' -h {mastodon_env.POOLER_SOCKET_DIR} -p {port} "
        "-U pgbouncer pgbouncer " + " ".join(f"-c {shlex.quote(x)}" for x in sql)
    )


def admin(cfg, sql: str) -> Cmd:
    return console(cfg.pgbouncer_port, sql)


@dataclass(frozen=True)
class Pool:
    """PgBouncer's entry for Mastodon's database: its server and whether it is paused."""

    host: str
    port: str
    paused: bool


@dataclass(frozen=True)
class PoolState(Fact["Pool | None"]):
    """SHOW DATABASES on new's PgBouncer, the row of Mastodon's database (with `database` "": the first
    besides the admin console's); None when PgBouncer does not answer or has no such entry."""

    port: int
    database: str
    passes: ClassVar[str] = (
        "prints SHOW DATABASES with a header line: the row of {database} names its server (host, port) and "
        "`paused` (1 while paused)"
    )

    def command(self) -> Cmd:
        return console(self.port, "SHOW DATABASES")

    def parse(self, out: Output) -> Pool | None:
        if not out.ok:
            return None
        for row in console_rows(out.stdout):
            if row.get("name") == self.database or (not self.database and row.get("name") != "pgbouncer"):
                return Pool(row.get("host", ""), row.get("port", ""), row.get("paused", "0") == "1")
        return None


def console_rows(text: str) -> list[dict[str, str]]:
    """The rows of a `psql -A -F'|'` table from the admin console (a header line first), as dicts; lines
    without a `|` (a footer, the output of other statements) are left out."""
    lines = [x for x in text.splitlines() if "|" in x]
    header = lines[0].split("|") if lines else []
    return [dict(zip(header, line.split("|"), strict=False)) for line in lines[1:]]


def _names(s: Session) -> tuple[dict | None, str, str]:
    values = env_values(read_env(s, s.old))
    role, database = access.names(values)
    return values, role, database


def server(s: Session, primary: str) -> tuple[str, int]:
    """Where PgBouncer's database entry points: old's PostgreSQL through the tunnel, or new's own over the
    socket (the ident map lets PgBouncer log in there without a password)."""
    cfg = s.settings
    if primary == "old":
        return "127.0.0.1", cfg.tunnel_port
    return mastodon_env.POOLER_SOCKET_DIR, cfg.pg_port


POOL_DEFAULTS = {"max_client_conn": 200, "default_pool_size": 20}


def pool_sizes(s: Session, values: dict | None) -> dict[str, int | str]:
    """PgBouncer's pool sizes: old's own PgBouncer's where old's Mastodon goes through one (so new keeps what
    old's admin chose), else POOL_DEFAULTS."""
    port = mastodon_env.database_address(values)[1] if values is not None else "<DB_PORT>"
    front = s.old.fact(DatabaseFront(port), then="PgBouncer there: new's takes its pool sizes")
    if s.planning:  # what the run will find
        return {key: f"<old's PgBouncer's {key}, else {value}>" for key, value in POOL_DEFAULTS.items()}
    if not front.pgbouncer:
        return dict(POOL_DEFAULTS)
    text = s.old.fact(FileText(front.config)) or ""
    found = dict(POOL_DEFAULTS)
    for line in text.splitlines() if known(text) else []:
        key, _, value = (part.strip() for part in line.partition("="))
        if key in found and value.isdigit():
            found[key] = int(value)
    return found


def ini_text(s: Session, database: str, primary: str, values: dict | None) -> str:
    host, port = server(s, primary)
    return render(
        "pgbouncer.ini.j2",
        database=database,
        server_host=host,
        server_port=port,
        port=s.settings.pgbouncer_port,
        hba_file=HBA_FILE,
        auth_file=AUTH_FILE,
        **pool_sizes(s, values),
    )


def _password(s: Session, values: dict | None, role: str, database: str) -> Secret:
    """The password PgBouncer logs in with through the tunnel: old's DB_PASS, or the access step's (in new's
    ~mastodon/.pgpass) where old's Mastodon logs in by peer."""
    if values is not None and values.get("DB_PASS"):
        return Secret(values["DB_PASS"], "DB_PASS in old's .env.production")
    prefix = access.pgpass_prefix(s.settings, database, role)
    text = s.new.fact(SecretFileText(access.pgpass(s, s.new), s.settings.mastodon_user))
    lines = [x for x in (text or "").splitlines() if x.startswith(prefix)] if known(text) else []
    if known(text) and not lines:
        raise StepFailed(
            "new has no password for the tunnel in ~mastodon/.pgpass: run phase1-replicate again"
        )
    return Secret(
        lines[0][len(prefix) :] if lines else "<password>", "the tunnel password in ~mastodon/.pgpass"
    )


def _auth_line(role: str, password: Secret) -> str:
    return f'"{role}" "{password.reveal().replace(chr(34), chr(34) * 2)}"\n'


def ensure_on_new(s: Session) -> None:
    """Phase 2: PgBouncer on new, pointing at old's PostgreSQL through the tunnel, proven with a write."""
    cfg = s.settings
    with s.step(
        "PgBouncer on new",
        f"new's Mastodon reaches its database through PgBouncer on new (port {cfg.pgbouncer_port}, "
        "transaction pooling): old's PostgreSQL through the tunnel now, new's own after the failover, "
        "at the same address",
        undo=f"systemctl disable --now {UNIT} on new (a replaced pgbouncer.ini is kept as .mig-*)",
    ):
        values, role, database = _names(s)
        installed = s.new.fact(
            PackageInstalled(UNIT), then="when it is not installed: apt-get install pgbouncer (Debian's)"
        )
        if not installed:
            s.new.run(Cmd("DEBIAN_FRONTEND=noninteractive apt-get install -y -q pgbouncer", stream=True))
        place = postgres.cluster(s, s.new)
        postgres.put_hba_rule(s, "pgbouncer", f"local {database} {role} peer map={IDENT_MAP}", remote=s.new)
        ident = f"{place.config_dir}/pg_ident.conf"
        s.new.run(
            system.replace_lines(
                ident,
                f"{IDENT_MAP} ",
                f"{IDENT_MAP} postgres {role}\n{IDENT_MAP} {cfg.mastodon_user} {role}\n",
                user="postgres",
                mode="0640",
            )
        )
        s.new.run(postgres.psql("SELECT pg_reload_conf();", cfg.pg_port))
        password = _password(s, values, role, database)
        have = s.new.fact(SecretFileText(AUTH_FILE))
        if not known(have) or have != _auth_line(role, password):
            s.new.write_file(
                AUTH_FILE, _auth_line(role, password), owner="postgres", mode="0600", secrets=(password,)
            )
        hba = (
            f"# {HEADER[3:]}\nlocal {database} {role} peer\n"
            f"host {database} {role} 127.0.0.1/32 scram-sha-256\n"
        )
        system.converge_file(s.new, HBA_FILE, hba, s.new.fact(FileText(HBA_FILE)), header="#", force=True)
        primary = "new" if postgres.promoted_record(s) else "old"
        current = s.new.fact(FileText(INI))
        want = ini_text(s, database, primary, values)
        changed = system.converge_file(
            s.new,
            INI,
            want,
            current,
            header=HEADER,
            force=not _defines_databases(current),
            owner="postgres",
            mode="0640",
        )
        state = s.new.fact(UnitState(UNIT), then="anything but `active`: enable and start it")
        if state != "active":
            s.new.run(system.systemctl("enable", "--now", UNIT))
        elif changed:
            s.new.run(system.systemctl("reload", UNIT))
        host = (
            mastodon_env.pooler_address(values)
            if values is not None
            else "<its socket directory or 127.0.0.1>"
        )
        login = Secret((values or {}).get("DB_PASS", ""), "DB_PASS in old's .env.production")
        s.new.wait_for(
            CanWrite(
                host,
                str(cfg.pgbouncer_port),
                role,
                database,
                None if values is None else login,
                cfg.mastodon_user,
            ),
            bool,
            what="Mastodon's role writes through PgBouncer on new",
            timeout=30,
            show=lambda ok: "not yet",
        )


def _defines_databases(text) -> bool:
    """Whether a pgbouncer.ini not written by this tool is in use: it has a database entry (the package's
    own file has only commented examples)."""
    if not known(text) or text is None:
        return False
    section = ""
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line
        elif section == "[databases]" and line and not line.startswith((";", "#")) and "=" in line:
            return True
    return False


@contextmanager
def paused(s: Session, database: str, pool) -> Iterator[None]:
    """PgBouncer paused for the body, and always resumed after it (an error, Ctrl-C). PAUSE waits for the
    running transactions, PAUSE_SECONDS at most: when they do not end, it resumes, and says who held it.
    `pool`: PgBouncer's entry as read just before (paused already when an earlier run stopped inside)."""
    cfg = s.settings
    with s.step(
        "pause PgBouncer",
        "new's Mastodon's queries wait in PgBouncer from here until it resumes, instead of failing; running "
        f"transactions get {PAUSE_SECONDS} s to end",
        undo=f"{admin(cfg, 'RESUME ' + database).line()} (on new)",
    ):
        if not (known(pool) and pool.paused):
            try:
                s.new.run(_bounded(admin(cfg, f"PAUSE {database}")))
            except CommandFailed:
                s.new.run(admin(cfg, f"RESUME {database}"))
                clients = s.new.run(admin(cfg, "SHOW SERVERS")).stdout
                raise StepFailed(
                    f"PgBouncer on new could not pause within {PAUSE_SECONDS} s: a transaction went on "
                    f"(PgBouncer's server connections:\n{clients.strip()}\n). It was resumed and nothing "
                    "was changed; run phase3-failover again."
                ) from None
    started = time.time()
    try:
        yield
    finally:
        with s.step(
            "resume PgBouncer",
            "RELOAD (pgbouncer.ini's server, if it changed, holds for the connections PgBouncer opens from "
            "now on), SHOW POOLS (how long the longest waiting query waited), RESUME: new's Mastodon's "
            "waiting queries go on; one command, so the pause lasts no longer than needed",
            undo="not needed: resuming ends the pause, and changes nothing else",
        ):
            try:
                out = s.new.run(console(cfg.pgbouncer_port, "RELOAD", "SHOW POOLS", f"RESUME {database}"))
            except (CommandFailed, HostUnreachable) as error:  # e.g. the connection to new dropped
                raise StepFailed(
                    f"PgBouncer on new was not resumed ({error}): it may still hold Mastodon's queries. Run "
                    "phase3-failover again now: it finishes what this run left and resumes it."
                ) from None
            if not s.planning:
                waited = longest_wait(out.stdout, database)
                s.say(
                    f"==> PgBouncer was paused for {time.time() - started:.1f} s"
                    + (f"; the longest a query waited: {waited:.1f} s" if waited is not None else "")
                )


def longest_wait(show_pools: str, database: str) -> float | None:
    """The longest wait of a client queued for `database`, from SHOW POOLS (maxwait and maxwait_us);
    None when the output has no such row."""
    waits = [
        int(row.get("maxwait", 0) or 0) + int(row.get("maxwait_us", 0) or 0) / 1e6
        for row in console_rows(show_pools)
        if row.get("database") == database
    ]
    return max(waits) if waits else None


def _bounded(cmd: Cmd) -> Cmd:
    return Cmd(f"timeout {PAUSE_SECONDS} {cmd.script}", user=cmd.user)


def _points_at(pool, host: str, port: int) -> bool:
    return known(pool) and pool is not None and (pool.host, pool.port) == (host, str(port))


def point_at_new(s: Session, pool, ini, want: str) -> None:
    """pgbouncer.ini on new becomes `want` (its database entry at new's own PostgreSQL); the resume's
    RELOAD applies it (no client is cut off). `pool`, `ini` (the file's text) and `want` come from before
    the pause. The whole file is written, not one line edited: a file that a killed run left cut short is
    replaced whole by the next."""
    host, port = server(s, "new")
    with s.step(
        "PgBouncer on new points at new's PostgreSQL",
        f"its database entry in pgbouncer.ini becomes host={host} port={port} (RELOAD comes with RESUME)",
        undo="not needed after the promotion: new's PostgreSQL is the only primary",
    ):
        if _points_at(pool, host, port) and want == ini:
            return
        if want != ini:  # phase 2 kept any file that this tool did not write
            s.new.write_file(INI, want, owner="postgres", mode="0640")


def promote_paused(s: Session, catchup_timeout: float) -> dict | None:
    """The promotion with Mastodon's queries held in PgBouncer: pause, fence, prove, promote, point PgBouncer
    at new, resume. Everything that only reads comes first, so the pause holds the switch alone. Returns the
    promotion's record when this run promoted new."""
    cfg = s.settings
    values, _, database = _names(s)
    pool = s.new.fact(
        PoolState(cfg.pgbouncer_port, database),
        then="at new's PostgreSQL, not paused: the switch is done; paused: an earlier run stopped inside it",
    )
    if known(pool) and pool is None:
        raise StepFailed("PgBouncer on new does not answer: run phase2-proxy again. Nothing was changed.")
    found = postgres.takeover_ready(s)
    if _points_at(pool, *server(s, "new")) and not pool.paused:
        return None if found is None else postgres.take_over(s, found, catchup_timeout)
    ini = s.new.fact(FileText(INI), then="anything but the file below: it is written inside the pause")
    want = ini_text(s, database, "new", values)
    with paused(s, database, pool):  # the promotion's record waits until the queries run again
        failover = None if found is None else postgres.take_over(s, found, catchup_timeout, record=False)
        point_at_new(s, pool, ini, want)
    if failover is not None:
        postgres.record_promotion(s, failover.get("old_checkpoint", "<old's Latest checkpoint location>"))
    return failover


def forget_tunnel_password(s: Session) -> None:
    """Cleanup: where the password was the tunnel's (old's Mastodon logs in by peer), PgBouncer no longer
    needs it: Mastodon logs in by peer, and PgBouncer reaches new's PostgreSQL by its ident map."""
    values, role, _ = _names(s)
    if values is None or values.get("DB_PASS"):
        return
    with s.step(
        "PgBouncer forgets the tunnel password",
        "the access password of the tunnel goes from PgBouncer's auth file too",
        undo="not needed: PgBouncer logs in over the socket",
    ):
        have = s.new.fact(SecretFileText(AUTH_FILE), then="a line for the role: write the file without it")
        if not known(have) or f'"{role}" ' in (have or ""):
            rest = "".join(x for x in (have or "").splitlines(True) if not x.startswith(f'"{role}" '))
            kept = Secret(rest if known(have) else "<the other lines>", "PgBouncer's other users")
            s.new.write_file(AUTH_FILE, kept.reveal(), owner="postgres", mode="0600", secrets=(kept,))
            s.new.run(admin(s.settings, "RELOAD"))
