"""The base backup: the tool's against the same pg_basebackup run by hand, through the same tunnel,
alternated A/B on one pair per database size; and what server-side zstd and ssh compression do.

- A, the tool: new's cluster is stopped, then `fab -H old,new basebackup --force` (which moves the replica
  aside, creates the slot, copies, verifies, starts new and waits for streaming). Its pg_basebackup
  command's own time is read from the run log, and the whole task's wall time is kept too;
- B, by hand: the tool's exact pg_basebackup command line from the run log (the same -D, -R and slot),
  run in an ssh session on new as an admin would, after the same preparation (cluster stopped, data
  directory moved aside, slot dropped);
- bare: that line into a scratch directory beside the data directory, with a slot of its own and without
  -R, so that new's standby keeps running; and bare with `--compress=server-zstd`, and bare through a
  second ssh forward with compression (`ssh -C`, the tunnel's key and pinned host key), these two in
  every other round (1, 3, 5, ...).
Throughput is the copy's size on new (du) over the command's seconds. Every timed copy starts after a
`sync` (untimed), so that no run pays for writing back the one before it. The ratio is by hand's seconds
over the tool's, summed over the rounds, in which each goes first half the time (see `ratio`).
"""

from __future__ import annotations

import json
import re
import shlex
import statistics
import subprocess

from tests.e2e.test_phase1 import sql

from .common import REPO, fab, fresh_pair, must, run_log, say, settings_file

UNIT = "postgresql@15-main"  # new's cluster
SCRATCH = "/var/lib/postgresql/bench-bare"  # beside 15/main, where the tool writes
COMPRESSED_PORT = 5439
TUNNEL_KEY = "/var/lib/postgresql/.ssh/mastodon-migration-tunnel"


def tool_command(settings) -> tuple[str, float]:
    """The last pg_basebackup command the tool ran, and its seconds."""
    found = [r for r in run_log(settings) if "pg_basebackup " in r.get("command", "")]
    return found[-1]["command"], float(found[-1]["seconds"])


def on_new(script: str) -> str:
    """A script run as postgres on new from an ssh session of the operator's, as an admin runs a bare
    pg_basebackup (and as the tool runs its own), not through docker exec; its output."""
    run = subprocess.run(
        [
            "ssh",
            "-F",
            str(REPO / "docker" / "ssh_config"),
            "new",
            f"sudo -u postgres sh -ec {shlex.quote(script)}",
        ],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if run.returncode:
        raise SystemExit(f"on new: {script} failed ({run.returncode}): {run.stderr[-2000:]}")
    return run.stdout


def bare(pair, command: str, port: int = 0, extra: str = "") -> float:
    """The tool's pg_basebackup line into SCRATCH with its own slot (and another port or more flags)."""
    line = command.replace("sudo -H -u postgres ", "")
    line = re.sub(r"-D \S+", f"-D {SCRATCH}", line)
    line = re.sub(r"-S \S+", "-S bench_bare", line).replace(" -R", "")
    line = re.sub(r" --max-rate=\S+", "", line)
    env = ""
    if port:  # new's .pgpass names the tunnel's port: a copy of it names this one
        line = re.sub(r"-p \d+", f"-p {port}", line)
        pair.exec(
            "new",
            "sudo",
            "-u",
            "postgres",
            "sh",
            "-c",
            f"sed 's/^127.0.0.1:[0-9]*:/127.0.0.1:{port}:/' ~/.pgpass > /tmp/bench.pgpass && "
            "chmod 600 /tmp/bench.pgpass",
            check=True,
        )
        env = "PGPASSFILE=/tmp/bench.pgpass "
    pair.exec("new", "rm", "-rf", SCRATCH, check=True)
    pair.exec("new", "sync", check=True)
    seconds = timed_on_new(f"{env}{line} {extra}")
    pair.exec("new", "rm", "-f", "/tmp/bench.pgpass")
    sql(pair, "old", "SELECT pg_drop_replication_slot('bench_bare')")
    return seconds


def timed_on_new(line: str) -> float:
    """Seconds of a command line, timed on new itself: the ssh login's own time is left out (the tool's run
    log times its command from the operator's side, over a connection already open). Its progress goes
    back over ssh, as the tool's does."""
    timed = f'start=$(date +%s.%N); {line}; end=$(date +%s.%N); echo "$start $end"'
    start, end = on_new(timed).split()[-2:]
    return float(end) - float(start)


def by_hand(pair, command: str) -> float:
    """The tool's own line as an admin runs it on new, the A/B's other side: new's cluster stopped, its
    data directory moved aside and its slot on old dropped (as the tool does), then the exact same command
    (its -D, -R and -S); afterwards the copy starts as the standby, as the tool leaves it."""
    data = re.search(r"-D (\S+)", command).group(1)
    slot = re.search(r"-S (\S+)", command).group(1)
    pair.sh(
        "new",
        f"systemctl stop {UNIT} && mv {data} {data}.hand && "
        f"install -d -o postgres -g postgres -m 0700 {data} && sync",
        check=True,
    )
    sql(pair, "old", f"SELECT pg_drop_replication_slot('{slot}')")
    seconds = timed_on_new(command.replace("sudo -H -u postgres ", ""))
    pair.sh("new", f"rm -rf {data}.hand && systemctl start {UNIT}", check=True)
    return seconds


def copied_bytes(pair) -> int:
    """The scratch copy's size; the copy goes then, so that no round starts with more on disk than another."""
    size = int(pair.exec("new", "du", "-sb", SCRATCH, check=True).stdout.split()[0])
    pair.exec("new", "rm", "-rf", SCRATCH, check=True)
    return size


def tool_run(pair, settings) -> dict:
    pair.exec("new", "systemctl", "stop", UNIT, check=True)
    pair.exec("new", "sync", check=True)
    seconds, result = fab(settings, "basebackup", "--force")
    must(result, "basebackup --force")
    pair.sh("new", "rm -rf /var/lib/postgresql/15/main.mig-*", check=True)  # the copies moved aside
    _, copy_seconds = tool_command(settings)
    return {"task_seconds": round(seconds, 2), "copy_seconds": round(copy_seconds, 2)}


def compressed_forward(pair) -> None:
    """A second forward to old's PostgreSQL, with ssh compression, on COMPRESSED_PORT."""
    known = "/var/lib/postgresql/.ssh/mastodon-migration-tunnel.known_hosts"
    address = pair.info["hosts"]["old"]["address"]
    pair.exec(
        "new",
        "sudo",
        "-u",
        "postgres",
        "ssh",
        "-f",
        "-N",
        "-C",
        "-i",
        TUNNEL_KEY,
        "-o",
        "BatchMode=yes",
        "-o",
        "ExitOnForwardFailure=yes",
        "-o",
        f"UserKnownHostsFile={known}",
        "-L",
        f"127.0.0.1:{COMPRESSED_PORT}:127.0.0.1:5432",
        f"postgres@{address}",
        check=True,
    )


def ab(seed_size: str, text_bytes: int, rounds: int) -> dict:
    say(f"base backup A/B at seed {seed_size}, text {text_bytes} bytes: a fresh pair")
    pair = fresh_pair(seed_size, SEED_TEXT_BYTES=str(text_bytes))
    settings = settings_file(f"basebackup-{seed_size}-{text_bytes}")
    _, result = fab(settings, "phase1-replicate")
    must(result, "phase1-replicate")
    command, _ = tool_command(settings)
    compressed_forward(pair)
    runs = []
    for number in range(1, rounds + 1):
        first, second = ("tool", "by hand") if number % 2 else ("by hand", "tool")  # A/B, then B/A
        found: dict = {"round": number, "order": f"{first} first"}
        for which in (first, second):
            if which == "tool":
                found["tool"] = tool_run(pair, settings)
            else:
                found["by_hand_seconds"] = round(by_hand(pair, command), 2)
        found["bare_seconds"] = round(bare(pair, command), 2)
        found["bytes"] = copied_bytes(pair)
        if number % 2:  # the compressed copies every other round: the slowest runs here, and no ratio
            found["bare_server_zstd_seconds"] = round(bare(pair, command, extra="--compress=server-zstd"), 2)
            found["bare_ssh_compression_seconds"] = round(bare(pair, command, port=COMPRESSED_PORT), 2)
        say(f"round {number}: {json.dumps(found)}")
        runs.append(found)
    pair.exec("new", "rm", "-rf", SCRATCH)
    size = statistics.median(r["bytes"] for r in runs)

    def throughput(seconds: list[float]) -> float:
        return round(size / statistics.median(seconds) / 2**20, 1)

    def measured(key: str) -> float:  # over the rounds that have it (the compressed: every other one)
        return throughput([r[key] for r in runs if key in r])

    mib_s = {
        **{
            name: measured(f"{name}_seconds")
            for name in ("by_hand", "bare", "bare_server_zstd", "bare_ssh_compression")
        },
        "tool_copy": throughput([r["tool"]["copy_seconds"] for r in runs]),
        "tool_task": throughput([r["tool"]["task_seconds"] for r in runs]),
    }
    return {
        "seed_size": seed_size,
        "text_bytes": text_bytes,
        "bytes": size,
        "command": command,
        "throughput_mib_s": mib_s,
        "ratio_copy": ratio(runs, "copy_seconds"),
        "ratio_task": ratio(runs, "task_seconds"),
        "rounds": runs,
    }


def ratio(runs: list[dict], tool_seconds: str) -> float:
    """By hand's seconds over the tool's, summed over the rounds. Whichever copy comes first in a round is
    the slower one on this machine (by 1 to 3 s at 2 GB), so each side goes first in half the rounds and
    the sums weigh both orders alike; a median of per-round ratios would follow the order instead."""
    hand = sum(r["by_hand_seconds"] for r in runs)
    return round(hand / sum(r["tool"][tool_seconds] for r in runs), 3)


def run(sizes: list[tuple[str, int]], rounds: int) -> dict:
    return {"sizes": [ab(size, text, rounds) for size, text in sizes]}
