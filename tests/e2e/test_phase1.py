"""Phase 1 on the pair: tunnel, replication role, base backup, streaming replica, and its faults.

The tests run in file order and build on each other: refusals first (nothing changed), then a
backup whose tunnel dies, then the real phase, then what must survive it.
"""
import json
import re
import subprocess
import threading
import time

import pytest

from . import state
from .conftest import REPO, fab

pytestmark = pytest.mark.docker

PSQL = ["sudo", "-u", "postgres", "psql", "-XAtq", "-v", "ON_ERROR_STOP=1"]
TUNNEL_UNIT = "mastodon-migration-tunnel"
KEY = "/var/lib/postgresql/.ssh/mastodon-migration-tunnel"


def sql(pair, host, query, database="postgres"):
    return pair.exec(host, *PSQL, "-d", database, "-c", query, check=True).stdout.strip()


def wait_until(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"gave up after {timeout} s waiting for {what}")


def streaming(pair):
    return (pair.exec("new", *PSQL, "-c", "SELECT status FROM pg_stat_wal_receiver").stdout.strip()
            == "streaming")


def test_preflight_names_each_hot_standby_setting_new_must_raise(pair):
    """First, on the fresh pair: later tests raise new's settings."""
    result = fab("-H", "old,new", "preflight")
    assert result.returncode == 0, result.stdout + result.stderr  # a warning: phase 1 raises them
    if pair.info["profile"] == "default":  # old tuned as pgtune suggests, new with Debian's defaults
        assert re.search(r"hot-standby settings +new +WARN +.*max_connections is 100 on new, 200 on old",
                         result.stdout), result.stdout


def test_tunnel_refuses_a_port_held_by_another_process(pair):
    holder = subprocess.Popen(["docker", "exec", pair.container("new"), "python3", "-c",
                               "import socket,time; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, "
                               "socket.SO_REUSEADDR, 1); s.bind(('127.0.0.1', 5433)); s.listen(); "
                               "time.sleep(120)"])
    try:
        wait_until(lambda: "5433" in pair.exec("new", "ss", "-Htln").stdout, 10, "the squatter to listen")
        result = fab("-H", "old,new", "tunnel")
        assert result.returncode != 0
        assert re.search(r"5433 is taken by python3 \(pid \d+\)", result.stderr), result.stderr
        assert pair.exec("new", "systemctl", "is-active", TUNNEL_UNIT).stdout.strip() != "active"
    finally:
        holder.kill()
        pair.exec("new", "pkill", "-f", "s.bind")


def test_a_backup_whose_tunnel_dies_cleans_up_and_changes_nothing_on_old(pair):
    assert fab("-H", "old,new", "replication-role").returncode == 0
    assert fab("-H", "old,new", "tunnel").returncode == 0
    before = sql(pair, "old", "SELECT count(*) FROM pg_replication_slots")
    result = {}
    backup = threading.Thread(target=lambda: result.update(
        run=fab("-H", "old,new", "basebackup", "--max-rate=64k", timeout=300)))
    backup.start()
    wait_until(lambda: sql(pair, "old", "SELECT count(*) FROM pg_stat_replication") != "0", 60,
               "the copy to start")
    time.sleep(1)
    pair.exec("new", "systemctl", "kill", "-s", "KILL", TUNNEL_UNIT, check=True)
    backup.join(timeout=280)
    run = result["run"]
    assert run.returncode != 0
    assert "The slot on old was dropped and new's data directory is back as it was" in run.stderr, run.stderr
    assert sql(pair, "old", "SELECT count(*) FROM pg_replication_slots") == before
    assert sql(pair, "new", "SELECT pg_is_in_recovery()") == "f"  # new's own default cluster, running again


def test_a_copy_that_cannot_start_as_a_standby_is_rolled_back(pair):
    """An admin's own setting that wins over the raised one (a later conf.d file): the copy cannot start as
    old's standby; the slot goes, new's previous cluster comes back and runs, and the error says why."""
    low = "/etc/postgresql/15/main/conf.d/zz-admin.conf"
    pair.exec("new", "sh", "-c", f"echo 'max_connections = 50' > {low}", check=True)
    try:
        slots_before = sql(pair, "old", "SELECT count(*) FROM pg_replication_slots")
        result = fab("-H", "old,new", "phase1-replicate", timeout=600)
        assert result.returncode != 0
        assert "did not become a streaming standby" in result.stderr, result.stderr
        assert "max_connections" in result.stderr, result.stderr
        assert sql(pair, "old", "SELECT count(*) FROM pg_replication_slots") == slots_before
        assert sql(pair, "new", "SELECT pg_is_in_recovery()") == "f"  # new's previous cluster, running
        assert "Traceback" not in result.stdout + result.stderr
    finally:
        pair.exec("new", "rm", "-f", low, check=True)


SAMPLED: dict[str, str] = {}  # `ps auxww` on each host, sampled every 0.1 s while phase 1 ran


SAMPLES = "/tmp/mig-ps-samples"


def sample_processes(pair, host):
    """`ps auxww` every 0.1 s into a file on the host (a pipe would fill and stall the sampler)."""
    script = f"rm -f {SAMPLES}; for i in $(seq 3000); do ps auxww; echo @@; sleep 0.1; done > {SAMPLES}"
    return subprocess.Popen(["docker", "exec", pair.container(host), "sh", "-c", script],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def test_phase1_leaves_new_streaming_from_old(pair):
    samplers = {host: sample_processes(pair, host) for host in ("old", "new")}
    try:
        result = fab("-H", "old,new", "phase1-replicate", timeout=600)
    finally:
        for host, sampler in samplers.items():
            pair.exec(host, "pkill", "-f", "seq 3000")
            sampler.wait(timeout=30)
            SAMPLED[host] = pair.exec(host, "cat", SAMPLES).stdout
    assert result.returncode == 0, result.stdout + result.stderr
    assert sql(pair, "new", "SELECT pg_is_in_recovery()") == "t"
    rows = sql(pair, "old", "SELECT client_addr, state FROM pg_stat_replication").splitlines()
    assert rows == ["127.0.0.1|streaming"]
    assert "healthy: yes" in result.stdout


def test_a_second_run_changes_nothing(pair):
    before = state.both(pair)
    result = fab("-H", "old,new", "phase1-replicate", timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert state.changes(before, state.both(pair)) == []
    assert "already streaming from old" in result.stdout


def test_writes_on_old_reach_new_and_lag_drops_to_zero(pair):
    marker = f"phase1-{time.time_ns()}"
    sql(pair, "old", "CREATE TABLE IF NOT EXISTS mig_probe (v text); "
                     f"INSERT INTO mig_probe VALUES ('{marker}')")
    wait_until(lambda: pair.exec("new", *PSQL, "-c", f"SELECT count(*) FROM mig_probe WHERE v = '{marker}'"
                                 ).stdout.strip() == "1", 5, "the write to reach new")
    def lag_is_zero():
        status = fab("-H", "old,new", "replication-status", "--json")
        return (status.returncode == 0
                and json.loads(status.stdout[status.stdout.index("{"):])["lag_bytes"] == 0)
    wait_until(lag_is_zero, 20, "replication-status to report lag 0")


def test_the_password_never_shows(pair):
    line = pair.exec("new", "cat", "/var/lib/postgresql/.pgpass", check=True).stdout
    password = [x for x in line.splitlines() if ":mig_replicator:" in x][0].rsplit(":", 1)[1]
    assert len(password) >= 32
    # sampled while the base backup ran (its pg_basebackup is in the samples), not once afterwards
    assert "walsender" in SAMPLED["old"] and "pg_basebackup -h 127.0.0.1" in SAMPLED["new"], "no sample of it"
    for host in ("old", "new"):
        assert password not in SAMPLED[host] + pair.exec(host, "ps", "auxww").stdout
    logs = "".join(p.read_text() for p in (REPO / "logs").glob("*.log"))
    assert password not in logs
    auto_conf = pair.exec("new", "cat", "/var/lib/postgresql/15/main/postgresql.auto.conf", check=True).stdout
    assert password not in auto_conf and "passfile" in auto_conf
    mode = pair.exec("new", "stat", "-c", "%a %U", "/var/lib/postgresql/.pgpass", check=True).stdout.split()
    assert mode == ["600", "postgres"]


def test_the_tunnel_key_opens_no_shell_and_no_other_forward(pair):
    ssh = ["sudo", "-u", "postgres", "ssh", "-i", KEY, "-o", "BatchMode=yes",
           "-o", f"UserKnownHostsFile={KEY}.known_hosts", "postgres@172.30.99.11"]
    shell = pair.exec("new", *ssh, "echo", "shell-opened")
    # the key was accepted (no "Permission denied", not ssh's own 255) and ran the forced /bin/false
    assert (shell.returncode, shell.stdout) == (1, ""), shell
    assert "Permission denied" not in shell.stderr
    other = pair.exec("new", *ssh[:-1], "-W", "127.0.0.1:22", ssh[-1], timeout=30)
    assert other.returncode != 0 and "SSH-2.0" not in other.stdout
    assert "administratively prohibited" in other.stderr, other.stderr
    # the one allowed forward works: PostgreSQL answers an SSLRequest with one byte, S or N
    forward = ["docker", "exec", "-i", pair.container("new"), *ssh[:-1], "-W", "127.0.0.1:5432", ssh[-1]]
    ssl_request = bytes.fromhex("0000000804d2162f")
    allowed = subprocess.run(forward, input=ssl_request, capture_output=True, timeout=30)
    assert allowed.stdout[:1] in (b"S", b"N"), allowed


def test_a_killed_tunnel_comes_back_by_itself(pair):
    def main_pid():
        return pair.exec("new", "systemctl", "show", "-p", "MainPID", "--value", TUNNEL_UNIT).stdout.strip()
    killed = main_pid()
    pair.exec("new", "systemctl", "kill", "-s", "KILL", TUNNEL_UNIT, check=True)
    wait_until(lambda: main_pid() not in (killed, "0"), 30, "systemd to restart the tunnel")
    wait_until(lambda: streaming(pair), 60, "replication to resume")
    marker = f"after-kill-{time.time_ns()}"
    sql(pair, "old", f"INSERT INTO mig_probe VALUES ('{marker}')")
    wait_until(lambda: pair.exec("new", *PSQL, "-c", f"SELECT count(*) FROM mig_probe WHERE v = '{marker}'"
                                 ).stdout.strip() == "1", 10, "the write to reach new")


def test_a_restarted_new_comes_back_streaming(pair):
    subprocess.run(["docker", "restart", pair.container("new")], check=True, capture_output=True, timeout=120)
    wait_until(lambda: (pair.exec("new", "systemctl", "is-system-running").stdout.strip()
                        in ("running", "degraded")), 60, "new to boot")
    wait_until(lambda: streaming(pair), 60, "replication to resume after the restart")
    assert fab("-H", "old,new", "replication-status").returncode == 0
