"""The base backup: the tool's against a bare pg_basebackup with the same flags, through the same tunnel,
alternated A/B on one pair per database size; and what server-side zstd and ssh compression do.

- A, the tool: new's cluster is stopped, then `fab -H old,new basebackup --force` (which moves the replica
  aside, creates the slot, copies, verifies, starts new and waits for streaming). Its pg_basebackup
  command's own time is read from the run log, and the whole task's wall time is kept too;
- B, bare: the tool's exact pg_basebackup command line from the run log, into a scratch directory beside
  the data directory (the same filesystem) and with a slot of its own, as postgres on new;
- B with `--compress=server-zstd`, and B through a second ssh forward with compression (`ssh -C`, the
  tunnel's key and pinned host key), in every other round (1, 3, 5, ...).
Throughput is the copy's size on new (du) over the command's seconds. Every timed copy starts after a
`sync` (untimed), so that no run pays for writing back the one before it; the ratio is the median of each
round's own tool/bare ratio, so that a slow round weighs on both sides alike.
"""

from __future__ import annotations

import json
import re
import statistics

from tests.e2e.test_phase1 import sql

from .common import fab, fresh_pair, must, run_log, say, settings_file

SCRATCH = "/var/lib/postgresql/bench-bare"  # beside 15/main, where the tool writes
COMPRESSED_PORT = 5439
TUNNEL_KEY = "/var/lib/postgresql/.ssh/mastodon-migration-tunnel"


def tool_command(settings) -> tuple[str, float]:
    """The last pg_basebackup command the tool ran, and its seconds."""
    found = [r for r in run_log(settings) if "pg_basebackup " in r.get("command", "")]
    return found[-1]["command"], float(found[-1]["seconds"])


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
    # timed on new itself, as the tool's run log times its command: docker exec's own start is left out
    timed = f'start=$(date +%s.%N); {env}{line} {extra} 2>/dev/null; end=$(date +%s.%N); echo "$start $end"'
    start, end = pair.exec("new", "sudo", "-u", "postgres", "sh", "-ec", timed, check=True).stdout.split()[
        -2:
    ]
    seconds = float(end) - float(start)
    pair.exec("new", "rm", "-f", "/tmp/bench.pgpass")
    sql(pair, "old", "SELECT pg_drop_replication_slot('bench_bare')")
    return seconds


def copied_bytes(pair) -> int:
    return int(pair.exec("new", "du", "-sb", SCRATCH, check=True).stdout.split()[0])


def tool_run(pair, settings) -> dict:
    pair.exec("new", "systemctl", "stop", "postgresql@15-main", check=True)
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
        first, second = ("tool", "bare") if number % 2 else ("bare", "tool")  # A/B, then B/A
        found: dict = {"round": number, "order": f"{first} first"}
        for which in (first, second):
            if which == "tool":
                found["tool"] = tool_run(pair, settings)
            else:
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

    mib_s = {
        "bare": throughput([r["bare_seconds"] for r in runs]),
        "tool_copy": throughput([r["tool"]["copy_seconds"] for r in runs]),
        "tool_task": throughput([r["tool"]["task_seconds"] for r in runs]),
        "bare_server_zstd": throughput(
            [r["bare_server_zstd_seconds"] for r in runs if "bare_server_zstd_seconds" in r]
        ),
        "bare_ssh_compression": throughput(
            [r["bare_ssh_compression_seconds"] for r in runs if "bare_ssh_compression_seconds" in r]
        ),
    }
    return {
        "seed_size": seed_size,
        "text_bytes": text_bytes,
        "bytes": size,
        "command": command,
        "throughput_mib_s": mib_s,
        "ratio_copy": round(
            statistics.median(r["bare_seconds"] / r["tool"]["copy_seconds"] for r in runs), 3
        ),
        "ratio_task": round(
            statistics.median(r["bare_seconds"] / r["tool"]["task_seconds"] for r in runs), 3
        ),
        "rounds": runs,
    }


def run(sizes: list[tuple[str, int]], rounds: int) -> dict:
    return {"sizes": [ab(size, text, rounds) for size, text in sizes]}
