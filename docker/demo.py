"""`make demo`: the whole live migration on the simulated pair, under live traffic, with a report.

Brings the pair up, serves the domain from a real BIND on 127.0.0.1 (RFC 2136), starts a live client
(steady writes and reads spread over every seeded account, one streaming WebSocket, DNS re-resolved
each second), runs phase 1 to 4 and cleanup --apply exactly as an operator types them, and ends with
a report: build/report.md, build/report.json and build/timeline.png. The migration uses PgBouncer as new's
database endpoint (the default), and the pair's Mastodon web boots like Puma (BOOT_SECONDS=10), so a failover
that restarted Mastodon would show. Exits non-zero if any request failed or any acknowledged write
is missing from new's database.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import dns.message  # noqa: E402
import dns.query  # noqa: E402

from tests.e2e.conftest import Pair  # noqa: E402
from tests.e2e.measure import failure_window, figures, inside, latencies  # noqa: E402
from tests.e2e.streaming import Stream, followed_by_follower  # noqa: E402
from tests.e2e.tokens import active_accounts, follower_pair  # noqa: E402
from tests.e2e.traffic import Traffic, missing_ids  # noqa: E402
from tests.fakes.bind import Bind, pair_zone, rfc2136_settings  # noqa: E402

BUILD = REPO / "build"
FAB = Path(sys.executable).with_name("fab")
STEPS = [("phase 1: replicate", "phase1-replicate"), ("phase 2: proxy", "phase2-proxy"),
         ("phase 3: failover", "phase3-failover"), ("phase 4: DNS", "phase4-dns"),
         ("cleanup", "cleanup --apply")]


def say(text: str) -> None:
    print(f"demo: {text}", flush=True)


def demo_env(bind: Bind) -> Path:
    path = BUILD / "demo-dns.env"
    path.write_text((REPO / "env" / "demo.env").read_text() + "".join(f"{k}={v}\n" for k, v in {
        **rfc2136_settings(bind), "LOG_DIR": BUILD / "demo-logs"}.items()))
    return path


def run_step(name: str, command: str, env_file: Path) -> dict:
    line = f"fab -S docker/ssh_config -H old,new {command}"
    say(f"$ MIGRATION_ENV={env_file.relative_to(REPO)} {line}")
    started = time.time()
    result = subprocess.run([str(FAB), "-S", "docker/ssh_config", "-H", "old,new", *command.split()],
                            cwd=REPO, env={**os.environ, "MIGRATION_ENV": str(env_file)})
    return {"name": name, "command": line, "started": started, "ended": time.time(),
            "exit": result.returncode}


def report(steps, traffic, lost, stream, expected_events) -> dict:
    phases = []
    for step in steps:
        during = figures(inside(traffic.requests, step["started"], step["ended"]))
        del during["worst_request_s"]
        phases.append({**step, "seconds": round(step["ended"] - step["started"], 1), **during})
    missed = sorted(expected_events - stream.received)
    missed_after_catch_up = sorted(expected_events - stream.received - stream.fetched)
    return {"phases": phases, "requests": len(traffic.requests), "failures": len(traffic.failures),
            "acknowledged_writes": len(traffic.acknowledged), "acknowledged_writes_lost": len(lost),
            "acknowledged_ids": traffic.acknowledged,
            "lost_ids": lost[:50], "streaming_events_expected": len(expected_events),
            "streaming_events_missed": len(missed), "streaming_reconnects": stream.reconnects,
            "streaming_events_missed_after_catch_up": len(missed_after_catch_up),
            "streaming_errors": stream.errors[:10],
            "longest_failure_window_s": round(failure_window(traffic.requests), 2),
            "worst_request_s": round(max(latencies(traffic.requests), default=0.0), 3),
            "first_failures": [{"status": r.status, "error": r.error[:200]} for r in traffic.failures[:5]]}


def markdown(data: dict) -> str:
    rows = ["| phase | seconds | requests | failures | longest failure window (s) | p50 (s) | p99 (s) "
            "| exit |", "|---|---|---|---|---|---|---|---|"]
    rows += [f"| {p['name']} | {p['seconds']} | {p['requests']} | {p['failures']} "
             f"| {p['longest_failure_window_s']} | {p['p50_s']} | {p['p99_s']} | {p['exit']} |"
             for p in data["phases"]]
    return "\n".join(["# Live migration on the simulated pair", "", *rows, "",
                      f"- requests: {data['requests']}, failed: {data['failures']}",
                      f"- acknowledged writes: {data['acknowledged_writes']}, "
                      f"lost: {data['acknowledged_writes_lost']} "
                      "(every acknowledged id checked in new's database)",
                      f"- streaming events: {data['streaming_events_expected']} expected, "
                      f"{data['streaming_events_missed']} missed ({data['streaming_reconnects']} "
                      f"reconnects), {data['streaming_events_missed_after_catch_up']} still missing after "
                      "the client's catch-up on reconnect",
                      f"- longest failure window: {data['longest_failure_window_s']} s",
                      f"- worst successful request: {data['worst_request_s']} s", "",
                      "![timeline](timeline.png)", ""])


def timeline(steps, traffic, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    start = min(r.wall_started for r in traffic.requests)
    seconds = int(max(r.wall_ended for r in traffic.requests) - start) + 1
    ok, failed = [0] * seconds, [0] * seconds
    for r in traffic.requests:
        (ok if r.ok else failed)[int(r.wall_started - start)] += 1
    figure, axis = plt.subplots(figsize=(12, 4))
    axis.bar(range(seconds), ok, width=1.0, color="tab:green", label="successful requests")
    axis.bar(range(seconds), failed, bottom=ok, width=1.0, color="tab:red", label="failed requests")
    for step in steps:
        axis.axvline(step["started"] - start, color="grey", linestyle="--", linewidth=0.8)
        axis.text(step["started"] - start + 0.5, max(ok) * 1.02 if ok else 1, step["name"], rotation=90,
                  fontsize=8, va="bottom")
    axis.set_xlabel("seconds since the live traffic started")
    axis.set_ylabel("requests per second")
    axis.legend(loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main() -> int:
    BUILD.mkdir(exist_ok=True)
    say("bringing the simulated pair up (docker/pair.py up)")
    subprocess.run([sys.executable, str(REPO / "docker" / "pair.py"), "down"], cwd=REPO, capture_output=True)
    subprocess.run([sys.executable, str(REPO / "docker" / "pair.py"), "up"], cwd=REPO, check=True,
                   stdout=subprocess.DEVNULL)
    pair = Pair(json.loads((BUILD / "pair.json").read_text()))
    addresses = {pair.info["hosts"][h]["address"]: pair.https_port(h) for h in ("old", "new")}
    # BIND's journal would replay the last run's cutover; each demo keeps a run log of its own
    shutil.rmtree(BUILD / "demo-bind", ignore_errors=True)
    shutil.rmtree(BUILD / "demo-logs", ignore_errors=True)
    (BUILD / "demo-bind").mkdir()
    bind = Bind(BUILD / "demo-bind", zone=pair.domain,
                zone_text=pair_zone(pair.info["hosts"]["old"]["address"]))
    bind.start()
    try:
        env_file = demo_env(bind)
        resolved = {"at": 0.0, "port": pair.https_port("old")}

        def route() -> int:  # the client's resolver: asks the authoritative server at most once a second
            if time.monotonic() - resolved["at"] > 1:
                answer = dns.query.udp(dns.message.make_query(pair.domain, "A"), "127.0.0.1", port=bind.port,
                                       timeout=2)
                resolved.update(at=time.monotonic(), port=addresses[answer.answer[0][0].address])
            return resolved["port"]

        accounts = active_accounts(pair)
        _, follower = follower_pair(pair)
        traffic = Traffic(pair, [a.token for a in accounts], writes_per_second=20, reads_per_second=5,
                          route=route).start()
        stream = Stream(pair, follower.token, route, {pair.https_port(h): h for h in ("old", "new")})
        stream.start()
        time.sleep(3)
        steps = []
        for name, command in STEPS:
            steps.append(run_step(name, command, env_file))
            if steps[-1]["exit"] != 0:
                say(f"{name} failed (exit {steps[-1]['exit']}); stopping here")
                break
        time.sleep(3)
        traffic.stop()
        stream.stop.set()
        stream.join(timeout=5)
    finally:
        bind.stop()
    lost = missing_ids(pair, "new", traffic.acknowledged)
    expected = stream.expected(traffic, followed_by_follower(accounts))
    data = report(steps, traffic, lost, stream, expected)
    (BUILD / "report.json").write_text(json.dumps(data, indent=2) + "\n")
    (BUILD / "report.md").write_text(markdown(data))
    timeline(steps, traffic, BUILD / "timeline.png")
    print("\n" + markdown(data))
    say("saved build/report.md, build/report.json and build/timeline.png")
    failed_steps = [s["name"] for s in steps if s["exit"] != 0] or (len(steps) < len(STEPS))
    return 1 if lost or failed_steps or traffic.failures else 0


if __name__ == "__main__":
    sys.exit(main())
