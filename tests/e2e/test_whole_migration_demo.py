"""`make demo`'s migration (docker/demo.py) end to end: its report, checked independently, and no drift
between what each phase ran and what the runbook shows. Runs last: it recreates the pair itself."""
import json
import re
import subprocess
import sys

import pytest

from tasks import settings
from tasks.runbook import drift, runbook_steps

from .conftest import REPO
from .traffic import missing_ids

pytestmark = pytest.mark.docker
REQUESTS_PER_SECOND = 25  # docker/demo.py's client: 20 writes and 5 reads a second
PHASES = {1: "phase1-replicate", 2: "phase2-proxy", 3: "phase3-failover", 4: "phase4-dns"}


@pytest.fixture(scope="module")
def demo(pair):
    result = subprocess.run([sys.executable, "docker/demo.py"], cwd=REPO, capture_output=True, text=True,
                            timeout=900)
    return result


def test_the_demo_migrates_and_loses_no_acknowledged_write(pair, demo):
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    report = json.loads((REPO / "build" / "report.json").read_text())
    assert [p["exit"] for p in report["phases"]] == [0] * 5
    # no request fails, the failover included: PgBouncer holds the queries while new takes over
    failures = {p["name"]: p["failures"] for p in report["phases"]}
    assert failures == {"phase 1: replicate": 0, "phase 2: proxy": 0, "phase 3: failover": 0,
                        "phase 4: DNS": 0, "cleanup": 0}, report["first_failures"]
    assert report["failures"] == 0 and report["worst_request_s"] > 0
    assert all(p["p99_s"] >= p["p50_s"] > 0 for p in report["phases"])
    assert report["acknowledged_writes"] == len(report["acknowledged_ids"]) > 100
    for phase in report["phases"]:  # a stalled client cannot pass as "no failures"
        assert phase["requests"] >= 0.4 * REQUESTS_PER_SECOND * phase["seconds"], phase
    # the client's WebSocket, opened to old's streaming server before phase 1, stays open to the end (the
    # relay feeds old's streaming server with what new publishes; new's never restarts) and misses nothing
    assert report["streaming_events_expected"] > 50
    assert report["streaming_reconnects"] == 0, report["streaming_errors"]
    assert report["streaming_events_missed"] == 0
    assert (report["acknowledged_writes_lost"]
            == len(missing_ids(pair, "new", report["acknowledged_ids"])) == 0)
    assert (REPO / "build" / "report.md").read_text().startswith("# Live migration on the simulated pair")
    assert (REPO / "build" / "timeline.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_every_command_a_phase_ran_is_in_its_runbook(demo):
    cfg = settings.load(REPO / "build" / "demo-dns.env")
    records = [json.loads(line) for line in cfg.log_file.read_text().splitlines()]
    for number, task in PHASES.items():
        start = max(i for i, r in enumerate(records) if r.get("task") == task and r.get("event") == "start")
        end = next(i for i in range(start, len(records))
                   if records[i].get("task") == task and "event" in records[i]
                   and records[i]["event"] != "start")
        ran = records[start + 1:end]
        assert any("command" in r for r in ran) or number == 4, task
        assert drift(runbook_steps(number, cfg), ran) == [], task


def test_the_demo_shows_and_logs_no_secret_of_old(pair, demo):
    old_env = pair.exec("old", "cat", "/home/mastodon/live/.env.production", check=True).stdout
    pairs = (line.split("=", 1) for line in old_env.splitlines() if "=" in line)
    secrets = {key: value for key, value in pairs
               if re.search(r"SECRET|PASS|KEY|TOKEN|OTP|VAPID", key) and len(value) >= 8}
    assert "SECRET_KEY_BASE" in secrets
    logs = settings.load(REPO / "build" / "demo-dns.env").log_dir
    seen = demo.stdout + demo.stderr + "".join(p.read_text() for p in logs.iterdir() if p.is_file())
    assert [key for key, value in secrets.items() if value in seen] == []
    assert oct(logs.stat().st_mode & 0o777) == "0o700"
    assert {oct(p.stat().st_mode & 0o777) for p in logs.iterdir() if p.is_file()} == {"0o600"}
