"""What every benchmark shares: a fresh simulated pair, the operator's `fab` with settings of the run's own,
the hosts' clocks and logs, and the JSON each part writes into bench/results/."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.e2e.conftest import Pair  # noqa: E402

RESULTS = REPO / "bench" / "results"
WORK = REPO / "build" / "bench"
FAB = Path(sys.executable).with_name("fab")
PAIR_PY = REPO / "docker" / "pair.py"


def say(text: str) -> None:
    print(f"bench: {text}", flush=True)


def fresh_pair(seed_size: str = "small", **env: str) -> Pair:
    """The pair recreated from scratch (old provisioned and seeded, new bare), as every migration starts."""
    environment = {**os.environ, "SEED_SIZE": seed_size, **env}
    subprocess.run([sys.executable, str(PAIR_PY), "down"], cwd=REPO, capture_output=True, env=environment)
    up = subprocess.run(
        [sys.executable, str(PAIR_PY), "up"], cwd=REPO, capture_output=True, text=True, env=environment
    )
    if up.returncode != 0:
        raise SystemExit(f"docker/pair.py up failed:\n{up.stdout[-2000:]}{up.stderr[-2000:]}")
    return Pair(json.loads((REPO / "build" / "pair.json").read_text()))


def settings_file(name: str, **values) -> Path:
    """env/demo.env with the run's own values, and a log of the run's own (its timings are read back)."""
    WORK.mkdir(parents=True, exist_ok=True)
    path = WORK / f"{name}.env"
    log_dir = WORK / f"logs-{name}"
    subprocess.run(["rm", "-rf", str(log_dir)], check=True)
    values = {"LOG_DIR": log_dir, **values}
    path.write_text(
        (REPO / "env" / "demo.env").read_text() + "".join(f"{k}={v}\n" for k, v in values.items())
    )
    return path


def fab(settings: Path, *args: str, timeout: float = 1800) -> tuple[float, subprocess.CompletedProcess]:
    """`fab -H old,new ARGS` as the operator runs it, and its wall time."""
    started = time.monotonic()
    result = subprocess.run(
        [str(FAB), "-S", "docker/ssh_config", "-H", "old,new", *args],
        cwd=REPO,
        env={**os.environ, "MIGRATION_ENV": str(settings)},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return time.monotonic() - started, result


def must(result: subprocess.CompletedProcess, what: str) -> None:
    if result.returncode != 0:
        raise SystemExit(
            f"{what} failed (exit {result.returncode}):\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
        )


def run_log(settings: Path) -> list[dict]:
    """The run log's records (tasks/output.py writes one JSON object a line): host, command, seconds."""
    log_dir = Path(
        next(
            line.split("=", 1)[1] for line in settings.read_text().splitlines() if line.startswith("LOG_DIR=")
        )
    )
    records = []
    for path in log_dir.glob("*.log"):
        for line in path.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except ValueError:
                continue
    return records


def ssh_logins(pair: Pair, host: str) -> dict[str, int]:
    """The ssh logins the host's sshd has accepted so far (its journal), by user: the operator's (`admin`
    on the pair) apart from the hosts' own (the tunnels' `postgres`, rsync's `mastodon`)."""
    out = pair.sh(host, "journalctl -q --no-pager -t sshd -g 'Accepted publickey' -o cat").stdout
    found: dict[str, int] = {}
    for line in out.splitlines():
        user = line.split(" for ", 1)[1].split()[0] if " for " in line else "?"
        found[user] = found.get(user, 0) + 1
    return found


def machine() -> dict:
    cpus = os.cpu_count()
    memory = next(
        (
            int(line.split()[1]) // 1024
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal:")
        ),
        0,
    )
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    docker = subprocess.run(
        ["docker", "version", "-f", "{{.Server.Version}}"], capture_output=True, text=True
    ).stdout.strip()
    return {
        "cpus": cpus,
        "cpu_model": model,
        "memory_mib": memory,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "docker": docker,
    }


def save(part: str, command: str, data: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{part}.json"
    path.write_text(
        json.dumps(
            {
                "part": part,
                "command": command,
                "machine": machine(),
                "finished_at": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                **data,
            },
            indent=2,
        )
        + "\n"
    )
    say(f"saved {path.relative_to(REPO)}")
    return path
