"""The tool on one fresh pair: its own overhead, the proxy's, and how phases 1 and 2 grow with the data.

- overhead: the wall time of `status` and of a no-op re-run of phases 1 to 4, and how many ssh logins
  each invocation cost on each host (counted in the host's own sshd journal);
- proxy: the same request (a home timeline) through old's proxy and straight to new, alternated, once
  phase 2 has switched: p50, p99 and what the proxy adds;
- scale: phase 1 and 2 wall times at a seed size, and the share of the steps that grow with the data
  (base backup, asset precompile, home-feed build), from the run log's command times.
"""

from __future__ import annotations

import time

from tests.e2e.measure import percentile
from tests.e2e.test_phase1 import sql
from tests.e2e.tokens import active_accounts
from tests.fakes.bind import Bind, pair_zone, rfc2136_settings

from .common import WORK, fab, fresh_pair, must, run_log, say, settings_file, ssh_logins

GROWING_STEPS = ("base backup", "precompile assets", "build home feeds")


def invocation(pair, settings, *args: str) -> dict:
    """One `fab` invocation: wall time, ssh logins per host, commands run."""
    before = {host: ssh_logins(pair, host) for host in ("old", "new")}
    commands_before = sum(1 for r in run_log(settings) if "command" in r)
    seconds, result = fab(settings, *args)
    must(result, " ".join(args))
    time.sleep(1)  # journald
    after = {host: ssh_logins(pair, host) for host in ("old", "new")}

    def logins(host: str, operator: bool) -> int:
        """New logins on a host: the operator's (the pair's ssh user), or the hosts' own."""
        return sum(
            n - before[host].get(user, 0)
            for user, n in after[host].items()
            if (user == pair.info["ssh_user"]) == operator
        )

    return {
        "command": "fab -H old,new " + " ".join(args),
        "seconds": round(seconds, 2),
        "ssh_logins": {host: logins(host, True) for host in ("old", "new")},
        "host_to_host_logins": {host: logins(host, False) for host in ("old", "new")},
        "commands": sum(1 for r in run_log(settings) if "command" in r) - commands_before,
    }


def step_seconds(records: list[dict]) -> dict[str, float]:
    """Seconds of commands by step, a step counting its sub-steps' commands too (the run log marks where
    each step starts and ends)."""
    found: dict[str, float] = {}
    open_steps: list[str] = []
    for record in records:
        if "step" in record:
            open_steps.append(record["step"])
        elif "step_end" in record and record["step_end"] in open_steps:
            del open_steps[len(open_steps) - 1 - open_steps[::-1].index(record["step_end"]) :]
        elif "command" in record:
            for step in set(open_steps):
                found[step] = found.get(step, 0.0) + float(record.get("seconds", 0))
    return found


def proxy_overhead(pair, samples: int) -> dict:
    # the same request on both paths, a sample's pair on one user's token; the users take turns, so that no
    # token meets Mastodon's limit of 300 API requests in 5 minutes (a 429 would be no sample)
    users = active_accounts(pair)
    took: dict[str, list[float]] = {"through old's proxy": [], "straight to new": []}
    refused = 0
    for number in range(samples):
        user = users[number % len(users)]
        for label, host in (("through old's proxy", "old"), ("straight to new", "new")):
            started = time.monotonic()
            status, _, _ = pair.request("GET", "/api/v1/timelines/home?limit=5", host=host, token=user.token)
            if status == 200:
                took[label].append(time.monotonic() - started)
            else:
                refused += 1
    figures = {
        label: {"requests": len(t), "p50_s": percentile(t, 0.5), "p99_s": percentile(t, 0.99)}
        for label, t in took.items()
    }
    via, direct = figures["through old's proxy"], figures["straight to new"]
    return {
        "samples": samples,
        "not_ok": refused,
        **figures,
        "added_p50_s": round(via["p50_s"] - direct["p50_s"], 4),
        "added_p99_s": round(via["p99_s"] - direct["p99_s"], 4),
    }


def phases_at(seed_size: str, with_overhead: bool, samples: int) -> dict:
    say(f"seed {seed_size}: a fresh pair")
    pair = fresh_pair(seed_size)
    bind = None
    dns: dict = {}
    if with_overhead:  # phase 4 needs a DNS server to move the record on: BIND on 127.0.0.1, as in the demo
        (WORK / "bind").mkdir(parents=True, exist_ok=True)
        bind = Bind(
            WORK / "bind", zone=pair.domain, zone_text=pair_zone(pair.info["hosts"]["old"]["address"])
        )
        bind.start()
        dns = rfc2136_settings(bind)
    try:
        return measure(pair, settings_file(f"tool-{seed_size}", **dns), seed_size, with_overhead, samples)
    finally:
        if bind:
            bind.stop()


def measure(pair, settings, seed_size: str, with_overhead: bool, samples: int) -> dict:
    found: dict = {"seed_size": seed_size, "overhead": [], "phases": {}}
    if with_overhead:
        found["overhead"].append(invocation(pair, settings, "status"))
    for phase in ("phase1-replicate", "phase2-proxy"):
        mark = len(run_log(settings))
        seconds, result = fab(settings, phase)
        must(result, phase)
        steps = step_seconds(run_log(settings)[mark:])
        found["phases"][phase] = {
            "seconds": round(seconds, 1),
            **{step: round(steps.get(step, 0.0), 1) for step in GROWING_STEPS if step in steps},
        }
        say(f"seed {seed_size}: {phase} {found['phases'][phase]}")
        if with_overhead:
            found["overhead"].append(invocation(pair, settings, phase))
    if with_overhead:
        found["proxy"] = proxy_overhead(pair, samples)
        for phase in ("phase3-failover", "phase4-dns"):  # each once for real, then its no-op re-run
            _, result = fab(settings, phase)
            must(result, phase)
            found["overhead"].append(invocation(pair, settings, phase))
        found["overhead"].append(invocation(pair, settings, "status"))
    size = sql(pair, "new", "SELECT pg_database_size('mastodon_production')")
    found["database_bytes"] = int(size or 0)
    return found


def run(sizes: list[str], samples: int) -> dict:
    results = [phases_at(size, with_overhead=(i == 0), samples=samples) for i, size in enumerate(sizes)]
    return {"sizes": results}
