"""Killing `fab` at a chosen step, the moment the run log shows that step's first command.

The run log (logs/demo.log) gets `{"step": TITLE}` when a step opens and a line with `command` once each
command has run: SIGKILL then leaves the hosts exactly as that command left them, with nothing cleaned up.
"""
from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from .conftest import FAB, REPO

RUN_LOG = REPO / "logs" / "demo.log"


@dataclass
class Run:
    killed: bool  # killed at the step (False: it ended first)
    returncode: int
    output: str  # stdout and stderr

    @property
    def traceback(self) -> bool:
        return "Traceback (most recent call last)" in self.output


def _lines_from(path: Path, offset: int):
    if not path.exists():
        return offset, []
    with path.open("rb") as f:
        f.seek(offset)
        data = f.read()
    complete = data[: data.rfind(b"\n") + 1]
    return offset + len(complete), [json.loads(line) for line in complete.decode().splitlines() if line]


def run_killed_at(step: str, *task: str, timeout: float = 600) -> Run:
    """Run `fab -H old,new TASK...` and SIGKILL it right after the first command of `step`."""
    offset = RUN_LOG.stat().st_size if RUN_LOG.exists() else 0
    out_path = REPO / "build" / "fault-run.out"
    out_path.parent.mkdir(exist_ok=True)
    env = {**os.environ, "MIGRATION_ENV": "env/demo.env"}
    with out_path.open("w") as out:
        proc = subprocess.Popen([str(FAB), "-S", "docker/ssh_config", "-H", "old,new", *task], cwd=REPO,
                                env=env, stdout=out, stderr=subprocess.STDOUT)
        in_step, killed, deadline = False, False, time.monotonic() + timeout
        while proc.poll() is None and time.monotonic() < deadline:
            offset, records = _lines_from(RUN_LOG, offset)
            for record in records:
                if record.get("step") == step:
                    in_step = True
                elif in_step and "command" in record:
                    proc.kill()
                    killed = True
                    break
            if killed:
                break
            time.sleep(0.005)
        if proc.poll() is None and not killed:
            proc.kill()
        proc.wait()
    return Run(killed, proc.returncode, out_path.read_text())


def run(*task: str, timeout: float = 900) -> Run:
    result = subprocess.run([str(FAB), "-S", "docker/ssh_config", "-H", "old,new", *task], cwd=REPO,
                            env={**os.environ, "MIGRATION_ENV": "env/demo.env"}, capture_output=True,
                            text=True, timeout=timeout)
    return Run(False, result.returncode, result.stdout + result.stderr)


def started_twice(journal: str) -> list[str]:
    """Job ids that Sidekiq started more often than once plus the times they failed (a retry is fine)."""
    starts: dict[str, int] = {}
    fails: dict[str, int] = {}
    for line in journal.splitlines():
        jid = next((w[4:] for w in line.split() if w.startswith("jid=")), None)
        if not jid:
            continue
        if line.endswith(": start"):
            starts[jid] = starts.get(jid, 0) + 1
        elif line.endswith(": fail"):
            fails[jid] = fails.get(jid, 0) + 1
    return [jid for jid, n in starts.items() if n > 1 + fails.get(jid, 0)]
