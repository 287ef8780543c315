"""PostgreSQL: facts and actions on both clusters (replication role, base backup, promotion)."""
from __future__ import annotations

import base64
import hashlib
import hmac
import json as json_module
import secrets
import time

from . import checks, system
from .command import UNKNOWN, Cmd, CommandFailed, Secret, Session, StepFailed, known
from .executor import two_host_task
from .facts import (ControlData, Output, Unparseable, control_data, human_bytes, line_count, lsn, senders,
                    single_value, slot, standby)
from .settings import Settings

PGPASS = "/var/lib/postgresql/.pgpass"
STATE_DIR = "/var/lib/mastodon-migration"
PROMOTION_RECORD = f"{STATE_DIR}/promotion.json"


def psql(sql: str, port: int, database: str = "postgres", secrets=()) -> Cmd:
    """SQL as the postgres superuser over the local socket; the SQL travels on stdin."""
    return Cmd(f"psql -XAtq -v ON_ERROR_STOP=1 -p {port} -d {database}", user="postgres", stdin=sql,
               secrets=secrets)


def server_version(cfg: Settings) -> Cmd:
    return psql("SHOW server_version_num;", cfg.pg_port)


def replication_capacity(cfg: Settings) -> Cmd:
    """wal_level | free WAL senders | free replication slots (see facts.replication_capacity)."""
    return psql(
        "SELECT current_setting('wal_level'),\n"
        "       current_setting('max_wal_senders')::int - (SELECT count(*) FROM pg_stat_replication),\n"
        "       current_setting('max_replication_slots')::int - (SELECT count(*) FROM pg_replication_slots);",
        cfg.pg_port)


def cluster_identity(cfg: Settings) -> Cmd:
    """in recovery | system identifier | user databases | data directory (see facts.cluster_identity)."""
    return psql(
        "SELECT pg_is_in_recovery(), (SELECT system_identifier FROM pg_control_system()),\n"
        "       (SELECT coalesce(string_agg(datname, ',' ORDER BY datname), '') FROM pg_database\n"
        "        WHERE datname NOT IN ('postgres', 'template0', 'template1')),\n"
        "       current_setting('data_directory');",
        cfg.pg_port)


def data_dir_entries(cfg: Settings) -> Cmd:
    """What the data directory holds when no cluster answers (a missing directory lists nothing)."""
    return Cmd(f"test ! -e {cfg.pg_data_dir} || ls -A {cfg.pg_data_dir}")


def database_size(cfg: Settings) -> Cmd:
    return psql("SELECT sum(pg_database_size(datname))::bigint FROM pg_database;", cfg.pg_port)


def cluster_unit(cfg: Settings) -> str:
    """Debian's unit for the cluster in PG_DATA_DIR (/var/lib/postgresql/15/main -> postgresql@15-main)."""
    return f"postgresql@{cfg.pg_version}-{cfg.pg_data_dir.rsplit('/', 1)[-1]}"


def bindir(cfg: Settings) -> str:
    return f"/usr/lib/postgresql/{cfg.pg_version}/bin"


def scram_verifier(password: str, salt: bytes | None = None, iterations: int = 4096) -> str:
    """The SCRAM-SHA-256 verifier PostgreSQL stores: old receives this, never the password itself."""
    salt = salt or secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    b64 = lambda raw: base64.b64encode(raw).decode()  # noqa: E731
    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(hashlib.sha256(client_key).digest())}:{b64(server_key)}"


def _value(remote, sql: str, cfg: Settings, planned=UNKNOWN):
    """One value from a query on that host."""
    return remote.fact(psql(sql, cfg.pg_port), single_value, planned=planned)


# --- phase 1 steps: replication role, base backup ---------------------------------------------------

def ensure_replication_role(s: Session) -> None:
    cfg = s.settings
    s.step("replication role", f"old gets a role {cfg.replication_role} that may only replicate; its password "
           f"lives on new in {PGPASS} and reaches old only as a SCRAM verifier",
           undo=f"ssh old -- sudo -u postgres psql -c 'DROP ROLE {cfg.replication_role}'")
    has_role = _value(s.old, f"SELECT rolreplication AND rolcanlogin FROM pg_roles "
                             f"WHERE rolname = '{cfg.replication_role}';", cfg)
    pgpass_prefix = f"127.0.0.1:{cfg.tunnel_port}:*:{cfg.replication_role}:"
    has_password = s.new.fact(Cmd(f"grep -cF '{pgpass_prefix}' {PGPASS}", user="postgres"), line_count)
    if has_role == "t" and has_password:
        return
    password = Secret(secrets.token_urlsafe(32), f"new:{PGPASS}")
    verifier = Secret(scram_verifier(password.reveal()), f"SCRAM verifier of the password in new:{PGPASS}")
    s.new.run(system.replace_lines(PGPASS, pgpass_prefix, pgpass_prefix + password.reveal() + "\n",
                                   user="postgres", secrets=(password,)))
    sql = (f"DO $$BEGIN\n"
           f"  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{cfg.replication_role}') THEN\n"
           f"    CREATE ROLE {cfg.replication_role};\n"
           f"  END IF;\nEND$$;\n"
           f"ALTER ROLE {cfg.replication_role} WITH REPLICATION LOGIN PASSWORD '{verifier.reveal()}';\n"
           f"COMMENT ON ROLE {cfg.replication_role} IS '{system.MARK}: replication to new';\n")
    s.old.run(psql(sql, cfg.pg_port, secrets=(verifier,)))


def ensure_replication_hba(s: Session) -> None:
    cfg = s.settings
    name = "replication"
    s.step("pg_hba.conf on old", f"allow {cfg.replication_role} to replicate from 127.0.0.1 only (the tunnel's end)",
           undo="restore the pg_hba.conf.mig-* backup next to pg_hba.conf, then SELECT pg_reload_conf()")
    hba = _value(s.old, "SHOW hba_file;", cfg, planned=f"/etc/postgresql/{cfg.pg_version}/main/pg_hba.conf")
    rule = f"host replication {cfg.replication_role} 127.0.0.1/32 scram-sha-256"
    present = s.old.fact(Cmd(f"grep -cxF '{rule}' {hba}", user="postgres"), line_count)
    if present:
        return
    backup = "mig-" + time.strftime("%Y%m%d%H%M%S")
    s.old.run(system.put_block(hba, name, [rule], user="postgres", backup_suffix=backup))
    errors = _value(s.old, "SELECT count(*) FROM pg_hba_file_rules WHERE error IS NOT NULL;", cfg)
    if known(errors) and errors != "0":
        s.old.run(Cmd(f"mv {hba}.{backup} {hba}", user="postgres"))
        raise StepFailed(f"old's {hba} has errors after the edit; the previous file was put back")
    s.old.run(psql("SELECT pg_reload_conf();", cfg.pg_port))


def ensure_slot_wal_cap(s: Session) -> None:
    cfg = s.settings
    s.step("cap WAL kept for slots", f"a stuck slot may keep at most {cfg.max_slot_wal_keep_size} of WAL on old, "
           "so it can never fill old's disk", undo="ALTER SYSTEM RESET max_slot_wal_keep_size; SELECT pg_reload_conf();")
    cap = _value(s.old, "SHOW max_slot_wal_keep_size;", cfg)
    if known(cap) and cap != "-1":
        return
    s.old.run(psql(f"ALTER SYSTEM SET max_slot_wal_keep_size = '{cfg.max_slot_wal_keep_size}';\n"
                   "SELECT pg_reload_conf();", cfg.pg_port))


STANDBY_SQL = ("SELECT pg_is_in_recovery(), coalesce((SELECT status FROM pg_stat_wal_receiver), ''),\n"
               "       coalesce(pg_last_wal_receive_lsn()::text, ''), coalesce(pg_last_wal_replay_lsn()::text, ''),\n"
               "       coalesce(pg_last_xact_replay_timestamp()::text, ''),\n"
               "       coalesce(extract(epoch FROM now() - pg_last_xact_replay_timestamp())::text, ''),\n"
               "       (SELECT system_identifier FROM pg_control_system());")
SYSID_SQL = "SELECT system_identifier FROM pg_control_system();"


def _standby_or_none(out: Output):
    try:
        return standby(out)
    except Unparseable:
        return None  # no cluster answers on new


def _standby(s: Session):
    return s.new.fact(psql(STANDBY_SQL, s.settings.pg_port), _standby_or_none)


def _slot(s: Session):
    cfg = s.settings
    return s.old.fact(psql(f"SELECT slot_name, active, coalesce(wal_status, ''),\n"
                           f"       coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn), 0)::bigint\n"
                           f"FROM pg_replication_slots WHERE slot_name = '{cfg.replication_slot}';", cfg.pg_port),
                      slot)


def drop_slot(s: Session, *, ours_in_use: bool = False) -> None:
    """Drop our slot on old. A slot in use is dropped only when it is ours (a backup that just
    failed): its walsender is terminated first."""
    cfg = s.settings
    where = f"slot_name = '{cfg.replication_slot}'"
    if ours_in_use:
        s.old.run(psql(f"SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE {where} AND active;",
                       cfg.pg_port))
        s.old.wait_for(psql(f"SELECT count(*) FROM pg_replication_slots WHERE {where} AND active;", cfg.pg_port),
                       single_value, lambda n: n == "0", what="the slot is released", timeout=30)
    s.old.run(psql(f"SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots\n"
                   f"WHERE {where} AND NOT active;", cfg.pg_port))


def _refuse_unless_empty(s: Session, force: bool) -> None:
    """Refuse (changing nothing) when new's directory holds data, unless --force moves it aside."""
    cfg = s.settings
    outputs = [host.fact(cmd, lambda out: out) for host, cmd in (
        (s.new, cluster_identity(cfg)), (s.new, data_dir_entries(cfg)), (s.old, cluster_identity(cfg)))]
    if s.planning:
        return
    found = checks.new_cluster(cfg, *outputs)
    if found.status == checks.FAIL and not force:
        raise StepFailed(f"new's data directory: {found.detail}. Nothing was changed. Run basebackup --force "
                         f"to move {cfg.pg_data_dir} aside (it is kept, never deleted).")


def _wait_streaming(s: Session) -> None:
    s.new.wait_for(psql(STANDBY_SQL, s.settings.pg_port), _standby_or_none,
                   lambda st: bool(st and st.receiver_status == "streaming"),
                   what="new streams from old", timeout=120,
                   show=lambda st: (st.receiver_status or "no WAL receiver yet") if st else "cluster starting")


def run_basebackup(s: Session, force: bool = False, max_rate: str = "") -> None:
    cfg = s.settings
    s.step("base backup", "copy old's cluster to new through the tunnel; new starts as its streaming replica",
           undo=f"stop new's cluster; the previous data directory was kept as {cfg.pg_data_dir}.mig-*")
    primary = _value(s.old, SYSID_SQL, cfg)
    current = _standby(s)
    if current and current.in_recovery and current.system_identifier == primary:
        if current.receiver_status != "streaming":
            _wait_streaming(s)
        print("  already streaming from old: nothing to do", flush=True)
        return
    _refuse_unless_empty(s, force)
    existing = _slot(s)
    if existing and existing.active:
        raise StepFailed(f"slot {cfg.replication_slot} on old is in use by another connection; "
                         "stop that replica or choose another REPLICATION_SLOT")
    if existing:
        drop_slot(s)
    unit = cluster_unit(cfg)
    s.new.run(system.systemctl("stop", unit))
    aside = f"{cfg.pg_data_dir}.mig-{time.strftime('%Y%m%d%H%M%S')}"
    s.new.run(Cmd(f"test ! -e {cfg.pg_data_dir} || mv {cfg.pg_data_dir} {aside}"))
    s.new.run(Cmd(f"install -d -o postgres -g postgres -m 0700 {cfg.pg_data_dir}"))
    rate = f" --max-rate={max_rate}" if max_rate else ""
    backup = Cmd(f"{bindir(cfg)}/pg_basebackup -h 127.0.0.1 -p {cfg.tunnel_port} -U {cfg.replication_role} "
                 f"-D {cfg.pg_data_dir} -Fp -Xs -R -C -S {cfg.replication_slot} --checkpoint=fast -P -w{rate}",
                 user="postgres", stream=True)
    try:
        s.new.run(backup)
        s.new.run(Cmd(f"{bindir(cfg)}/pg_verifybackup {cfg.pg_data_dir}", user="postgres"))
    except CommandFailed as error:
        drop_slot(s, ours_in_use=True)
        s.new.run(Cmd(f"rm -rf {cfg.pg_data_dir} && {{ test ! -e {aside} || mv {aside} {cfg.pg_data_dir}; }} "
                      f"&& {{ test -e {cfg.pg_data_dir} || install -d -o postgres -g postgres -m 0700 "
                      f"{cfg.pg_data_dir}; }}"))
        if s.new.fact(Cmd(f"test -f {cfg.pg_data_dir}/PG_VERSION"), lambda out: out.ok):
            s.new.run(system.systemctl("start", unit))
        raise StepFailed(f"the base backup failed ({error.out.why()}). The slot on old was dropped and new's data "
                         "directory is back as it was; old was not changed. Fix the cause and run basebackup again."
                         ) from None
    s.new.run(system.systemctl("start", unit))
    _wait_streaming(s)


# --- replication status ------------------------------------------------------------------------------

SENDERS_SQL = ("SELECT application_name, coalesce(host(client_addr), 'local'), state,\n"
               "       coalesce(sent_lsn::text, ''), coalesce(write_lsn::text, ''), coalesce(flush_lsn::text, ''),\n"
               "       coalesce(replay_lsn::text, ''),\n"
               "       coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn), 0)::bigint\n"
               "FROM pg_stat_replication;")


def replication_report(s: Session) -> dict | None:
    """Both sides' view of replication, and whether it is healthy (None when planning)."""
    cfg = s.settings
    rows = s.old.fact(psql(SENDERS_SQL, cfg.pg_port), senders)
    our_slot = _slot(s)
    new_side = _standby(s)
    if s.planning:
        return None
    streaming = [r for r in rows if r.state == "streaming"]
    lag = min((r.lag_bytes for r in streaming), default=None)
    healthy = bool(streaming and lag is not None and lag < cfg.max_lag_bytes and new_side
                   and new_side.in_recovery and new_side.receiver_status == "streaming")
    return {"healthy": healthy, "lag_bytes": lag, "max_lag_bytes": cfg.max_lag_bytes,
            "old": {"senders": [r.__dict__ for r in rows], "slot": our_slot.__dict__ if our_slot else None},
            "new": new_side.__dict__ if new_side else None}


def report_table(report: dict) -> str:
    lines = []
    for r in report["old"]["senders"]:
        lines.append(f"old  replica {r['application_name']} from {r['client_addr']}: {r['state']}, "
                     f"sent {r['sent_lsn']} write {r['write_lsn']} flush {r['flush_lsn']} replay {r['replay_lsn']}, "
                     f"lag {human_bytes(r['lag_bytes'])}")
    if not report["old"]["senders"]:
        lines.append("old  no replica connected")
    slot_info = report["old"]["slot"]
    lines.append(f"old  slot {slot_info['name']}: {'active' if slot_info['active'] else 'INACTIVE'}, "
                 f"wal_status {slot_info['wal_status']}, retains {human_bytes(slot_info['retained_bytes'])}"
                 if slot_info else "old  no replication slot")
    new = report["new"]
    if new:
        age = f" ({new['replay_age_seconds']:.0f} s ago)" if new["replay_age_seconds"] is not None else ""
        lines.append(f"new  {'in recovery' if new['in_recovery'] else 'NOT in recovery (a primary)'}, "
                     f"receiver {new['receiver_status'] or 'not running'}, receive {new['receive_lsn'] or '-'}, "
                     f"replay {new['replay_lsn'] or '-'}, last replayed transaction {new['last_replay'] or '-'}{age}")
    else:
        lines.append("new  no cluster answers")
    lines.append("healthy: " + ("yes" if report["healthy"] else
                                f"NO (needs streaming with lag under {human_bytes(report['max_lag_bytes'])})"))
    return "\n".join(lines)


def show_replication_status(s: Session, as_json: bool = False) -> dict | None:
    s.step("replication status", "both sides' view: WAL positions, lag in bytes, the slot")
    report = replication_report(s)
    if report is not None:
        print(json_module.dumps(report, indent=2) if as_json else report_table(report), flush=True)
    return report


# --- tasks -----------------------------------------------------------------------------------------

@two_host_task
def replication_role(s: Session):
    """Create old's replication role (password kept on new only), its pg_hba rule and the WAL cap."""
    ensure_replication_role(s)
    ensure_replication_hba(s)
    ensure_slot_wal_cap(s)


@two_host_task(help={"force": "move a non-empty data directory on new aside (never deleted)",
                     "max_rate": "throttle the copy, e.g. 50M (kB/s unless suffixed), so the tunnel leaves room"})
def basebackup(s: Session, force=False, max_rate=""):
    """Copy old's cluster to new with pg_basebackup through the tunnel; new becomes a streaming replica."""
    run_basebackup(s, force=force, max_rate=max_rate)


@two_host_task(help={"json": "print JSON for scripts instead of a table"})
def replication_status(s: Session, json=False):
    """Show replication from both sides (LSNs, lag, slot); exit 0 only when healthy."""
    report = show_replication_status(s, as_json=json)
    if report is not None and not report["healthy"]:
        raise StepFailed("replication is not healthy (see above)")


# --- phase 3: fence old, prove new has everything, promote -----------------------------------------

def _hba(s: Session) -> str:
    return _value(s.old, "SHOW hba_file;", s.settings, planned=f"/etc/postgresql/{s.settings.pg_version}/main/pg_hba.conf")


def fence_old(s: Session, hba: str) -> ControlData | None:
    """Only local postgres and the replication role may connect; client backends end; a checkpoint,
    then a clean fast shutdown, whose last WAL record the walsender hands to new before it exits.
    Returns old's control data (None when planning)."""
    cfg = s.settings
    s.step("fence old", undo="before new is promoted only: delete the fence block from old's pg_hba.conf (the "
           "previous file is pg_hba.conf.mig-before-fence) and start old's cluster; the task does this itself when "
           "new does not catch up", why="no client can write on old any more: pg_hba admits only postgres and replication, "
           "client backends are ended, and old's cluster shuts down cleanly")
    s.old.run(system.put_block(hba, "fence", [
        "local all postgres peer",
        f"host replication {cfg.replication_role} 127.0.0.1/32 scram-sha-256",
        "local all all reject", "host all all 0.0.0.0/0 reject", "host all all ::/0 reject"],
        user="postgres", backup_suffix="mig-before-fence"))
    s.old.run(psql("SELECT pg_reload_conf();\n"
                   "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity\n"
                   "WHERE backend_type = 'client backend' AND pid <> pg_backend_pid();\n"
                   "CHECKPOINT;", cfg.pg_port))
    s.old.run(system.systemctl("stop", cluster_unit(cfg)))
    control = s.old.fact(Cmd(f"{bindir(cfg)}/pg_controldata {cfg.pg_data_dir}", user="postgres"), control_data)
    return control if known(control) else None


def lift_fence(s: Session, hba: str) -> None:
    """Undo the fence: old's cluster starts again with its own pg_hba.conf and serves through the tunnel."""
    s.old.run(Cmd(f"sed -i '/^# BEGIN {system.MARK} fence$/,/^# END {system.MARK} fence$/d' {hba}", user="postgres"))
    s.old.run(system.systemctl("start", cluster_unit(s.settings)))


def _caught_up(target: int):
    def done(st) -> bool:
        return bool(st and st.receive_lsn and st.replay_lsn
                    and lsn(st.receive_lsn) > target and lsn(st.replay_lsn) > target)
    return done


def wait_caught_up(s: Session, hba: str, checkpoint: str, timeout: float) -> None:
    """new must have received and replayed past old's shutdown checkpoint; otherwise old comes back."""
    target = lsn(checkpoint) if not s.planning else 0
    try:
        s.new.wait_for(psql(STANDBY_SQL, s.settings.pg_port), _standby_or_none, _caught_up(target),
                       what=f"new has received and replayed past old's last checkpoint {checkpoint}",
                       timeout=timeout, interval=0.1,
                       show=lambda st: f"receive {st.receive_lsn}, replay {st.replay_lsn}" if st else "no answer")
    except StepFailed:
        last = _standby(s)
        lift_fence(s, hba)
        raise StepFailed(f"new did not catch up with old within {timeout:.0f} s (old's last checkpoint {checkpoint}; "
                         f"new received {last.receive_lsn if last else '?'}, replayed "
                         f"{last.replay_lsn if last else '?'}). The fence was lifted and old's PostgreSQL started "
                         "again: old serves through the tunnel, new is still its replica, nothing was lost. Check "
                         "the tunnel (replication-status) and run the failover again.") from None


def promote_replica(s: Session, old_control: ControlData | None) -> None:
    cfg = s.settings
    s.step("promote new", "new becomes the primary; its replication settings are removed",
           undo="none: new is the primary from here on (old stays down and fenced; see cleanup)")
    s.new.run(psql("SELECT pg_promote(true, 60);", cfg.pg_port))
    s.new.wait_for(psql("SELECT pg_is_in_recovery();", cfg.pg_port), single_value, lambda v: v == "f",
                   what="new has left recovery", timeout=60, interval=0.2)
    s.new.run(psql("ALTER SYSTEM RESET primary_conninfo;\nALTER SYSTEM RESET primary_slot_name;\n"
                   "SELECT pg_reload_conf();\nCHECKPOINT;", cfg.pg_port))
    timeline = _value(s.new, "SELECT timeline_id FROM pg_control_checkpoint();", cfg, planned="<timeline>")
    position = _value(s.new, "SELECT pg_current_wal_lsn();", cfg, planned="<position>")
    record = {"promoted_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "timeline": timeline, "lsn": position,
              "old_shutdown_checkpoint": old_control.checkpoint_lsn if old_control else "<old's last checkpoint>"}
    s.new.write_file(PROMOTION_RECORD, json_module.dumps(record, indent=2) + "\n")
    print(f"  new is the primary on timeline {timeline} at {position}", flush=True)


def keep_old_down(s: Session) -> None:
    """Debian starts clusters marked 'auto' at boot: old's is set to manual so it never returns as a primary."""
    start_conf = _hba_file_on_disk(s).rsplit("/", 1)[0] + "/start.conf"
    if s.old.fact(system.read_file(start_conf), lambda out: out.stdout.strip().splitlines()[-1:]) != ["manual"]:
        s.old.run(Cmd(f"cp -p {start_conf} {start_conf}.mig-before-fence"))
        s.old.write_file(start_conf, f"# {system.MARK}: fenced after the failover to new; see cleanup.\nmanual\n",
                         owner="postgres")


def promoted_record(s: Session) -> dict | None:
    """What this tool recorded when it promoted new (None: not promoted by it, or planning)."""
    record = s.new.fact(Cmd(f"cat {PROMOTION_RECORD}"), lambda out: json_module.loads(out.stdout) if out.ok else None)
    return record if known(record) else None


def promote_new(s: Session, catchup_timeout: float = 30) -> bool:
    """Fence, prove, promote. Returns False when new was already promoted (nothing done)."""
    cfg = s.settings
    current = _standby(s)
    if known(current) and current and not current.in_recovery:
        if promoted_record(s):
            print("  already promoted: new is the primary, nothing to do", flush=True)
            return False
        raise StepFailed("new's PostgreSQL is not a replica, and this tool did not promote it: nothing was changed")
    report = replication_report(s)
    if report is not None and not report["healthy"]:
        raise StepFailed("new is not streaming from old with a small lag (see replication-status); nothing was "
                         "changed")
    if s.new.fact(Cmd(f"pg_isready -h 127.0.0.1 -p {cfg.tunnel_port}", user="postgres"), lambda out: out.ok) is False:
        raise StepFailed(f"the tunnel on new (127.0.0.1:{cfg.tunnel_port}) does not reach old's PostgreSQL; "
                         "nothing was changed")
    hba = _hba(s)
    control = fence_old(s, hba)
    if control is not None and control.state != "shut down":
        lift_fence(s, hba)
        raise StepFailed(f"old's cluster did not shut down cleanly (state: {control.state}); the fence was lifted "
                         "and old started again. Nothing was promoted.")
    wait_caught_up(s, hba, control.checkpoint_lsn if control else "<old's Latest checkpoint location>", catchup_timeout)
    promote_replica(s, control)
    return True


def remove_replication_leftovers(s: Session) -> None:
    """The replication role, slot, WAL cap and pg_hba blocks on old (started fenced for this, then stopped
    again: it stays down, start.conf manual), and the role's password on new."""
    cfg = s.settings
    s.step("remove replication leftovers", f"role {cfg.replication_role} and slot {cfg.replication_slot} on old, "
           "their pg_hba blocks, and the password in new's .pgpass")
    system.remove_marked_lines(s.new, PGPASS, f"127.0.0.1:{cfg.tunnel_port}:*:{cfg.replication_role}:", user="postgres")
    hba = _hba_file_on_disk(s)
    marked = s.old.fact(Cmd(f"grep -c '^# BEGIN {system.MARK}' {hba}", user="postgres"),
                        lambda out: out.stdout.strip() not in ("", "0"))
    if marked is False:
        return
    unit = cluster_unit(cfg)
    was_running = s.old.fact(system.unit_state(unit), lambda out: out.stdout.strip()) == "active"
    if not was_running:
        s.old.run(system.systemctl("start", unit))  # still fenced: only local postgres may connect
    s.old.run(psql(f"SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots\n"
                   f"WHERE slot_name = '{cfg.replication_slot}' AND NOT active;\n"
                   f"DROP ROLE IF EXISTS {cfg.replication_role};\n"
                   "ALTER SYSTEM RESET max_slot_wal_keep_size;\nSELECT pg_reload_conf();", cfg.pg_port))
    if not was_running:
        s.old.run(system.systemctl("stop", unit))
    s.old.run(Cmd(f"sed -i '/^# BEGIN {system.MARK} /,/^# END {system.MARK} /d' {hba}", user="postgres"))


def _hba_file_on_disk(s: Session) -> str:
    """old's pg_hba.conf, found while its cluster may be down (Debian keeps it beside start.conf)."""
    cfg = s.settings
    return f"/etc/postgresql/{cfg.pg_version}/{cfg.pg_data_dir.rsplit('/', 1)[-1]}/pg_hba.conf"
