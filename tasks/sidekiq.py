"""Sidekiq: drain old's workers without losing a job, and carry its durable state to new's Redis.

Every question goes to the Redis that the host's Mastodon uses (its .env.production); the Redis layout
is documented in sidekiq_jobs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Callable, ClassVar

from . import redis_cli, system
from .command import Cmd, Secret, Session, StepFailed, known
from .facts import Fact, Output, UnitEnabled, UnitStates, stopped
from .mastodon import env_values, read_env
from .sidekiq_jobs import (
    ASIDE,
    BEAT_SECONDS,
    DURABLE_SETS,
    MOVED_JIDS,
    Aside,
    SidekiqState,
    parse_aside,
    parse_state,
    pipe_replies,
    plan_move,
)

STAMP = time.strftime("%Y%m%dT%H%M%S")
MOVING = f"{ASIDE}:{STAMP}"  # old's keys, renamed aside before the merge (see sidekiq_jobs)
MOVED_PREFIX = "mastodon-migration:moved"
MOVED = f"{MOVED_PREFIX}:{STAMP}"  # where they stay once merged
MOVED_PATTERN = MOVED_PREFIX + ":*"  # the keys every drain set aside, whatever its time


# Sidekiq's durable sets and queues renamed aside on old (see sidekiq_jobs), with the number of jobs they hold
SET_ASIDE = (
    f'n=0\nfor k in {" ".join(DURABLE_SETS)} $(r SMEMBERS "${{P}}queues" | sed "s/^/queue:/"); do\n'
    '  case "$(r TYPE "$P$k")" in\n'
    '    zset) c=$(r ZCARD "$P$k");;\n    list) c=$(r LLEN "$P$k");;\n    *) continue;;\n  esac\n'
    f'  r RENAME "$P$k" "${{P}}{MOVING}:$k" >/dev/null && n=$((n + c))\n'
    'done\necho "set aside: $n jobs"'
)

# Once merged, the aside keys keep their jobs on old under a final name (for undo)
KEEP_MOVED = (
    f'for k in $(r --scan --pattern "${{P}}{ASIDE}:*"); do\n'
    f'  r RENAME "$k" "${{P}}{MOVED_PREFIX}:${{k#"${{P}}{ASIDE}:"}}" >/dev/null\ndone'
)


@dataclass(frozen=True)
class RedisFact(Fact):
    """A question to the Redis that holds a host's Sidekiq state (redis_cli.sidekiq)."""

    target: redis_cli.Target


@dataclass(frozen=True)
class QueueState(RedisFact):
    """`queue NAME LENGTH` per queue and `process IDENTITY BUSY QUIET` per live process."""

    passes: ClassVar[str] = (
        "prints `queue NAME LENGTH` per queue and `process IDENTITY BUSY QUIET` per live "
        "Sidekiq process: idle means every LENGTH and BUSY is 0"
    )
    SCRIPT: ClassVar[
        str
    ] = """for q in $(r SMEMBERS "${P}queues"); do echo "queue $q $(r LLEN "${P}queue:$q")"; done
for p in $(r SMEMBERS "${P}processes"); do
  if [ "$(r EXISTS "$P$p")" = 1 ]; then echo "process $p $(r HGET "$P$p" busy) $(r HGET "$P$p" quiet)"; fi
done"""

    def command(self) -> Cmd:
        return redis_cli.script(self.target, self.SCRIPT)

    @staticmethod
    def parse(out: Output) -> SidekiqState:
        return parse_state(out.stdout)


@dataclass(frozen=True)
class DurableLeft(RedisFact):
    """Phase 3's "is this done?" for Sidekiq: which of schedule/retry/dead are still on old."""

    passes: ClassVar[str] = (
        "prints the names of Sidekiq's sets still on this Redis; nothing once they were moved"
    )

    def command(self) -> Cmd:
        return redis_cli.script(
            self.target,
            "\n".join(f'[ "$(r EXISTS "${{P}}{key}")" = 1 ] && echo {key}' for key in DURABLE_SETS),
        )

    @staticmethod
    def parse(out: Output) -> list[str]:
        return out.stdout.split()


@dataclass(frozen=True)
class MovedKeys(RedisFact):
    """How many keys earlier drains set aside on old."""

    passes: ClassVar[str] = "prints how many keys drains set aside as " + MOVED_PATTERN

    def command(self) -> Cmd:
        return redis_cli.script(self.target, f'r --scan --pattern "${{P}}{MOVED_PATTERN}" | wc -l')

    @staticmethod
    def parse(out: Output) -> int:
        text = out.stdout.strip()
        return int(text) if text.isdigit() else 0


@dataclass
class IdleFor:
    """Done once Sidekiq was seen idle twice at least `seconds` apart (busy counts lag by a heartbeat), or
    quieted: a quiet Sidekiq (an earlier run's TSTP) takes nothing from its queues, so they never empty;
    what waits there is moved to new with the rest."""

    seconds: float
    clock: Callable[[], float] = time.monotonic
    first_idle: float | None = field(default=None, init=False)

    def __call__(self, state: SidekiqState) -> bool:
        if state.quieted:
            return True
        if not state.idle:
            self.first_idle = None
            return False
        self.first_idle = self.first_idle if self.first_idle is not None else self.clock()
        return self.clock() - self.first_idle >= self.seconds


def _wait_idle(s: Session, target: redis_cli.Target, timeout: float):
    """Queues empty and nothing running, seen twice at least one heartbeat apart (or quieted already).
    Returns the last answer."""
    try:
        return s.old.wait_for(
            QueueState(target),
            IdleFor(BEAT_SECONDS),
            what=f"Sidekiq on old is idle (queues empty, nothing busy) in two answers {BEAT_SECONDS} s "
            "apart, or quiet (every process `true`: an earlier run quieted it) and running nothing",
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


def stop_old_mastodon(s: Session, timeout: float, keep_streaming: bool = False) -> None:
    """`keep_streaming`: old's streaming server still serves the WebSockets it holds (fed by the streaming
    relay); it writes nothing, so the promotion does not need it stopped."""
    cfg = s.settings
    stopping = "old's web stops" if keep_streaming else "old's web and streaming stop"
    with s.step(
        "drain old's Sidekiq",
        f"{stopping} (the proxy sends everything to new); Sidekiq finishes every queued job, is quieted, "
        "then stops"
        + ("; old's streaming server keeps its WebSockets, fed by the relay" if keep_streaming else ""),
        undo="systemctl enable --now the units on old",
    ):
        target = redis_cli.sidekiq(env_values(read_env(s, s.old)))
        active = s.old.fact(
            UnitStates(cfg.mastodon_services), then="each unit that is not `inactive` or `failed` is stopped"
        )
        state = active if known(active) else {unit: "unknown" for unit in cfg.mastodon_services}
        for unit in (
            cfg.mastodon_web_service,
            *(() if keep_streaming else (cfg.mastodon_streaming_service,)),
        ):
            if not stopped(state[unit]):
                s.old.run(system.systemctl("stop", unit))
        if not stopped(state[cfg.mastodon_sidekiq_service]):
            last = _wait_idle(s, target, timeout)
            if not (known(last) and last.quieted):  # quiet already: what waits in its queues is moved
                s.old.run(system.systemctl("kill", "-s", "TSTP", cfg.mastodon_sidekiq_service))
            s.old.wait_for(
                QueueState(target),
                lambda st: st.running == 0 and all(st.quiet.values()),
                what="Sidekiq on old is quiet and idle",
                timeout=timeout,
                show=SidekiqState.summary,
            )
            s.old.run(system.systemctl("stop", cfg.mastodon_sidekiq_service))
        for unit in cfg.mastodon_services:  # a reboot of old must not start them against a fenced database
            if s.old.fact(UnitEnabled(unit), then="anything but `disabled`: disable it") != "disabled":
                s.old.run(system.systemctl("disable", unit))


@dataclass(frozen=True)
class AsideJobs(RedisFact):
    """The jobs in the keys set aside for the move (see sidekiq_jobs), by key."""

    passes: ClassVar[str] = (
        f"prints `@@ zset|list KEY` for each key under {ASIDE}:, then its jobs (JSON; a set's with their "
        "scores on alternate lines); nothing when no key is set aside"
    )
    SCRIPT: ClassVar[str] = f"""for k in $(r --scan --pattern "${{P}}{ASIDE}:*"); do
  case "$(r TYPE "$k")" in
    zset) echo "@@ zset $k"; r ZRANGE "$k" 0 -1 WITHSCORES;;
    list) echo "@@ list $k"; r LRANGE "$k" 0 -1;;
  esac
done"""

    def command(self) -> Cmd:
        # job arguments may be private (ActivityPub bodies, e-mail addresses): kept out of logs
        return replace(redis_cli.script(self.target, self.SCRIPT), secret_output=True)

    def parse(self, out: Output) -> list[Aside]:
        return parse_aside(out.stdout, self.target.prefix)


@dataclass(frozen=True)
class MovedJids(RedisFact):
    passes: ClassVar[str] = f"prints the id of each job an earlier move put into this Redis ({MOVED_JIDS})"

    def command(self) -> Cmd:
        return redis_cli.cli(self.target, f'SMEMBERS "${{P}}{MOVED_JIDS}"')

    @staticmethod
    def parse(out: Output) -> set[str]:
        return set(out.stdout.split())


def move_jobs(s: Session) -> None:
    with s.step(
        "move Sidekiq's jobs to new",
        undo=f"old's keys stay in old's Redis as {MOVED}:<key> (RENAME them back)",
        why="scheduled, retrying and dead jobs (and any left in a queue) are set aside on old, then merged "
        "into new's Redis job by job, each job's id recorded with it: none lost, none twice, however often "
        "this is interrupted and re-run",
    ):
        old_redis = redis_cli.sidekiq(env_values(read_env(s, s.old)))
        new_redis = redis_cli.sidekiq(env_values(read_env(s, s.new)))
        # set aside first: the merge reads only these, never keys something else may change
        renamed = s.old.run(redis_cli.script(old_redis, SET_ASIDE))
        aside = s.old.fact(AsideJobs(old_redis), planned=[])
        _require_found(renamed.stdout, aside)
        moved = s.new.fact(MovedJids(new_redis), planned=set(), then="jobs with these ids are not sent again")
        plan = plan_move(aside, moved, new_redis.prefix)
        if s.planning or plan.commands:
            # rstrip: the here-document's own newline stays visible
            payload = plan.pipe.rstrip("\n") or "<old's jobs>"
            jobs = Secret(
                payload,
                f"{sum(plan.added.values())} jobs from old's Redis, a script call each "
                "(Redis protocol; job arguments may be private)",
            )
            out = s.new.run(redis_cli.script(new_redis, "r --pipe", stdin=payload + "\n", secrets=(jobs,)))
            errors, replies = pipe_replies(out.stdout)
            if not s.planning and (errors, replies) != (0, len(plan.commands)):
                raise StepFailed(
                    f"new's Redis answered {replies} of {len(plan.commands)} job moves ({errors} errors); "
                    "old's jobs are still set aside on old, and those new received are recorded there. Run "
                    "drain again: it sends only the rest."
                )
        if not s.planning:
            s.say(
                "moved: "
                + (
                    ", ".join(f"{k} +{v} (earlier: {plan.already[k]})" for k, v in plan.added.items())
                    or "nothing was left on old"
                )
            )
        s.old.run(redis_cli.script(old_redis, KEEP_MOVED))  # done: kept under their final name, for undo


def _require_found(renamed: str, aside: list) -> None:
    """Every job just set aside must be read back before anything is merged or renamed again: a key that
    went anywhere else would be left behind unseen."""
    words = renamed.split()
    count = int(words[-2]) if len(words) >= 2 and words[-2].isdigit() else 0
    found = sum(len(part.jobs) for part in aside) if known(aside) else count
    if found < count:
        raise StepFailed(
            f"{count} jobs were set aside on old but only {found} are found there under "
            f"{ASIDE}: nothing was sent to new; old's keys are in old's Redis (SCAN for them)"
        )


def drain_old(s: Session, timeout: float = 300, keep_streaming: bool = False) -> None:
    stop_old_mastodon(s, timeout, keep_streaming)
    move_jobs(s)
