"""Sidekiq's state in Redis, as data: parsing what redis-cli prints, and the merge into new's Redis (pure).

Layout (Sidekiq's own): `queues` SET of names, `queue:<name>` LISTs of job JSON (LPUSH in, BRPOP out),
`schedule`/`retry`/`dead` ZSETs scored by epoch, `processes` SET with a HASH per process (busy, quiet).

The move to new's Redis adds keys of this tool's own, so that it happens exactly once however often it is
interrupted and re-run:
- on old, `mastodon-migration:moving:<time>:<key>`: each of old's keys, renamed aside before the merge (old's
  Sidekiq has stopped, so nothing adds to them); the merge reads these, never the live names;
- on new, `mastodon-migration:moved-jids` SET: the id of every job merged in. One script per job checks it,
  adds the job and records its id atomically, so a job that new's Sidekiq has run meanwhile is not added
  again;
- on old, `mastodon-migration:moved:<time>:<key>`: the aside keys once the merge succeeded (kept for undo).

With a `REDIS_NAMESPACE` every one of these keys, Sidekiq's and this tool's, starts with `<namespace>:`
(redis-namespace's layout); the values do not (a queue's name in `queues`, a process in `processes`).
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

    @property
    def quieted(self) -> bool:
        """Every live process quiet (TSTP) and running nothing: it takes no more jobs from its queues."""
        return bool(self.quiet) and all(self.quiet.values()) and self.running == 0

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


def resp(*words: str) -> str:
    """One Redis command in the wire protocol, for redis-cli --pipe (exact bytes, no quoting)."""
    parts = [f"*{len(words)}\r\n"]
    for word in words:
        parts.append(f"${len(word.encode())}\r\n{word}\r\n")
    return "".join(parts)


ASIDE = "mastodon-migration:moving"
MOVED_JIDS = "mastodon-migration:moved-jids"

# KEYS: the target key, the record of moved ids, `queues`. ARGV: jid, job, score ('' for a queue), queue.
# The check comes first and changes nothing, so a failing ZADD (a bad score) leaves no trace: a script is
# not rolled back, but this one writes only after its last possible error.
MOVE_ONE = (
    "if redis.call('SISMEMBER', KEYS[2], ARGV[1]) == 1 then return 0 end "
    "if ARGV[3] == '' then redis.call('RPUSH', KEYS[1], ARGV[2]) redis.call('SADD', KEYS[3], ARGV[4]) "
    "else redis.call('ZADD', KEYS[1], ARGV[3], ARGV[2]) end "
    "redis.call('SADD', KEYS[2], ARGV[1]) return 1"
)


@dataclass(frozen=True)
class Aside:
    """One of old's keys, renamed aside for the move: its aside name, the name it had, and its jobs."""

    key: str
    target: str
    jobs: list[tuple[str, str]]  # (job, score) of a ZSET; (job, "") of a queue LIST, newest first

    @property
    def queue(self) -> str:
        return self.target.split(":", 1)[1] if self.target.startswith("queue:") else ""


def parse_aside(text: str, prefix: str = "") -> list[Aside]:
    """Sections `@@ zset KEY` / `@@ list KEY`, each followed by the key's `ZRANGE .. WITHSCORES` or
    `LRANGE` lines (split on "\n" only: see parse_zset). `prefix`: the namespace's, before every key."""
    aside = prefix + ASIDE
    sections: list[tuple[str, str, list[str]]] = []
    for line in text.split("\n"):
        words = line.split(" ")
        if len(words) == 3 and words[0] == "@@" and words[2].startswith(aside + ":"):
            sections.append((words[1], words[2], []))
        elif sections:
            sections[-1][2].append(line)
    found = []
    for kind, key, lines in sections:
        if kind == "zset":
            jobs = parse_zset("\n".join(lines))
        else:
            jobs = [(job, "") for job in lines if job]
        found.append(Aside(key, key[len(aside) + 1 :].split(":", 1)[-1], jobs))  # past `<time>:`
    return found


@dataclass
class Move:
    """The commands that move old's aside jobs into new's Redis, one atomic script per job."""

    commands: list[str] = field(default_factory=list)
    added: dict[str, int] = field(default_factory=dict)  # per key: jobs sent
    already: dict[str, int] = field(default_factory=dict)  # per key: jobs new had received before

    @property
    def pipe(self) -> str:
        return "".join(self.commands)


def plan_move(aside: list[Aside], moved: set[str], prefix: str = "") -> Move:
    """A script call per job whose id new has not recorded; each also records it (see MOVE_ONE). `prefix`:
    the namespace's in new's Redis."""
    plan = Move()
    for part in aside:
        fresh = [(job, score) for job, score in part.jobs if jid(job) not in moved]
        for job, score in fresh:
            keys = (prefix + part.target, prefix + MOVED_JIDS, prefix + "queues")
            plan.commands.append(
                resp("EVAL", MOVE_ONE, str(len(keys)), *keys, jid(job), job, score, part.queue)
            )
        plan.added[part.target] = plan.added.get(part.target, 0) + len(fresh)
        plan.already[part.target] = plan.already.get(part.target, 0) + len(part.jobs) - len(fresh)
    return plan


def pipe_replies(text: str) -> tuple[int, int]:
    """`redis-cli --pipe`'s last line `errors: E, replies: R` as (E, R); (-1, -1) when it is missing."""
    for line in reversed(text.split("\n")):
        if line.startswith("errors: ") and ", replies: " in line:
            errors, replies = line[len("errors: ") :].split(", replies: ", 1)
            if errors.strip().isdigit() and replies.strip().isdigit():
                return int(errors), int(replies)
    return -1, -1
