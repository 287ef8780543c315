"""Sidekiq: drain old's workers without losing a job, and carry its durable state to new's Redis.

Every question goes to the Redis that the host's Mastodon uses (its .env.production); the Redis layout
is documented in sidekiq_jobs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Callable, ClassVar

from . import redis_cli, system
from .command import Cmd, Remote, Secret, Session, StepFailed, known
from .facts import Fact, Output, UnitEnabled, UnitStates, stopped
from .mastodon import env_values, read_env
from .sidekiq_jobs import (
    BEAT_SECONDS,
    DURABLE_SETS,
    SidekiqState,
    jid,
    merge,
    parse_list,
    parse_state,
    parse_zset,
)

MOVED = f"mastodon-migration:moved:{time.strftime('%Y%m%dT%H%M%S')}"  # where old's moved keys are set aside
MOVED_PATTERN = MOVED.rsplit(":", 1)[0] + ":*"  # the keys every drain set aside, whatever its time


@dataclass(frozen=True)
class RedisFact(Fact):
    """A question to the Redis a host's Mastodon uses; `values` are its .env.production (None: a plan)."""

    values: dict[str, str] | None


@dataclass(frozen=True)
class QueueState(RedisFact):
    """`queue NAME LENGTH` per queue and `process IDENTITY BUSY QUIET` per live process."""

    passes: ClassVar[str] = (
        "prints `queue NAME LENGTH` per queue and `process IDENTITY BUSY QUIET` per live "
        "Sidekiq process: idle means every LENGTH and BUSY is 0"
    )
    SCRIPT: ClassVar[str] = """for q in $(r SMEMBERS queues); do echo "queue $q $(r LLEN "queue:$q")"; done
for p in $(r SMEMBERS processes); do
  if [ "$(r EXISTS "$p")" = 1 ]; then echo "process $p $(r HGET "$p" busy) $(r HGET "$p" quiet)"; fi
done"""

    def command(self) -> Cmd:
        return redis_cli.script(self.values, self.SCRIPT)

    @staticmethod
    def parse(out: Output) -> SidekiqState:
        return parse_state(out.stdout)


@dataclass(frozen=True)
class SortedSet(RedisFact):
    key: str = "schedule"
    passes: ClassVar[str] = (
        "prints each job (JSON) and its score on alternate lines; nothing when the set is empty"
    )

    def command(self) -> Cmd:
        # job arguments may be private (ActivityPub bodies, e-mail addresses): kept out of logs
        return replace(redis_cli.cli(self.values, f"ZRANGE {self.key} 0 -1 WITHSCORES"), secret_output=True)

    @staticmethod
    def parse(out: Output) -> list[tuple[str, str]]:
        return parse_zset(out.stdout)


@dataclass(frozen=True)
class QueueNames(RedisFact):
    passes: ClassVar[str] = "prints the name of each queue Sidekiq knows, one a line"

    def command(self) -> Cmd:
        return redis_cli.cli(self.values, "SMEMBERS queues")

    @staticmethod
    def parse(out: Output) -> list[str]:
        return out.stdout.split()


@dataclass(frozen=True)
class QueuedJobs(RedisFact):
    name: str = "default"
    passes: ClassVar[str] = "prints each job (JSON) waiting in queue {name}, newest first; nothing when empty"

    def command(self) -> Cmd:
        return replace(redis_cli.cli(self.values, f"LRANGE queue:{self.name} 0 -1"), secret_output=True)

    @staticmethod
    def parse(out: Output) -> list[str]:
        return parse_list(out.stdout)


@dataclass(frozen=True)
class DurableLeft(RedisFact):
    """Phase 3's "is this done?" for Sidekiq: which of schedule/retry/dead are still on old."""

    passes: ClassVar[str] = (
        "prints the names of Sidekiq's sets still on this Redis; nothing once they were moved"
    )

    def command(self) -> Cmd:
        return redis_cli.script(
            self.values, "\n".join(f'[ "$(r EXISTS {key})" = 1 ] && echo {key}' for key in DURABLE_SETS)
        )

    @staticmethod
    def parse(out: Output) -> list[str]:
        return out.stdout.split()


@dataclass(frozen=True)
class MovedKeys(RedisFact):
    """How many keys earlier drains set aside on old."""

    passes: ClassVar[str] = "prints how many keys drains set aside as " + MOVED_PATTERN

    def command(self) -> Cmd:
        return redis_cli.script(self.values, f"r --scan --pattern '{MOVED_PATTERN}' | wc -l")

    @staticmethod
    def parse(out: Output) -> int:
        text = out.stdout.strip()
        return int(text) if text.isdigit() else 0


@dataclass
class IdleFor:
    """Done once Sidekiq was seen idle twice at least `seconds` apart (busy counts lag by a heartbeat)."""

    seconds: float
    clock: Callable[[], float] = time.monotonic
    first_idle: float | None = field(default=None, init=False)

    def __call__(self, state: SidekiqState) -> bool:
        if not state.idle:
            self.first_idle = None
            return False
        self.first_idle = self.first_idle if self.first_idle is not None else self.clock()
        return self.clock() - self.first_idle >= self.seconds


def _wait_idle(s: Session, values, timeout: float) -> None:
    """Queues empty and nothing running, seen twice at least one heartbeat apart."""
    try:
        s.old.wait_for(
            QueueState(values),
            IdleFor(BEAT_SECONDS),
            what=f"Sidekiq on old is idle (queues empty, nothing busy) in two answers {BEAT_SECONDS} s apart",
            timeout=timeout,
            interval=2,
            show=SidekiqState.summary,
        )
    except StepFailed as error:
        raise StepFailed(
            f"Sidekiq on old did not drain: {error}. Old's web and streaming are stopped (old's nginx "
            "proxies to new); Sidekiq still works on. Nothing else was changed: run drain again, with a "
            "longer --timeout if needed."
        ) from None


def stop_old_mastodon(s: Session, timeout: float) -> None:
    cfg = s.settings
    with s.step(
        "drain old's Sidekiq",
        "old's web and streaming stop (the proxy sends everything to new); Sidekiq "
        "finishes every queued job, is quieted, then stops",
        undo="systemctl enable --now the units on old",
    ):
        values = env_values(read_env(s, s.old))
        active = s.old.fact(
            UnitStates(cfg.mastodon_services), then="each unit that is not `inactive` or `failed` is stopped"
        )
        state = active if known(active) else {unit: "unknown" for unit in cfg.mastodon_services}
        for unit in (cfg.mastodon_web_service, cfg.mastodon_streaming_service):
            if not stopped(state[unit]):
                s.old.run(system.systemctl("stop", unit))
        if not stopped(state[cfg.mastodon_sidekiq_service]):
            _wait_idle(s, values, timeout)
            s.old.run(system.systemctl("kill", "-s", "TSTP", cfg.mastodon_sidekiq_service))
            s.old.wait_for(
                QueueState(values),
                lambda st: st.running == 0 and all(st.quiet.values()),
                what="Sidekiq on old is quiet and idle",
                timeout=timeout,
                show=SidekiqState.summary,
            )
            s.old.run(system.systemctl("stop", cfg.mastodon_sidekiq_service))
        for unit in cfg.mastodon_services:  # a reboot of old must not start them against a fenced database
            if s.old.fact(UnitEnabled(unit), then="anything but `disabled`: disable it") != "disabled":
                s.old.run(system.systemctl("disable", unit))


def _jobs(remote: Remote, values) -> tuple[dict, dict]:
    """A host's durable sets and queued jobs."""
    sets = {key: remote.fact(SortedSet(values, key), planned=[]) for key in DURABLE_SETS}
    names = remote.fact(QueueNames(values), planned=["<each queue>"])
    queues = {name: remote.fact(QueuedJobs(values, name), planned=[]) for name in names}
    return sets, queues


def _jids(sets: dict, queues: dict) -> dict[str, set[str]]:
    found = {key: {jid(member) for member, _ in entries} for key, entries in sets.items()}
    found.update({f"queue:{name}": {jid(job) for job in jobs} for name, jobs in queues.items()})
    return found


def move_jobs(s: Session) -> None:
    with s.step(
        "move Sidekiq's jobs to new",
        undo="old's keys stay in old's Redis as mastodon-migration:moved:<time>:<key> (RENAME them back)",
        why="scheduled, retrying and dead jobs (and any left in a queue) "
        "are merged into new's Redis: none lost, none twice",
    ):
        old_values = env_values(read_env(s, s.old))
        new_values = env_values(read_env(s, s.new))
        old_sets, old_queues = _jobs(s.old, old_values)
        new_sets, new_queues = _jobs(s.new, new_values)
        plan = merge(old_sets, old_queues, _jids(new_sets, new_queues))
        if s.planning or plan.commands:
            payload = (
                plan.pipe.rstrip("\n") or "<old's jobs>"
            )  # the here-document's own newline stays visible
            jobs = Secret(
                payload,
                f"{sum(plan.added.values())} jobs from old's Redis "
                "(Redis protocol; job arguments may be private)",
            )
            s.new.run(redis_cli.script(new_values, "r --pipe", stdin=payload + "\n", secrets=(jobs,)))
        if not s.planning:
            after = _jids(*_jobs(s.new, new_values))
            missing = {key: ids - after.get(key, set()) for key, ids in _jids(old_sets, old_queues).items()}
            missing = {key: ids for key, ids in missing.items() if ids}
            if missing:
                raise StepFailed(
                    f"after the merge new's Redis still lacks {sum(map(len, missing.values()))} of "
                    f"old's jobs ({', '.join(missing)}); old's Redis still holds them all. Run drain "
                    "again."
                )
            s.say(
                "moved: "
                + ", ".join(f"{k} +{v} (already there: {plan.already[k]})" for k, v in plan.added.items())
            )
        keys = (
            [key for key, entries in old_sets.items() if entries]
            + [f"queue:{name}" for name, jobs in old_queues.items() if jobs]
        ) or (["<the keys moved>"] * s.planning)
        if keys:  # set aside on old (not deleted): a later run must not hand new jobs it has already done
            s.old.run(
                redis_cli.script(
                    old_values,
                    f"for k in {' '.join(keys)}; do\n"
                    f'  if [ "$(r EXISTS "$k")" = 1 ]; then r RENAME "$k" "{MOVED}:$k"; fi\ndone',
                )
            )


def drain_old(s: Session, timeout: float = 300) -> None:
    stop_old_mastodon(s, timeout)
    move_jobs(s)
