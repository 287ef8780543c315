"""Figures of a live client's requests over a stretch of time, shared by the demo, the tests and the
benchmarks; and the original procedure's naive failover, done by hand on the pair, as the baseline."""
from __future__ import annotations

import time

from .test_phase1 import sql


def failure_window(requests) -> float:
    """The longest time the client saw only failures: from a failed request's start to the end of the next
    request that succeeded, or of the last failure when none did (0 when nothing failed)."""
    longest, first_failed, last_failed = 0.0, None, None
    for request in sorted(requests, key=lambda r: r.wall_started):
        if not request.ok:
            first_failed = request.wall_started if first_failed is None else first_failed
            last_failed = request.wall_ended
        elif first_failed is not None:
            longest, first_failed = max(longest, request.wall_ended - first_failed), None
    if first_failed is not None:
        longest = max(longest, last_failed - first_failed)
    return longest


def percentile(seconds: list[float], share: float) -> float:
    ordered = sorted(seconds)
    return round(ordered[min(len(ordered) - 1, int(share * len(ordered)))], 3) if ordered else 0.0


def latencies(requests) -> list[float]:
    """How long each successful request took."""
    return [r.ended - r.started for r in requests if r.ok]


def inside(requests, started: float, ended: float) -> list:
    """The requests that began between two epoch times."""
    return [r for r in requests if started <= r.wall_started <= ended]


def figures(requests) -> dict:
    """Requests, failures, the longest failure window, p50/p99 and the worst successful request."""
    took = latencies(requests)
    return {"requests": len(requests), "failures": sum(not r.ok for r in requests),
            "longest_failure_window_s": round(failure_window(requests), 2),
            "p50_s": percentile(took, 0.5), "p99_s": percentile(took, 0.99),
            "worst_request_s": round(max(took, default=0.0), 3)}


def naive_failover(pair, boot_seconds: float) -> None:
    """The original procedure's order, as an admin types it: promote new while old still takes writes
    through the tunnel, then point new's Mastodon at its own database and restart it (no fence, no proof)."""
    sql(pair, "new", "SELECT pg_promote(true, 60)")
    time.sleep(1)  # "as quickly as possible": the admin edits .env.production and restarts
    old_env = pair.exec("old", "cat", "/home/mastodon/live/.env.production", check=True).stdout
    for key in ("DB_HOST", "DB_PORT"):  # as old's Mastodon reached old's database (socket or loopback)
        value = [line for line in old_env.splitlines() if line.startswith(f"{key}=")][0]
        pair.exec("new", "sed", "-i", f"s|^{key}=.*|{value}|", "/home/mastodon/live/.env.production",
                  check=True)
    pair.exec("new", "sh", "-c", "systemctl reload mastodon-web && systemctl restart mastodon-sidekiq "
              "mastodon-streaming", check=True)
    time.sleep(boot_seconds + 2)  # web boots, its requests waiting
