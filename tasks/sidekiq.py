"""Sidekiq: drain old's workers without losing a job, and carry its durable state to new's Redis."""
from __future__ import annotations

import time

from . import redis_cli, system
from .mastodon import env_values, read_env
from .command import Remote, Secret, Session, StepFailed, known
from .sidekiq_jobs import BEAT_SECONDS, DURABLE_SETS, SidekiqState, jid, merge, parse_list, parse_state, parse_zset

MOVED = f"mastodon-migration:moved:{time.strftime('%Y%m%dT%H%M%S')}"  # where old's moved keys are set aside

# Prints `queue NAME LENGTH` per queue and `process IDENTITY BUSY QUIET` per live process.
STATE_SCRIPT = """for q in $(r SMEMBERS queues); do echo "queue $q $(r LLEN "queue:$q")"; done
for p in $(r SMEMBERS processes); do
  if [ "$(r EXISTS "$p")" = 1 ]; then echo "process $p $(r HGET "$p" busy) $(r HGET "$p" quiet)"; fi
done"""


def state(remote: Remote, values) -> SidekiqState:
    return remote.fact(redis_cli.script(values, STATE_SCRIPT), lambda out: parse_state(out.stdout))


def _wait_idle(s: Session, values, timeout: float) -> None:
    """Queues empty and nothing running, seen twice at least one heartbeat apart (busy counts lag)."""
    deadline = time.monotonic() + timeout
    first_clean = None
    while True:
        now = state(s.old, values)
        if not known(now):
            return
        if now.idle:
            first_clean = first_clean or time.monotonic()
            if time.monotonic() - first_clean >= BEAT_SECONDS:
                return
        else:
            first_clean = None
        print(f"  old: draining Sidekiq: {now.summary()}", flush=True)
        if time.monotonic() > deadline:
            raise StepFailed(f"Sidekiq on old did not drain within {timeout:.0f} s ({now.summary()}). Old's web and "
                             "streaming are stopped (old's nginx proxies to new); Sidekiq still works on. Nothing else "
                             "was changed: run drain again, with a longer --timeout if needed.")
        time.sleep(2)


def stop_old_mastodon(s: Session, timeout: float) -> None:
    cfg = s.settings
    s.step("drain old's Sidekiq", "old's web and streaming stop (the proxy sends everything to new); Sidekiq "
           "finishes every queued job, is quieted, then stops", undo="systemctl enable --now the units on old")
    values = env_values(read_env(s, s.old))
    active = {unit: s.old.fact(system.unit_state(unit), lambda out: out.stdout.strip())
              for unit in cfg.mastodon_services}
    for unit in (cfg.mastodon_web_service, cfg.mastodon_streaming_service):
        if active[unit] != "inactive":
            s.old.run(system.systemctl("stop", unit))
    if active[cfg.mastodon_sidekiq_service] != "inactive":
        _wait_idle(s, values, timeout)
        s.old.run(system.systemctl("kill", "-s", "TSTP", cfg.mastodon_sidekiq_service))
        s.old.wait_for(redis_cli.script(values, STATE_SCRIPT), lambda out: parse_state(out.stdout),
                       lambda st: st.running == 0 and all(st.quiet.values()), what="Sidekiq on old is quiet and idle",
                       timeout=timeout, show=SidekiqState.summary)
        s.old.run(system.systemctl("stop", cfg.mastodon_sidekiq_service))
    for unit in cfg.mastodon_services:  # a reboot of old must not start them against a fenced database
        if s.old.fact(system.unit_enabled(unit), lambda out: out.stdout.strip()) != "disabled":
            s.old.run(system.systemctl("disable", unit))


def _jobs(remote: Remote, values) -> tuple[dict, dict]:
    """A host's durable sets and queued jobs."""
    sets = {key: remote.fact(redis_cli.cli(values, f"ZRANGE {key} 0 -1 WITHSCORES"),
                             lambda out: parse_zset(out.stdout), planned=[]) for key in DURABLE_SETS}
    names = remote.fact(redis_cli.cli(values, "SMEMBERS queues"), lambda out: out.stdout.split(),
                        planned=["<each queue>"])
    queues = {name: remote.fact(redis_cli.cli(values, f"LRANGE queue:{name} 0 -1"),
                                lambda out: parse_list(out.stdout), planned=[]) for name in names}
    return sets, queues


def _jids(sets: dict, queues: dict) -> dict[str, set[str]]:
    found = {key: {jid(member) for member, _ in entries} for key, entries in sets.items()}
    found.update({f"queue:{name}": {jid(job) for job in jobs} for name, jobs in queues.items()})
    return found


def move_jobs(s: Session) -> None:
    s.step("move Sidekiq's jobs to new", undo="old's keys stay in old's Redis as mastodon-migration:moved:<time>:<key>"
           " (RENAME them back)", why="scheduled, retrying and dead jobs (and any left in a queue) are "
           "merged into new's Redis: none lost, none twice")
    old_values = env_values(read_env(s, s.old))
    new_values = env_values(read_env(s, s.new))
    old_sets, old_queues = _jobs(s.old, old_values)
    new_sets, new_queues = _jobs(s.new, new_values)
    plan = merge(old_sets, old_queues, _jids(new_sets, new_queues))
    if s.planning or plan.commands:
        payload = plan.pipe.rstrip("\n") or "<old's jobs>"  # the here-document's own newline stays visible
        jobs = Secret(payload, f"{sum(plan.added.values())} jobs from old's Redis "
                               "(Redis protocol; job arguments may be private)")
        s.new.run(redis_cli.script(new_values, "r --pipe", stdin=payload + "\n", secrets=(jobs,)))
    if not s.planning:
        after = _jids(*_jobs(s.new, new_values))
        missing = {key: ids - after.get(key, set()) for key, ids in _jids(old_sets, old_queues).items()}
        missing = {key: ids for key, ids in missing.items() if ids}
        if missing:
            raise StepFailed(f"after the merge new's Redis still lacks {sum(map(len, missing.values()))} of old's "
                             f"jobs ({', '.join(missing)}); old's Redis still holds them all. Run drain again.")
        print("  moved: " + ", ".join(f"{k} +{v} (already there: {plan.already[k]})" for k, v in plan.added.items()),
              flush=True)
    keys = ([key for key, entries in old_sets.items() if entries]
            + [f"queue:{name}" for name, jobs in old_queues.items() if jobs]) or (["<the keys moved>"] * s.planning)
    if keys:  # set aside on old (not deleted): a later run must not hand new jobs it has already done
        s.old.run(redis_cli.script(old_values, f"for k in {' '.join(keys)}; do\n"
                                   f'  if [ "$(r EXISTS "$k")" = 1 ]; then r RENAME "$k" "{MOVED}:$k"; fi\ndone'))


def drain_old(s: Session, timeout: float = 300) -> None:
    stop_old_mastodon(s, timeout)
    move_jobs(s)
