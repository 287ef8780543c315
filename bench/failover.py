"""Failover, four methods side by side, each on fresh pairs under the same steady load through old's public
endpoint (20 writes and 5 reads a second, and one user's streaming WebSocket):

- naive: the original procedure's order: promote, then repoint Mastodon and restart it; no fence;
- restart: this tool with DATABASE_ENDPOINT=direct: fence, prove, promote, then repoint and restart;
- pgbouncer: this tool's default: fence, prove, promote with PgBouncer paused across it;
- restart-boot15: `restart` with the stand-in's web booting for 15 s, as a Puma does.

Every run: a fresh pair, phase 1 and 2, then the load (and the WebSocket) starts, 3 s pass, the failover
runs, 3 s pass, the load stops. Figures are taken over the failover alone: from its start to 3 s after
its end. Lost writes are the acknowledged ids missing from new's database afterwards.
"""

from __future__ import annotations

import statistics
import time

from tests.e2e.measure import figures, inside, naive_failover
from tests.e2e.streaming import Stream, followed_by_follower
from tests.e2e.tokens import active_accounts, follower_pair
from tests.e2e.traffic import Traffic, missing_ids

from .common import fab, fresh_pair, must, say, settings_file

METHODS = {
    "naive": {"endpoint": "direct", "boot": 10, "what": "promote, then repoint and restart; no fence"},
    "restart": {"endpoint": "direct", "boot": 10, "what": "fence, prove, promote, then repoint and restart"},
    "pgbouncer": {"endpoint": "pgbouncer", "boot": 10, "what": "fence, prove, promote with PgBouncer paused"},
    "restart-boot15": {"endpoint": "direct", "boot": 15, "what": "`restart` with web booting for 15 s"},
}
FIGURES = (
    "acknowledged_writes_lost",
    "failures",
    "longest_failure_window_s",
    "worst_request_s",
    "p99_s",
    "streaming_events_missed",
    "streaming_drops",
)


def one_run(method: str, number: int) -> dict:
    spec = METHODS[method]
    pair = fresh_pair()
    settings = settings_file(f"failover-{method}-{number}", DATABASE_ENDPOINT=spec["endpoint"])
    if spec["boot"] != 10:  # phase 2 copies old's .env.production to new, BOOT_SECONDS with it
        pair.exec(
            "old",
            "sed",
            "-i",
            f"s/^BOOT_SECONDS=.*/BOOT_SECONDS={spec['boot']}/",
            "/home/mastodon/live/.env.production",
            check=True,
        )
    for phase in ("phase1-replicate", "phase2-proxy"):
        _, result = fab(settings, phase)
        must(result, f"{method} run {number}: {phase}")
    accounts = active_accounts(pair)
    _, follower = follower_pair(pair)
    traffic = Traffic(pair, [a.token for a in accounts], writes_per_second=20, reads_per_second=5).start()
    stream = Stream(pair, follower.token)
    stream.start()
    stream.connected.wait(30)
    time.sleep(3)
    started = time.time()
    if method == "naive":
        naive_failover(pair, boot_seconds=spec["boot"])
    else:
        _, result = fab(settings, "phase3-failover")
        must(result, f"{method} run {number}: phase3-failover")
    ended = time.time() + 3
    time.sleep(3)
    traffic.stop(stalls=True)
    time.sleep(2)  # the last statuses' fan-out reaches the WebSocket
    stream.stop.set()
    stream.join(timeout=10)
    expected = stream.expected(traffic, followed_by_follower(accounts))
    lost = missing_ids(pair, "new", traffic.acknowledged)
    run = {
        "method": method,
        "run": number,
        "seconds": round(ended - started, 1),
        **figures(inside(traffic.requests, started, ended)),
        "acknowledged_writes": len(traffic.acknowledged),
        "acknowledged_writes_lost": len(lost),
        "streaming_events_expected": len(expected),
        "streaming_events_missed": len(expected - stream.received),
        "streaming_drops": stream.drops,
        "streaming_reconnects": stream.reconnects,
    }
    say(f"{method} #{number}: " + ", ".join(f"{k}={run[k]}" for k in FIGURES))
    return run


def summary(runs: list[dict]) -> dict:
    """Median and max of each figure, by method."""
    table = {}
    for method in METHODS:
        mine = [r for r in runs if r["method"] == method]
        if mine:
            table[method] = {
                "runs": len(mine),
                **{
                    figure: {
                        "median": statistics.median(r[figure] for r in mine),
                        "max": max(r[figure] for r in mine),
                    }
                    for figure in FIGURES
                },
            }
    return table


def run(repeats: int) -> dict:
    runs = []
    for number in range(1, repeats + 1):  # interleaved, so that a slow spell of the machine hits all four
        for method in METHODS:
            runs.append(one_run(method, number))
    return {
        "repeats": repeats,
        "methods": {m: spec["what"] for m, spec in METHODS.items()},
        "summary": summary(runs),
        "runs": runs,
    }
