"""PostgreSQL: actions on both clusters (replication role, base backup, promotion), and the replication
report."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json as json_module
import secrets
import time
from dataclasses import asdict, dataclass
from typing import Iterator

from . import checks, system
from .command import Cmd, CommandFailed, Remote, Secret, Session, StepFailed, known
from .executor import two_host_task
from .facts import (
    HOT_STANDBY_SETTINGS,
    PLANNED_CLUSTER,
    ClusterIdentity,
    ClusterOnPort,
    Control,
    ControlData,
    CountLines,
    DataDirEntries,
    FileText,
    JsonFile,
    PathExists,
    PgReady,
    Query,
    Raw,
    Sender,
    Senders,
    ServerLog,
    Slot,
    SlotState,
    Standby,
    StandbySettings,
    StandbyState,
    TimelineFork,
    UnitEnabled,
    UnitState,
    human_bytes,
    lsn,
    psql,
    too_low,
)
from .facts import Cluster as ClusterPlace
from .settings import Settings

PGPASS = "/var/lib/postgresql/.pgpass"
STATE_DIR = system.STATE_DIR
PROMOTION_RECORD = f"{STATE_DIR}/promotion.json"
PROMOTED = JsonFile(PROMOTION_RECORD)  # phase 3's "is this done?": the record written at the promotion

# How a person following the runbook computes the SCRAM verifier on their own machine, so that the
# password never reaches old (the same computation as scram_verifier; unit-tested against it).
SCRAM_ONE_LINER = (
    "python3 -c 'import base64,hashlib,hmac,os,sys;p=sys.stdin.read().strip().encode();s=os.urandom(16);"
    'k=hashlib.pbkdf2_hmac("sha256",p,s,4096);h=lambda m:hmac.new(k,m,"sha256").digest();'
    "b=lambda x:base64.b64encode(x).decode();"
    'print("SCRAM-SHA-256$4096:"+b(s)+"$"+b(hashlib.sha256(h(b"Client Key")).digest())'
    '+":"+b(h(b"Server Key")))\''
)


def cluster(s: Session, remote: Remote) -> ClusterPlace:
    """The host's cluster on PG_PORT: version, data directory, unit, binaries, pg_hba.conf and start.conf,
    whether it runs or not (the one way to find them; asked once per run)."""
    return remote.fact(
        ClusterOnPort(s.settings.pg_port),
        planned=PLANNED_CLUSTER,
        then="the unit is postgresql@VERSION-NAME; later commands use these paths",
    )


def scram_verifier(password: str, salt: bytes | None = None, iterations: int = 4096) -> str:
    """The SCRAM-SHA-256 verifier PostgreSQL stores: old receives this, never the password itself."""
    salt = salt or secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()

    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode()

    return (
        f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(hashlib.sha256(client_key).digest())}:{b64(server_key)}"
    )


def query(remote: Remote, sql: str, cfg: Settings, means: str, then: str = ""):
    """One value from a query on that host."""
    return remote.fact(Query(sql, cfg.pg_port, means), then=then)


# --- phase 1 steps: replication role, base backup ---------------------------------------------------


def ensure_replication_role(s: Session) -> None:
    cfg = s.settings
    with s.step(
        "replication role",
        f"old gets a role {cfg.replication_role} that may only replicate; its password "
        f"lives on new in {PGPASS} and reaches old only as a SCRAM verifier",
        undo=f"ssh old -- sudo -u postgres psql -c 'DROP ROLE {cfg.replication_role}'",
    ):
        has_role = query(
            s.old,
            f"SELECT rolreplication AND rolcanlogin FROM pg_roles WHERE rolname = '{cfg.replication_role}';",
            cfg,
            means="prints `t` when the role exists and may replicate; nothing when it does not",
        )
        pgpass_prefix = f"127.0.0.1:{cfg.tunnel_port}:*:{cfg.replication_role}:"
        has_password = s.new.fact(
            CountLines(PGPASS, pgpass_prefix, "postgres"),
            then="with `t` above and 1 here, the role is done: skip the next two blocks",
        )
        if has_role == "t" and has_password:
            return
        password = Secret(
            secrets.token_urlsafe(32),
            "the new replication password",
            how="a new random password: `openssl rand -base64 32`",
        )
        verifier = Secret(
            scram_verifier(password.reveal()),
            "SCRAM verifier of the replication password",
            how=f"computed on your own machine, so the password never reaches old: "
            f"`printf %s PASSWORD | {SCRAM_ONE_LINER}` (or psql's \\password)",
        )
        s.new.run(
            system.replace_lines(
                PGPASS,
                pgpass_prefix,
                pgpass_prefix + password.reveal() + "\n",
                user="postgres",
                secrets=(password,),
            )
        )
        sql = (
            f"DO $$BEGIN\n"
            f"  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{cfg.replication_role}') THEN\n"
            f"    CREATE ROLE {cfg.replication_role};\n"
            f"  END IF;\nEND$$;\n"
            f"ALTER ROLE {cfg.replication_role} WITH REPLICATION LOGIN PASSWORD '{verifier.reveal()}';\n"
            f"COMMENT ON ROLE {cfg.replication_role} IS '{system.MARK}: replication to new';\n"
        )
        s.old.run(psql(sql, cfg.pg_port, secrets=(verifier,)))


def ensure_replication_hba(s: Session) -> None:
    cfg = s.settings
    with s.step(
        "pg_hba.conf on old",
        f"allow {cfg.replication_role} to replicate from 127.0.0.1 only (the tunnel's end)",
        undo="restore the pg_hba.conf.mig-* backup next to pg_hba.conf, then SELECT pg_reload_conf()",
    ):
        put_hba_rule(s, "replication", f"host replication {cfg.replication_role} 127.0.0.1/32 scram-sha-256")


def put_hba_rule(s: Session, name: str, rule: str, remote: Remote | None = None) -> None:
    """One rule in a block of its own at the top of a host's pg_hba.conf (old's unless `remote` says;
    first match wins), checked by PostgreSQL before the reload; on an error the previous file comes back."""
    cfg, host = s.settings, remote or s.old
    hba = cluster(s, host).hba_file
    present = host.fact(
        CountLines(hba, rule, "postgres", whole_line=True),
        then="when it prints 1, the rule is in place: skip the rest of this step",
    )
    if present:
        return
    backup = "mig-" + time.strftime("%Y%m%d%H%M%S")
    host.run(system.put_block(hba, name, [rule], user="postgres", backup_suffix=backup))
    errors = query(
        host,
        "SELECT count(*) FROM pg_hba_file_rules WHERE error IS NOT NULL;",
        cfg,
        means="prints `0` when PostgreSQL reads the edited file without error",
        then="anything else: put the backup back (mv it over pg_hba.conf) and stop",
    )
    if known(errors) and errors != "0":
        host.run(Cmd(f"mv {hba}.{backup} {hba}", user="postgres"))
        raise StepFailed(f"{host.alias}'s {hba} has errors after the edit; the previous file was put back")
    host.run(psql("SELECT pg_reload_conf();", cfg.pg_port))


def ensure_slot_wal_cap(s: Session) -> None:
    cfg = s.settings
    with s.step(
        "cap WAL kept for slots",
        f"a stuck slot may keep at most {cfg.max_slot_wal_keep_size} of WAL on "
        "old, so it can never fill old's disk",
        undo="ALTER SYSTEM RESET max_slot_wal_keep_size; SELECT pg_reload_conf();",
    ):
        cap = query(
            s.old,
            "SHOW max_slot_wal_keep_size;",
            cfg,
            means="prints `-1` when unlimited",
            then="any other value is the admin's own cap: kept, skip the next block",
        )
        if known(cap) and cap != "-1":
            return
        s.old.run(
            psql(
                f"ALTER SYSTEM SET max_slot_wal_keep_size = '{cfg.max_slot_wal_keep_size}';\n"
                "SELECT pg_reload_conf();",
                cfg.pg_port,
            )
        )


def standby(s: Session, then: str = "") -> Standby | None:
    return s.new.fact(StandbyState(s.settings.pg_port), then=then)


def old_slot(s: Session) -> Slot | None:
    return s.old.fact(SlotState(s.settings.pg_port, s.settings.replication_slot))


def drop_slot(s: Session, *, ours_in_use: bool = False) -> None:
    """Drop our slot on old. A slot in use is dropped only when it is ours (a backup that just
    failed): its walsender is terminated first."""
    cfg = s.settings
    where = f"slot_name = '{cfg.replication_slot}'"
    if ours_in_use:
        s.old.run(
            psql(
                "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots\n"
                f"WHERE {where} AND active;",
                cfg.pg_port,
            )
        )
        s.old.wait_for(
            Query(
                f"SELECT count(*) FROM pg_replication_slots WHERE {where} AND active;",
                cfg.pg_port,
                "prints `0` once no connection uses the slot",
            ),
            lambda n: n == "0",
            what="the slot is released",
            timeout=30,
        )
    s.old.run(
        psql(
            f"SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots\n"
            f"WHERE {where} AND NOT active;",
            cfg.pg_port,
        )
    )


def _refuse_unless_empty(s: Session, force: bool) -> None:
    """Refuse (changing nothing) when new's directory holds data, unless --force moves it aside."""
    cfg = s.settings
    outputs = [
        host.fact(Raw(fact))
        for host, fact in (
            (s.new, ClusterIdentity(cfg.pg_port)),
            (s.new, DataDirEntries(cluster(s, s.new).data_dir)),
            (s.old, ClusterIdentity(cfg.pg_port)),
        )
    ]
    if s.planning:
        s.note(
            "new must hold a fresh default cluster (no user databases), an empty data directory, or a "
            "replica of old; anything else stops here (basebackup --force moves it aside)"
        )
        return
    found = checks.new_cluster(cfg, *outputs, cluster(s, s.new).data_dir)
    if found.status == checks.FAIL and not force:
        raise StepFailed(
            f"new's data directory: {found.detail}. Nothing was changed. Run basebackup --force "
            f"to move {cluster(s, s.new).data_dir} aside (it is kept, never deleted)."
        )


def _wait_streaming(s: Session) -> None:
    s.new.wait_for(
        StandbyState(s.settings.pg_port),
        lambda st: bool(st and st.receiver_status == "streaming"),
        what="new streams from old",
        timeout=120,
        show=lambda st: (st.receiver_status or "no WAL receiver yet") if st else "cluster starting",
    )


def run_basebackup(s: Session, force: bool = False, max_rate: str = "") -> None:
    cfg = s.settings
    with s.step(
        "base backup",
        "copy old's cluster to new through the tunnel; new starts as its streaming replica",
        undo="stop new's cluster; its previous data directory was kept next to it as <data directory>.mig-*",
    ):
        primary = query(
            s.old,
            "SELECT system_identifier FROM pg_control_system();",
            cfg,
            means="prints old's system identifier",
        )
        current = standby(
            s, then="`t|streaming|...` with old's system identifier: already a replica, nothing to do"
        )
        if current and current.in_recovery and current.system_identifier == primary:
            if current.receiver_status != "streaming":
                _wait_streaming(s)
            s.say("already streaming from old: nothing to do")
            return
        _refuse_unless_empty(s, force)
        existing = old_slot(s)
        if existing and existing.active:
            raise StepFailed(
                f"slot {cfg.replication_slot} on old is in use by another connection; "
                "stop that replica or choose another REPLICATION_SLOT"
            )
        if existing:
            drop_slot(s)
        raise_standby_settings(s)
        _copy_cluster(s, cluster(s, s.new).unit, max_rate)


STANDBY_DROP_IN = "mastodon-migration-standby.conf"


def raise_standby_settings(s: Session) -> None:
    """A hot standby refuses to start with a setting lower than its primary's (max_connections, ...): new
    gets old's values for each that is lower, in a drop-in of its own that its restart as a standby reads."""
    cfg = s.settings
    place = cluster(s, s.new)
    drop_in = f"{place.config_dir}/conf.d/{STANDBY_DROP_IN}"
    with s.step(
        "hot-standby settings on new",
        "each of max_connections, max_worker_processes, max_wal_senders, max_prepared_transactions and "
        "max_locks_per_transaction at least as high as on old, or new cannot start as old's standby",
        undo=f"ssh new -- 'sudo rm {drop_in} && sudo systemctl restart {place.unit}'",
    ):
        old_values = s.old.fact(StandbySettings(cfg.pg_port))
        new_values = s.new.fact(
            StandbySettings(cfg.pg_port), then="each lower than old's goes into the drop-in"
        )
        if s.planning:
            low = {"max_connections": ("<old's value>", "")}
        elif old_values is None or new_values is None:
            s.say("not read: a cluster does not answer; the settings are left as they are")
            return
        else:
            low = too_low(old_values, new_values)
        current = s.new.fact(FileText(drop_in), then="its lines stay; those printed above as lower are added")
        # Lines already there stay: new's running values may come from them (an earlier run raised them).
        want = {**drop_in_values(current), **{name: str(ours) for name, (ours, _) in low.items()}}
        text = (
            f"# {system.MARK}: new is old's hot standby, which needs these at least as high as on old.\n"
            + "".join(f"{name} = {want[name]}\n" for name in HOT_STANDBY_SETTINGS if name in want)
        )
        if not want or current == text:
            return
        s.new.run(Cmd(f"install -d -o postgres -g postgres {place.config_dir}/conf.d"))
        s.new.write_file(drop_in, text, owner="postgres")
        s.say(
            "raised on new: "
            + ", ".join(f"{name} {theirs} -> {ours}" for name, (ours, theirs) in low.items())
        )


def drop_in_values(text) -> dict[str, str]:
    """`name = value` lines of a configuration file (nothing when there is none, or in a plan)."""
    if not known(text) or not text:
        return {}
    pairs = (
        line.split("=", 1) for line in text.splitlines() if "=" in line and not line.lstrip().startswith("#")
    )
    return {name.strip(): value.strip() for name, value in pairs}


BACKUP_CUT_SHORT = "base-backup"  # its note: where new's data directory was moved aside
NOTHING_ASIDE = "none"  # the note when new had no data directory


def _copy_cluster(s: Session, unit: str, max_rate: str) -> None:
    """new's data directory moves aside and is replaced by a copy of old's; on failure it comes back. A
    marker written in the same command as the move says where it went, until the copy streams: a kill in
    between is undone by the next run (put_back_cut_short_copy)."""
    cfg, place = s.settings, cluster(s, s.new)
    data = place.data_dir
    exists = s.new.fact(PathExists(data), then="when it exists, it is moved aside (kept)")
    aside = f"{data}.mig-{time.strftime('%Y%m%d%H%M%S')}" if exists is not False else None
    s.new.run(
        Cmd(
            f"set -e\nsystemctl stop {unit}\n"
            + (f"mv {data} {aside}\n" if aside else "")
            + f"install -d -o postgres -g postgres -m 0700 {data}\n"
            f"install -d -m 0755 {system.UNFINISHED}\n"
            f"echo {aside or NOTHING_ASIDE} > {system.UNFINISHED}/{BACKUP_CUT_SHORT}"
        )
    )
    rate = f" --max-rate={max_rate}" if max_rate else ""
    backup = Cmd(
        f"{place.bindir}/pg_basebackup -h 127.0.0.1 -p {cfg.tunnel_port} -U {cfg.replication_role} "
        f"-D {data} -Fp -Xs -R -C -S {cfg.replication_slot} --checkpoint=fast -P -w{rate}",
        user="postgres",
        stream=True,
    )
    try:
        s.new.run(backup)
        s.new.run(Cmd(f"{place.bindir}/pg_verifybackup {data}", user="postgres"))
    except CommandFailed as error:
        _put_new_back(s, unit, aside)
        raise StepFailed(
            f"the base backup failed ({error.out.why()}). The slot on old was dropped and new's data "
            "directory is back as it was; old was not changed. Fix the cause and run basebackup again."
        ) from None
    try:
        s.new.run(system.systemctl("start", unit))
        _wait_streaming(s)
    except (CommandFailed, StepFailed) as error:
        why = s.new.fact(ServerLog(place.log_file))
        _put_new_back(s, unit, aside)
        raise StepFailed(
            f"new's copy of old did not become a streaming standby ({error}). Its log says:\n{why}\n"
            "The slot on old was dropped and new's previous data directory is back and running; old was not "
            "changed. Fix the cause (the log's last lines say which), then run phase1-replicate again."
        ) from None
    s.new.run(Cmd(f"rm -f {system.UNFINISHED}/{BACKUP_CUT_SHORT}"))


def put_back_cut_short_copy(s: Session) -> None:
    """A base backup that a kill cut short left new's cluster stopped and its data directory aside:
    put it back (the copy goes, the slot on old too) so that phase 1 starts over from a working new."""
    aside = system.cut_short(s.new, BACKUP_CUT_SHORT)
    if not known(aside) or aside is None:
        return
    with s.step(
        "put back a cut-short base backup",
        "a run stopped during the base backup: new's data directory comes back as it was, then phase 1 "
        "copies old again",
        undo="not needed: the partial copy is of no use",
    ):
        current = standby(s)
        if current and current.in_recovery and current.receiver_status == "streaming":
            s.say("the copy had finished and streams: kept")  # cut short only while waiting for streaming
        else:
            place = cluster(s, s.new)
            s.new.run(Cmd(f"pkill -KILL -f 'pg_basebackup .*-D {place.data_dir} ' || true"))
            _put_new_back(s, place.unit, None if aside == NOTHING_ASIDE else aside)
            s.say("new's data directory is back as it was before the copy")


def _put_new_back(s: Session, unit: str, aside: str | None) -> None:
    """Undo a copy that did not become a standby: the slot on old goes (its walsender ended first), new's
    cluster stops, the copy goes and the data directory moved aside (if any) comes back and starts. Once
    the directory aside is back, a repeat changes nothing."""
    data = cluster(s, s.new).data_dir
    drop_slot(s, ours_in_use=True)
    s.new.run(system.systemctl("stop", unit))
    if aside:
        s.new.run(Cmd(f"if test -e {aside}; then rm -rf {data} && mv {aside} {data}; fi"))
    else:
        s.new.run(Cmd(f"rm -rf {data} && install -d -o postgres -g postgres -m 0700 {data}"))
    if s.new.fact(PathExists(f"{data}/PG_VERSION", "-f")):
        s.new.run(system.systemctl("start", unit))
    s.new.run(Cmd(f"rm -f {system.UNFINISHED}/{BACKUP_CUT_SHORT}"))


# --- replication status ------------------------------------------------------------------------------


@dataclass
class ReplicationReport:
    """Both sides' view of replication, and whether it is healthy."""

    healthy: bool
    lag_bytes: int | None  # the smallest lag of a streaming replica; None when none streams
    max_lag_bytes: int
    senders: list[Sender]
    slot: Slot | None
    standby: Standby | None  # None: no cluster answers on new

    @property
    def lag_seconds(self) -> float | None:
        """How far behind new's replay is in time: nothing when it has replayed all old sent, else the age of
        its last replayed transaction (an upper bound)."""
        if self.lag_bytes == 0:
            return 0.0
        return self.standby.replay_age_seconds if self.standby else None

    def as_dict(self) -> dict:
        return {
            "healthy": self.healthy,
            "lag_bytes": self.lag_bytes,
            "max_lag_bytes": self.max_lag_bytes,
            "old": {
                "senders": [asdict(r) for r in self.senders],
                "slot": asdict(self.slot) if self.slot else None,
            },
            "new": asdict(self.standby) if self.standby else None,
        }

    def table(self) -> str:
        lines = [
            f"old  replica {r.application_name} from {r.client_addr}: {r.state}, sent {r.sent_lsn} write "
            f"{r.write_lsn} flush {r.flush_lsn} replay {r.replay_lsn}, lag {human_bytes(r.lag_bytes)}"
            for r in self.senders
        ] or ["old  no replica connected"]
        slot = self.slot
        lines.append(
            f"old  slot {slot.name}: {'active' if slot.active else 'INACTIVE'}, wal_status "
            f"{slot.wal_status}, retains {human_bytes(slot.retained_bytes)}"
            if slot
            else "old  no replication slot"
        )
        new = self.standby
        if new:
            age = f" ({new.replay_age_seconds:.0f} s ago)" if new.replay_age_seconds is not None else ""
            lines.append(
                f"new  {'in recovery' if new.in_recovery else 'NOT in recovery (a primary)'}, receiver "
                f"{new.receiver_status or 'not running'}, receive {new.receive_lsn or '-'}, replay "
                f"{new.replay_lsn or '-'}, last replayed transaction {new.last_replay or '-'}{age}"
            )
        else:
            lines.append("new  no cluster answers")
        lines.append(
            "healthy: "
            + (
                "yes"
                if self.healthy
                else f"NO (needs streaming with lag under {human_bytes(self.max_lag_bytes)})"
            )
        )
        return "\n".join(lines)


def replication_report(s: Session) -> ReplicationReport | None:
    """Both sides' view of replication, and whether it is healthy (None when planning)."""
    cfg = s.settings
    rows = s.old.fact(Senders(cfg.pg_port))
    our_slot = old_slot(s)
    new_side = standby(
        s,
        then="healthy: old lists new as `streaming` with a lag under MAX_LAG_BYTES, and new "
        "prints `t|streaming|...`",
    )
    if s.planning:
        return None
    streaming = [r for r in rows if r.state == "streaming"]
    lag = min((r.lag_bytes for r in streaming), default=None)
    healthy = bool(
        streaming
        and lag is not None
        and lag < cfg.max_lag_bytes
        and new_side
        and new_side.in_recovery
        and new_side.receiver_status == "streaming"
    )
    return ReplicationReport(healthy, lag, cfg.max_lag_bytes, rows, our_slot, new_side)


def show_replication_status(s: Session, as_json: bool = False) -> ReplicationReport | None:
    with s.step("replication status", "both sides' view: WAL positions, lag in bytes, the slot"):
        report = replication_report(s)
        if report is not None:
            s.show(json_module.dumps(report.as_dict(), indent=2) if as_json else report.table())
        return report


# --- tasks -----------------------------------------------------------------------------------------


@two_host_task
def replication_role(s: Session):
    """Create old's replication role (password kept on new only), its pg_hba rule and the WAL cap."""
    ensure_replication_role(s)
    ensure_replication_hba(s)
    ensure_slot_wal_cap(s)


@two_host_task(
    help={
        "force": "move a non-empty data directory on new aside (never deleted)",
        "max_rate": "throttle the copy, e.g. 50M (kB/s unless suffixed), so the tunnel leaves room",
    }
)
def basebackup(s: Session, force=False, max_rate=""):
    """Copy old's cluster to new with pg_basebackup through the tunnel; new becomes a streaming replica."""
    run_basebackup(s, force=force, max_rate=max_rate)


@two_host_task(help={"json": "print JSON for scripts instead of a table"})
def replication_status(s: Session, json=False):
    """Show replication from both sides (LSNs, lag, slot); exit 0 only when healthy."""
    report = show_replication_status(s, as_json=json)
    if report is not None and not report.healthy:
        raise StepFailed("replication is not healthy (see above)")


# --- phase 3: fence old, prove new has everything, promote -----------------------------------------
#
# Phase 3 can stop anywhere (Ctrl-C, a dropped connection, a killed laptop). Each part reads the real state
# first, so a re-run continues: `failover_stage` names where the hosts are, the failover record on new says
# what was done and when, and between the fence and the promotion any interruption lifts the fence.

ACCESS_BLOCKS = ("replication", "mastodon-access")  # what cleanup removes from old's pg_hba.conf
FENCE_RULES = [
    "local all postgres peer",
    "host replication {role} 127.0.0.1/32 scram-sha-256",
    "local all all reject",
    "host all all 0.0.0.0/0 reject",
    "host all all ::/0 reject",
]
FAILOVER_RECORD = f"{STATE_DIR}/failover.json"  # the intent record: written before the fence, then per step
FAILOVER = JsonFile(FAILOVER_RECORD)
BEFORE_FENCE = "mig-before-fence"  # suffix of old's pg_hba.conf and start.conf as they were before the fence
UNSTARTABLE = f"# {system.MARK}: fenced for the failover to new; see cleanup.\ndisabled\n"


@dataclass(frozen=True)
class OldCluster:
    """Old's cluster as the failover sees it."""

    running: bool
    fenced: bool  # the fence block is in its pg_hba.conf

    @property
    def untouched(self) -> bool:
        return self.running and not self.fenced


def old_cluster(s: Session, place: ClusterPlace) -> OldCluster:
    running = s.old.fact(UnitState(place.unit), then="`active`: old still runs") == "active"
    blocks = s.old.fact(
        CountLines(place.hba_file, f"# BEGIN {system.MARK} fence", "postgres", whole_line=True),
        then="1: old is fenced already (a run stopped after the fence)",
    )
    return OldCluster(running or s.planning, known(blocks) and blocks > 0)


def failover_stage(s: Session) -> str:
    """`replica` (nothing done yet), `fenced` (old fenced or stopped, new not promoted) or `promoted`."""
    current = standby(s, then="`f|...` (not in recovery) means new is already the primary")
    if known(current) and current and not current.in_recovery:
        return "promoted"
    return "replica" if old_cluster(s, cluster(s, s.old)).untouched else "fenced"


def failover_record(s: Session) -> dict:
    """What the failover record on new says ({} when there is none, or in a plan)."""
    record = s.new.fact(FAILOVER, then="what an earlier run did, and when")
    return record if known(record) and record else {}


def note_failover(s: Session, record: dict, stamp: str = "", **facts) -> dict:
    """`record` with `facts` added (and `stamp`, a key, set to now), written to new in one command: the
    critical section counts each. Times are epoch seconds as strings, so a plan can show placeholders."""
    now = "<now, in seconds since 1970>" if s.planning else f"{time.time():.3f}"
    record = {**record, **facts, **({stamp: now} if stamp else {}), "updated_at": now}
    s.new.write_file(FAILOVER_RECORD, json_module.dumps(record, indent=2) + "\n")
    return record


def make_unstartable(s: Session, place: ClusterPlace) -> None:
    """start.conf `disabled` (pg_ctlcluster refuses to start it) and the unit masked: neither a boot nor a
    `systemctl start` revives old as a second primary. The start.conf before is kept for lift_fence."""
    start_conf = place.start_conf
    s.old.run(  # one command: it runs while the site takes no writes
        Cmd(
            f"set -e\ntest -e {start_conf}.{BEFORE_FENCE} || cp -p {start_conf} {start_conf}.{BEFORE_FENCE}\n"
            f"cat > {start_conf}\nsystemctl mask {place.unit}",
            stdin=UNSTARTABLE,
        )
    )


def fence_old(s: Session, place: ClusterPlace, old: OldCluster, record: dict) -> tuple[Control | None, dict]:
    """Only local postgres and the replication role may connect; client backends end; a checkpoint,
    then a clean fast shutdown, whose last WAL record the walsender hands to new before it exits; then old
    is made unstartable. A part already done (a run stopped here) is skipped. The failover record notes
    the start and old's shutdown checkpoint. Returns old's control data (None when planning) and the
    record."""
    cfg = s.settings
    with s.step(
        "fence old",
        undo="before new is promoted only: delete the fence block from old's pg_hba.conf (the "
        f"previous file is pg_hba.conf.{BEFORE_FENCE}), put start.conf.{BEFORE_FENCE} back, systemctl "
        "unmask and start old's cluster; the task does this itself when it is interrupted before the "
        "promotion or new does not catch up",
        why="no client can write on old any more: pg_hba admits only postgres and replication, client "
        "backends are ended, old's cluster shuts down cleanly and is made unstartable",
    ):
        if old.untouched:
            record = note_failover(s, {}, stamp="fenced_at", stage="fencing")
        if not old.fenced:
            s.old.run(
                system.put_block(
                    place.hba_file,
                    "fence",
                    [r.format(role=cfg.replication_role) for r in FENCE_RULES],
                    user="postgres",
                    backup_suffix=BEFORE_FENCE,
                )
            )
        if old.running:
            s.old.run(
                psql(
                    "SELECT pg_reload_conf();\n"
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity\n"
                    "WHERE backend_type = 'client backend' AND pid <> pg_backend_pid();\n"
                    "CHECKPOINT;",
                    cfg.pg_port,
                )
            )
            s.old.run(system.systemctl("stop", place.unit))
        control = s.old.fact(
            ControlData(place.bindir, place.data_dir),
            then="anything but `shut down`: lift the fence (see Undo) and stop",
        )
        if s.planning or (known(control) and control.state == "shut down"):
            make_unstartable(s, place)
            checkpoint = control.checkpoint_lsn if known(control) else "<old's Latest checkpoint location>"
            record = note_failover(s, record, stage="fenced", old_checkpoint=checkpoint)
        return (control if known(control) else None), record


def lift_fence(s: Session, place: ClusterPlace) -> None:
    """Undo the fence (before the promotion only): old's cluster starts again with its own pg_hba.conf and
    start.conf and serves through the tunnel."""
    start_conf = place.start_conf
    s.old.run(Cmd(f"test ! -e {start_conf}.{BEFORE_FENCE} || mv {start_conf}.{BEFORE_FENCE} {start_conf}"))
    s.old.run(system.systemctl("unmask", place.unit))
    s.old.run(system.delete_blocks(place.hba_file, "fence", user="postgres"))
    s.old.run(system.systemctl("start", place.unit))


@contextlib.contextmanager
def fence_lifted_on_failure(s: Session, place: ClusterPlace) -> Iterator[dict]:
    """Between the fence and the promotion the site cannot take writes: whatever stops this section
    (Ctrl-C, a lost connection, a timeout) lifts the fence, unless `pg_promote` was already sent (then only
    a re-run, which reads new's state, may decide)."""
    progress = {"promoting": False}
    try:
        yield progress
    except BaseException as error:
        if s.planning:
            raise
        if progress["promoting"]:
            raise StepFailed(
                f"the promotion of new was under way when this run stopped ({_reason(error)}). New may or "
                "may not be the primary now; old stays fenced. Run phase3-failover again: it reads new's "
                "state and finishes either way."
            ) from None
        try:
            lift_fence(s, place)
            with contextlib.suppress(Exception):  # old serves again: no failover under way (status reads it)
                s.new.run(Cmd(f"rm -f {FAILOVER_RECORD}"))
        except Exception as lift_error:  # noqa: BLE001 - said in the message, with the way out
            raise StepFailed(
                f"{_reason(error)}. Lifting the fence failed too ({lift_error}): old's PostgreSQL is "
                "fenced and down, so the site takes no writes. Run phase3-failover again: it continues from "
                "the fence (it proves new has everything and promotes it, or lifts the fence)."
            ) from None
        raise StepFailed(
            f"{_reason(error)}. The fence was lifted and old's PostgreSQL started again: old serves through "
            "the tunnel, new is still its replica, nothing was lost. Run phase3-failover again once "
            "`replication-status` shows new streaming (it reconnects by itself within seconds)."
        ) from None


def _reason(error: BaseException) -> str:
    if isinstance(error, KeyboardInterrupt):
        return "interrupted (Ctrl-C)"
    return str(error) or type(error).__name__


def _caught_up(target: int):
    def done(st) -> bool:
        return bool(
            st
            and st.receive_lsn
            and st.replay_lsn
            and lsn(st.receive_lsn) > target
            and lsn(st.replay_lsn) > target
        )

    return done


def wait_caught_up(s: Session, checkpoint: str, timeout: float) -> None:
    """new must have received and replayed past old's shutdown checkpoint."""
    target = lsn(checkpoint) if not s.planning else 0
    with s.step(
        "prove new has everything",
        "new has received and replayed past old's shutdown checkpoint, so "
        "every write old acknowledged is on new",
        undo="not needed: this step only reads",
    ):
        try:
            s.new.wait_for(
                StandbyState(s.settings.pg_port),
                _caught_up(target),
                what=f"new has received and replayed past old's last checkpoint {checkpoint} (compare "
                "the 3rd and 4th fields with it)",
                timeout=timeout,
                interval=0.1,
                show=lambda st: f"receive {st.receive_lsn}, replay {st.replay_lsn}" if st else "no answer",
            )
        except StepFailed:
            last = standby(s)
            raise StepFailed(
                f"new did not catch up with old within {timeout:.0f} s (old's last checkpoint "
                f"{checkpoint}; new received {last.receive_lsn if last else '?'}, replayed "
                f"{last.replay_lsn if last else '?'}); check the tunnel (replication-status)"
            ) from None


def promote_replica(s: Session) -> None:
    cfg = s.settings
    with s.step(
        "promote new",
        "new becomes the primary",
        undo="none: new is the primary from here on (old stays down and fenced; see cleanup)",
    ):
        done = s.new.run(psql("SELECT pg_promote(true, 60);", cfg.pg_port))
        if s.planning or done.stdout.strip() != "t":  # `t`: it waited until new left recovery
            s.new.wait_for(
                Query("SELECT pg_is_in_recovery();", cfg.pg_port, "prints `f` once new has left recovery"),
                lambda v: v == "f",
                what="new has left recovery",
                timeout=60,
                interval=0.2,
            )


def record_promotion(s: Session, old_checkpoint: str, **more) -> None:
    """new's replication settings go; promotion.json records the new timeline and position."""
    with s.step(
        "record the promotion",
        "new's replication settings go; promotion.json on new records its timeline and position",
        undo="not needed: a record of what happened",
    ):
        _record(s, old_checkpoint, **more)


def _record(s: Session, old_checkpoint: str, **more) -> None:
    cfg = s.settings
    s.new.run(
        psql(
            "ALTER SYSTEM RESET primary_conninfo;\nALTER SYSTEM RESET primary_slot_name;\n"
            "SELECT pg_reload_conf();",
            cfg.pg_port,
        )
    )
    # the timeline from the WAL file's name: a promotion does not wait for its checkpoint, so
    # pg_control_checkpoint() may still show the old timeline for a while
    where = s.new.fact(
        Query(
            "SELECT ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int || ' ' "
            "|| pg_current_wal_lsn();",
            cfg.pg_port,
            "prints new's timeline (one more than old's) and its WAL position",
        ),
        planned="<timeline> <position>",
    )
    timeline, _, position = where.partition(" ") if known(where) else ("<timeline>", "", "<position>")
    record = {
        "promoted_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "timeline": timeline,
        "lsn": position,
        "old_shutdown_checkpoint": old_checkpoint,
        **more,
    }
    s.new.write_file(PROMOTION_RECORD, json_module.dumps(record, indent=2) + "\n")
    s.say(f"new is the primary on timeline {timeline} at {position}")


def accept_promotion(s: Session) -> None:
    """new is already the primary. Recorded by this tool: nothing to do. Not recorded (a run stopped between
    pg_promote and the record): accepted, and recorded, when new's timeline forks from old's after old's
    shutdown checkpoint, which proves that new replayed every write old made."""
    if promoted_record(s):
        s.say("already promoted: new is the primary, nothing to do")
        return
    with s.step(
        "accept new's promotion",
        "new left recovery but the record of its promotion is missing (a run stopped in between): its "
        "timeline history must fork from old's timeline at or after old's shutdown checkpoint",
        undo="not needed: this step only reads, then writes promotion.json",
    ):
        fork = s.new.fact(
            TimelineFork(cluster(s, s.new).data_dir), then="its position is compared with old's checkpoint"
        )
        checkpoint = failover_record(s).get("old_checkpoint")
        if not checkpoint:  # the record has it unless the run stopped right at the fence: old's control file
            old = cluster(s, s.old)
            control = s.old.fact(ControlData(old.bindir, old.data_dir), then="must say `shut down`")
            checkpoint = control.checkpoint_lsn if known(control) and control.state == "shut down" else None
        if s.planning:
            return
        if not (fork and checkpoint and lsn(fork.lsn) > lsn(checkpoint)):
            raise StepFailed(
                "new's PostgreSQL is not a replica, and nothing shows that it holds all of old's writes "
                f"(new's timeline began at {fork.lsn if fork else 'an unknown position'}; old's shutdown "
                f"checkpoint: {checkpoint or 'unknown, old did not shut down cleanly'}). Nothing was "
                "changed; compare both databases before going on."
            )
        s.say(
            f"new left old's timeline {fork.parent} at {fork.lsn}, after old's shutdown checkpoint "
            f"{checkpoint}: it holds every write old acknowledged"
        )
        _record(s, checkpoint, accepted="the promotion was recorded by a later run")


def keep_old_down(s: Session, record: dict | None = None) -> None:
    """Old's cluster must stay unstartable (an interrupted run may have stopped before that part); then
    the failover `record`, when given, is marked done."""
    with s.step(
        "keep old down",
        "old's cluster stays fenced, its start.conf `disabled` and its unit masked, so nothing brings it "
        "back as a second primary",
        undo=f"none while new is the primary (start.conf.{BEFORE_FENCE} is the file before the fence)",
    ):
        place = cluster(s, s.old)
        text = s.old.fact(
            FileText(place.start_conf), then="`disabled` and a masked unit: skip the next block"
        )
        masked = s.old.fact(UnitEnabled(place.unit)) == "masked"
        if not (known(text) and text == UNSTARTABLE and masked):
            make_unstartable(s, place)
        if record is not None and record.get("stage") != "done":
            note_failover(s, record, stage="done")


def promoted_record(s: Session) -> dict | None:
    """What this tool recorded when it promoted new (None: not promoted by it, or planning)."""
    record = s.new.fact(PROMOTED, then="a record means new was promoted by this tool")
    return record if known(record) else None


@dataclass(frozen=True)
class Takeover:
    """What the failover found before changing anything: where old's cluster is, how far an earlier run got
    (the failover record), and whether old is still untouched."""

    place: ClusterPlace
    old: OldCluster
    record: dict


def takeover_ready(s: Session) -> Takeover | None:
    """The reads and checks that come before the fence (a replica fit to take over, the tunnel up), made
    apart from it so that PgBouncer's pause holds nothing but the switch itself. None: new is the primary
    already (accepted, and recorded when an earlier run stopped before its record)."""
    current = standby(s, then="`f|...` (not in recovery) means new is already the primary")
    if known(current) and current and not current.in_recovery:
        accept_promotion(s)
        return None
    place = cluster(s, s.old)
    old = old_cluster(s, place)
    record = failover_record(s)
    if old.untouched:
        _require_ready(s)
    else:
        s.say("old is fenced already (a run stopped after the fence): the failover continues from there")
    return Takeover(place, old, record)


def take_over(s: Session, found: Takeover, catchup_timeout: float, record: bool = True) -> dict:
    """Fence, prove, promote, from what `takeover_ready` found; returns the failover record. `record`: the
    promotion is recorded here (else the caller calls `record_promotion` once clients run again: a run
    stopped in between is accepted by the next, from the timeline's fork)."""
    with fence_lifted_on_failure(s, found.place) as progress:
        control, failover = fence_old(s, found.place, found.old, found.record)
        if control is not None and control.state != "shut down":
            raise StepFailed(f"old's cluster did not shut down cleanly (state: {control.state})")
        checkpoint = failover.get("old_checkpoint", "<old's Latest checkpoint location>")
        wait_caught_up(s, checkpoint, catchup_timeout)
        progress["promoting"] = True
        promote_replica(s)
    if record:
        record_promotion(s, checkpoint)
    return failover


def promote_new(s: Session, catchup_timeout: float = 30) -> dict | None:
    """Fence, prove, promote, each part checking first: a run stopped anywhere is continued by the next.
    Returns the failover record when new became the primary in this run (None: it already was)."""
    found = takeover_ready(s)
    return None if found is None else take_over(s, found, catchup_timeout)


def _require_ready(s: Session) -> None:
    """Before the fence: new streams with a small lag, and the tunnel reaches old."""
    cfg = s.settings
    report = replication_report(s)
    if report is not None and not report.healthy:
        raise StepFailed(
            "new is not streaming from old with a small lag (see replication-status); nothing was changed"
        )
    if s.new.fact(PgReady(cfg.tunnel_port), then="otherwise stop: the tunnel is down") is False:
        raise StepFailed(
            f"the tunnel on new (127.0.0.1:{cfg.tunnel_port}) does not reach old's PostgreSQL; "
            "nothing was changed"
        )


def remove_replication_leftovers(s: Session) -> None:
    """The replication role, slot, WAL cap and pg_hba blocks on old (started fenced for this, then stopped
    again: it stays down, start.conf manual); on new the role's password, and the role and WAL cap that
    came with the copy of old."""
    cfg = s.settings
    with s.step(
        "remove replication leftovers",
        f"role {cfg.replication_role} and slot {cfg.replication_slot} on "
        "old, their pg_hba blocks, and the password in new's .pgpass; the role and the WAL cap on new, "
        "which came with the copy of old",
        undo="not needed once new is the primary: phase 1 would create them again",
    ):
        system.remove_marked_lines(
            s.new, PGPASS, f"127.0.0.1:{cfg.tunnel_port}:*:{cfg.replication_role}:", user="postgres"
        )
        inherited = query(
            s.new,
            f"SELECT count(*) FROM pg_roles WHERE rolname = '{cfg.replication_role}';",
            cfg,
            means="prints 1 while new, the primary now, still has the replication role it received from old",
            then="0: skip the next block",
        )
        if not known(inherited) or inherited != "0":
            s.new.run(
                psql(
                    f"DROP ROLE IF EXISTS {cfg.replication_role};\n"
                    "ALTER SYSTEM RESET max_slot_wal_keep_size;\nSELECT pg_reload_conf();",
                    cfg.pg_port,
                )
            )
        place = cluster(s, s.old)
        marked = [
            s.old.fact(
                CountLines(place.hba_file, f"# BEGIN {system.MARK} {block}", "postgres"),
                then="0 for both: old is already clean, skip the rest of this step",
            )
            for block in ACCESS_BLOCKS
        ]
        if all(known(count) and not count for count in marked):
            return
        was_running = s.old.fact(UnitState(place.unit)) == "active"
        if not was_running:  # still fenced: only local postgres may connect; unstartable again afterwards
            s.old.write_file(place.start_conf, "manual\n", owner="postgres")
            s.old.run(system.systemctl("unmask", place.unit))
            s.old.run(system.systemctl("start", place.unit))
        s.old.run(
            psql(
                f"SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots\n"
                f"WHERE slot_name = '{cfg.replication_slot}' AND NOT active;\n"
                f"DROP ROLE IF EXISTS {cfg.replication_role};\n"
                "ALTER SYSTEM RESET max_slot_wal_keep_size;\nSELECT pg_reload_conf();",
                cfg.pg_port,
            )
        )
        if not was_running:
            s.old.run(system.systemctl("stop", place.unit))
            make_unstartable(s, place)
        for block in ACCESS_BLOCKS:  # the fence stays: old must never serve clients again
            s.old.run(system.delete_blocks(place.hba_file, block, user="postgres"))
