"""The migration's phases, each composed from subsystem steps: `fab -H old,new phaseN-...`; and PHASES,
the table that the runbook and status read."""

from __future__ import annotations

import inspect
import re
import time
from dataclasses import dataclass
from typing import Callable

from invoke.exceptions import Exit

from . import (
    access,
    mastodon,
    nginx,
    pgbouncer,
    postgres,
    preflight,
    redis_server,
    sidekiq,
    streaming_relay,
    system,
    transfer,
    tunnel,
)
from .command import Session, StepFailed, known
from .dns import steps as dns
from .executor import two_host_task
from .facts import UnitState, UnitStates, stopped
from .settings import Settings


def replicate(s: Session, max_rate: str = "") -> None:
    """Phase 1 as steps; each checks the real state first, so a re-run continues where it stopped."""
    postgres.put_back_cut_short_copy(s)  # before preflight, which needs new's cluster running
    preflight.run_preflight(s)
    postgres.ensure_replication_role(s)
    postgres.ensure_replication_hba(s)
    postgres.ensure_slot_wal_cap(s)
    tunnel.ensure_tunnel(s)
    postgres.run_basebackup(s, max_rate=max_rate)
    access.ensure_access(s)
    report = postgres.show_replication_status(s)
    if report is not None and not report.healthy:
        raise StepFailed("phase 1 ended but replication is not healthy (see above); run it again")


@two_host_task(
    help={"max_rate": "throttle the base backup, e.g. 50M, so the tunnel leaves room for the live site"}
)
def phase1_replicate(s: Session, max_rate=""):
    """Phase 1: preflight, replication role, tunnel, base backup; new becomes a streaming replica."""
    replicate(s, max_rate=max_rate)


def require_replication(s: Session, why: str) -> None:
    report = postgres.replication_report(s)
    if report is not None and not report.healthy:
        raise StepFailed(
            f"{why}: replication from old to new is not healthy; run "
            "fab -H old,new replication-status, or phase1-replicate first. Nothing was changed."
        )


def proxy(s: Session, force: bool = False, smoke_post: bool = False) -> None:
    """Phase 2 as steps: new is prepared and proven before old's nginx sends it any traffic."""
    require_replication(s, "phase 2 needs new's replica")
    access.require_login(s)
    if s.settings.database_endpoint == "pgbouncer":  # before the settings that point Mastodon at it
        pgbouncer.ensure_on_new(s)
    env_changed = transfer.copy_configuration(s, force=force)
    redis_server.give_new_old_password(s)
    transfer.sync_media(s, "first pass, while old still takes uploads")
    mastodon.precompile_assets(s, s.new)
    mastodon.start_services(s, s.new, restart=env_changed)
    mastodon.build_feeds(s, s.new, mastodon.read_env(s, s.new))
    mastodon.smoke_test(s, post=smoke_post)
    if mastodon.feeds_present(s, s.new, mastodon.read_env(s, s.new)) is False:
        raise StepFailed("new's Redis holds no home feeds; the proxy was not switched")
    relayed = streaming_relay.start_relay(s)
    require_replication(s, "the proxy was not switched")
    nginx.enable_proxy(s)
    nginx.probe_through_old(s)
    if not relayed:
        mastodon.move_streaming_clients(s)
    transfer.sync_media(s, "final pass: uploads now land on new, so old's media is complete")


@two_host_task(
    help={
        "force": "replace files on new that this tool did not write (they are kept as backups)",
        "smoke_post": "also post a test status through new (SMOKE_TEST_TOKEN_FILE's account)",
    }
)
def phase2_proxy(s: Session, force=False, smoke_post=False):
    """Phase 2: prepare new (config, media, assets, feeds), smoke-test it, then proxy old to new."""
    proxy(s, force=force, smoke_post=smoke_post)


def require_old_mastodon_stopped(s: Session) -> None:
    """Old's web and Sidekiq, its writers; its streaming server only reads (and may serve on, relayed)."""
    cfg = s.settings
    writers = (cfg.mastodon_web_service, cfg.mastodon_sidekiq_service)
    states = s.old.fact(UnitStates(writers), then="each must be `inactive` or `failed`")
    running = [u for u, state in states.items() if not stopped(state)] if known(states) else []
    if running:
        raise StepFailed(
            f"old's {', '.join(running)} still run{'s' if len(running) == 1 else ''}: run drain first. "
            "Nothing was changed."
        )


def failover(s: Session, catchup_timeout: float = 30, drain_timeout: float = 300) -> None:
    """Phase 3 as steps. Each reads the real state first, and the failover record on new says what an
    earlier run did: a run stopped anywhere (a failure, Ctrl-C, a killed laptop) is continued by the next."""
    nginx.require_proxy(s)
    stage = postgres.failover_stage(s)
    if stage == "replica":  # nothing fenced yet: the replica must be fit to take over
        require_replication(s, "phase 3 needs new's replica streaming with a small lag")
    elif stage == "promoted":  # before anything changes: a promotion this tool cannot vouch for stops here
        postgres.accept_promotion(s)
    sidekiq.drain_old(s, drain_timeout, keep_streaming=streaming_relay.relaying(s))
    transfer.sync_media(s, "last pass, after old's Sidekiq stopped: the files it wrote until then")
    pooled = s.settings.database_endpoint == "pgbouncer"
    promoted = promote_with_endpoint(s, catchup_timeout)  # its record, when this run promoted new
    changed = False if pooled else mastodon.use_local_database(s)
    record = promoted or postgres.failover_record(s)
    if promoted or changed or record.get("stage") != "done":
        if not pooled:  # web first: it takes the writes; the rest follows once writes flow again
            mastodon.restart_services(s, s.new, services="web")
        with s.step(
            "verify",
            "the first write that new's Mastodon accepts on its own database",
            undo="not needed: the probe is a private post (or a transaction) on new",
        ):
            mastodon.probe_write(s)
            if promoted and record.get("fenced_at") and not s.planning:
                fenced_at, accepted_at = float(record["fenced_at"]), time.time()
                s.say(
                    f"==> write-unavailability window: {accepted_at - fenced_at:.1f} s, from the fence of "
                    f"old (epoch {fenced_at:.3f}) to the first write new accepted (epoch {accepted_at:.3f})"
                )
    changes = (mastodon.env_path(s),) if pooled else (mastodon.env_path(s), postgres.PROMOTION_RECORD)
    mastodon.restart_stale(s, s.new, "sidekiq,streaming", since=changes)
    if record.get("stage") != "done":
        # old's Sidekiq fanned statuses out into old's Redis until the drain: the feeds built in phase 2
        # lack those. A build from new's own database now adds them (it adds to the feeds, never empties).
        mastodon.build_feeds(s, s.new, mastodon.read_env(s, s.new), force=True)
    postgres.keep_old_down(s, record)


def promote_with_endpoint(s: Session, catchup_timeout: float) -> dict | None:
    """The promotion, as the database endpoint needs it: with PgBouncer, its queries held across it."""
    if s.settings.database_endpoint == "pgbouncer":  # no Mastodon process restarts
        return pgbouncer.promote_paused(s, catchup_timeout)
    return postgres.promote_new(s, catchup_timeout)


@two_host_task(help={"timeout": "seconds to wait for the queues to empty"})
def drain(s: Session, timeout=300):
    """Stop old's Mastodon after draining Sidekiq; move schedule/retry/dead jobs to new's Redis."""
    nginx.require_proxy(s)
    sidekiq.drain_old(s, float(timeout), keep_streaming=streaming_relay.relaying(s))


@two_host_task(help={"catchup_timeout": "seconds new may take to reach old's last WAL position"})
def promote(s: Session, catchup_timeout=30):
    """Fence old's PostgreSQL, prove new has every WAL record, then promote new (with PgBouncer: paused
    across it, then pointed at new)."""
    nginx.require_proxy(s)
    require_old_mastodon_stopped(s)
    promote_with_endpoint(s, float(catchup_timeout))


@two_host_task(
    help={
        "catchup_timeout": "seconds new may take to reach old's last WAL position",
        "drain_timeout": "seconds to wait for old's Sidekiq queues to empty",
    }
)
def phase3_failover(s: Session, catchup_timeout=30, drain_timeout=300):
    """Phase 3: drain old's Sidekiq, fence old, promote new with zero writes lost; PgBouncer holds queries."""
    failover(s, float(catchup_timeout), float(drain_timeout))


def move_dns(s: Session, force: bool = False) -> None:
    """Phase 4 as steps: DNS moves only once new is the primary, and old keeps proxying meanwhile."""
    if postgres.promoted_record(s) is None and not s.planning:
        raise StepFailed("new is not promoted yet: run phase3-failover first. Nothing was changed.")
    dns.show_plan(s)
    dns.cutover(s, force=force)
    dns.verify_records(s)
    dns.show_retire_time(s)


@two_host_task(help={"force": "switch before the original TTL has run out since dns --lower-ttl"})
def phase4_dns(s: Session, force=False):
    """Phase 4: move DNS to new, verify at the authoritative servers, say when old may retire."""
    move_dns(s, force=force)


def clean_up(s: Session, stop_old_nginx: bool = False) -> None:
    """What the migration left on both hosts, removed; each step checks first, so a re-run is a no-op."""
    if postgres.promoted_record(s) is None and not s.planning:
        raise StepFailed(
            "new is not promoted: cleanup would cut old off while it is still the primary. "
            "Nothing was changed."
        )
    tunnel.remove_tunnel(s)
    transfer.remove_media_access(s)
    access.remove_access(s)
    if s.settings.database_endpoint == "pgbouncer":
        pgbouncer.forget_tunnel_password(s)
    postgres.remove_replication_leftovers(s)
    if not stop_old_nginx:
        streaming_relay.keep(s)
    else:
        streaming_relay.retire(s)
        with s.step(
            "stop old's nginx",
            "DNS has moved and every resolver has let go of old's address",
            undo="ssh old -- sudo systemctl enable --now nginx",
        ):
            state = s.old.fact(UnitState("nginx"), then="`inactive` or `failed`: skip the next block")
            if not stopped(state):
                s.old.run(system.systemctl("disable", "--now", "nginx"))


@two_host_task(
    help={
        "apply": "act; without it only the plan is shown",
        "stop_old_nginx": "also stop old's nginx (the proxy); by default it stays",
    }
)
def cleanup(s: Session, apply=False, stop_old_nginx=False):
    """After DNS has settled: remove the tunnel, keys, pg_hba blocks, role and slot (plan, or --apply)."""
    if not apply and not s.planning:
        s.show("cleanup plan (nothing is changed without --apply):")
        s = s.planned()
    clean_up(s, stop_old_nginx=stop_old_nginx)


# --- the table of phases, for the runbook and status -------------------------------------------------


@dataclass(frozen=True)
class Phase:
    number: int
    name: str
    task: Callable  # the fab task that runs it
    steps: Callable[[Session], None]  # the function that runs its steps
    preconditions: str
    flags: str = ""  # what the task needs to act

    @property
    def task_name(self) -> str:
        return self.task.name.replace("_", "-") if hasattr(self.task, "name") else self.task.__name__

    def command(self, cfg: Settings) -> str:
        return f"fab -H {cfg.old_ssh},{cfg.new_ssh} {self.task_name}" + (
            f" {self.flags}" if self.flags else ""
        )

    def purpose(self) -> str:
        """What `fab --help TASK` says: the task's docstring."""
        return re.sub(r"^Phase \d+: ", "", inspect.getdoc(self.task.body) or "")


PHASES = (
    Phase(
        1,
        "replicate",
        phase1_replicate,
        replicate,
        "ssh and passwordless sudo on both hosts; the same PostgreSQL major version on both; new's data "
        "directory empty (a fresh install) and room for old's databases; the tunnel port free on new.",
    ),
    Phase(
        2,
        "proxy",
        phase2_proxy,
        proxy,
        "phase 1 done: new streams from old with a lag under MAX_LAG_BYTES (checked first).",
    ),
    Phase(
        3,
        "failover",
        phase3_failover,
        failover,
        "phase 2 done: old's nginx proxies everything to new (checked first, else stopping old's Mastodon "
        "would be downtime); new's replica streams with a small lag.",
    ),
    Phase(
        4,
        "dns",
        phase4_dns,
        move_dns,
        "phase 3 done: new is the primary. `dns --lower-ttl` ran at least the original TTL ago (the "
        "cutover refuses otherwise, unless --force).",
    ),
    Phase(
        5,
        "cleanup",
        cleanup,
        clean_up,
        "phase 4 done, and the time it printed has passed: no resolver still holds old's address.",
        "--apply",
    ),
)


def phase_by_number(number: int) -> Phase:
    for phase in PHASES:
        if phase.number == number:
            return phase
    raise Exit(f"--phase takes 1 to {len(PHASES)}; got {number}", code=2)
