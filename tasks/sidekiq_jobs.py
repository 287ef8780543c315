"""Sidekiq's state in Redis, as data: parsing what redis-cli prints, and the merge into new's Redis (pure).

Layout (Sidekiq's own): `queues` SET of names, `queue:<name>` LISTs of job JSON (LPUSH in, BRPOP out),
`schedule`/`retry`/`dead` ZSETs scored by epoch, `processes` SET with a HASH per process (busy, quiet).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

DURABLE_SETS = ("schedule", "retry", "dead")
BEAT_SECONDS = 10  # Sidekiq refreshes a process's hash every 10 s, so busy counts can be that stale


@dataclass(frozen=True)
class SidekiqState:
    queues: dict[str, int] = field(default_factory=dict)  # name -> jobs waiting
    busy: dict[str, int] = field(default_factory=dict)  # live process identity -> jobs running
    quiet: dict[str, bool] = field(default_factory=dict)

    @property
    def waiting(self) -> int:
        return sum(self.queues.values())

    @property
    def running(self) -> int:
        return sum(self.busy.values())

    @property
    def idle(self) -> bool:
        return self.waiting == 0 and self.running == 0

    def summary(self) -> str:
        queues = ", ".join(f"{k} {v}" for k, v in sorted(self.queues.items()) if v) or "all empty"
        return f"queues: {queues}; busy: {self.running} in {len(self.busy)} process(es)"


def parse_state(text: str) -> SidekiqState:
    """Lines `queue NAME LENGTH` and `process IDENTITY BUSY QUIET` (see sidekiq.STATE_SCRIPT)."""
    queues, busy, quiet = {}, {}, {}
    for line in text.splitlines():
        words = line.split()
        if len(words) >= 3 and words[0] == "queue":
            queues[words[1]] = int(words[2] or 0)
        elif len(words) >= 3 and words[0] == "process":
            busy[words[1]] = int(words[2]) if words[2].isdigit() else 0
            quiet[words[1]] = len(words) > 3 and words[3] == "true"
    return SidekiqState(queues, busy, quiet)


def jid(job: str) -> str:
    """A job's id; a job that is not JSON is identified by its whole text."""
    try:
        return str(json.loads(job).get("jid") or job)
    except (ValueError, AttributeError):
        return job


def parse_zset(text: str) -> list[tuple[str, str]]:
    """`ZRANGE key 0 -1 WITHSCORES` (--raw): member and score on alternate lines. Split on "\n" only: a
    job's JSON escapes newlines but not U+2028, U+2029 or U+0085, which str.splitlines() would also cut at
    (ActivityPub bodies carry them), shifting every member and score after it."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [(lines[i], lines[i + 1]) for i in range(0, len(lines) - 1, 2)]


def parse_list(text: str) -> list[str]:
    """`LRANGE key 0 -1` (--raw): one job per line, newest first."""
    return [x for x in text.split("\n") if x]  # "\n" only: see parse_zset


def resp(*words: str) -> str:
    """One Redis command in the wire protocol, for redis-cli --pipe (exact bytes, no quoting)."""
    parts = [f"*{len(words)}\r\n"]
    for word in words:
        parts.append(f"${len(word.encode())}\r\n{word}\r\n")
    return "".join(parts)


@dataclass
class Merge:
    """Commands that add old's jobs to new's Redis, and what they add."""

    commands: list[str] = field(default_factory=list)
    added: dict[str, int] = field(default_factory=dict)
    already: dict[str, int] = field(default_factory=dict)

    @property
    def pipe(self) -> str:
        return "".join(self.commands)


def merge(
    old_sets: dict[str, list[tuple[str, str]]],
    old_queues: dict[str, list[str]],
    new_jids: dict[str, set[str]],
) -> Merge:
    """Jobs of old's durable sets and queues that new lacks (by jid): entries already on new stay,
    nothing is duplicated, nothing is dropped. Queued jobs go behind new's own, oldest first out."""
    plan = Merge()
    for key, entries in old_sets.items():
        fresh = [(member, score) for member, score in entries if jid(member) not in new_jids.get(key, set())]
        for member, score in fresh:
            plan.commands.append(resp("ZADD", key, "NX", score, member))
        plan.added[key], plan.already[key] = len(fresh), len(entries) - len(fresh)
    for name, jobs in old_queues.items():
        key = f"queue:{name}"
        fresh = [job for job in jobs if jid(job) not in new_jids.get(key, set())]
        if fresh:
            plan.commands.append(resp("SADD", "queues", name))
        for job in fresh:  # LRANGE lists newest first; RPUSH in that order leaves the oldest at the right end
            plan.commands.append(resp("RPUSH", key, job))
        plan.added[key], plan.already[key] = len(fresh), len(jobs) - len(fresh)
    return plan
