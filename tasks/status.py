"""status: where this migration stands, read from the hosts (not from a record of past runs).

Round trips are few, for speed: the facts of each host are asked in one batch (old's needs its
.env.production and nginx site first: the Redis password and the site's path), the replication report
while new is still a replica, and the DNS questions in parallel. Each subsystem says what "done" means
through its own fact (tunnel.INSTALLED, nginx.ProxiesToNew, postgres.PROMOTED, ...); judging the phases
from what was read is pure.
"""

from __future__ import annotations

import json as json_module
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Callable

from . import mastodon, nginx, pgbouncer, postgres, redis_cli, sidekiq, streaming_relay, tunnel
from .command import HostUnreachable, Session, StepFailed, known
from .dns import answers as dns_answers
from .dns import steps as dns
from .dns.answers import Answer
from .dns.records import Target, same, targets
from .executor import two_host_task
from .facts import Batch, UnitStates, Unparseable, human_bytes, stopped
from .phases import PHASES
from .postgres import ReplicationReport
from .settings import Settings
from .sidekiq_jobs import DURABLE_SETS

DONE, IN_PROGRESS, NOT_STARTED, UNKNOWN = "done", "in progress", "not started", "unknown"


# --- one batch of facts per host ------------------------------------------------------------------


@dataclass
class NewFacts:
    tunnel: str = "unknown"  # the tunnel unit's state
    tunnel_installed: bool = False
    relay: str = "unknown"  # the streaming relay's unit state
    units: dict[str, str] = field(default_factory=dict)
    env_copied: bool = False  # .env.production written by copy-config
    promoted: dict | None = None  # what the promotion recorded
    failover: dict | None = None  # phase 3's record: the stage it reached
    pool: pgbouncer.Pool | None = None  # with DATABASE_ENDPOINT=pgbouncer: PgBouncer's entry on new
    unreachable: str = ""


def new_facts(s: Session) -> Batch:
    cfg = s.settings
    pooled = (("pgbouncer", pgbouncer.PoolState(cfg.pgbouncer_port, "")),) if _pooled(cfg) else ()
    return Batch(
        (
            ("tunnel", tunnel.RUNNING),
            ("tunnel_file", tunnel.INSTALLED),
            ("relay", streaming_relay.RUNNING),
            ("units", UnitStates(cfg.mastodon_services)),
            ("env", mastodon.EnvCopied(mastodon.env_path(s))),
            ("promoted", postgres.PROMOTED),
            ("failover", postgres.FAILOVER),
        )
        + pooled
    )


def _pooled(cfg: Settings) -> bool:
    return cfg.database_endpoint == "pgbouncer"


def as_new_facts(found: dict) -> NewFacts:
    return NewFacts(
        tunnel=found["tunnel"] or "unknown",
        tunnel_installed=bool(found["tunnel_file"]),
        relay=found.get("relay") or "unknown",
        units=found["units"] or {},
        env_copied=bool(found["env"]),
        promoted=found["promoted"],
        failover=found.get("failover"),
        pool=found.get("pgbouncer"),
    )


@dataclass
class OldFacts:
    site: str = ""  # the nginx site that serves the domain
    proxies: bool | None = None  # None: not known (no single site found)
    units: dict[str, str] = field(default_factory=dict)
    # old's streaming server serves the WebSockets it holds until old retires (fed by the streaming relay;
    # without a relay, phase 2 stopped it): it says nothing of phase 3
    streaming_unit: str = ""
    durable_left: list[str] = field(default_factory=list)  # Sidekiq's sets still on old
    moved: int = 0  # keys old's Sidekiq state was set aside to
    site_problem: str = ""
    unreachable: str = ""


def old_facts(s: Session, site: str, env_text) -> Batch:
    """The site's first line, Mastodon's units, and Sidekiq's keys in the Redis old's Mastodon uses."""
    jobs = redis_cli.sidekiq(mastodon.env_values(env_text))
    parts = (("site", nginx.ProxiesToNew(site)),) if site else ()
    return Batch(
        parts
        + (
            ("units", UnitStates(s.settings.mastodon_services)),
            ("durable", sidekiq.DurableLeft(jobs)),
            ("moved", sidekiq.MovedKeys(jobs)),
        )
    )


def as_old_facts(cfg: Settings, site: str, found: dict) -> OldFacts:
    return OldFacts(
        site=site,
        proxies=found.get("site"),
        units=found["units"] or {},
        streaming_unit=cfg.mastodon_streaming_service,
        durable_left=found["durable"] or [],
        moved=found["moved"] or 0,
    )


def read_new(s: Session) -> NewFacts:
    try:
        found = s.new.fact(new_facts(s))
    except HostUnreachable as error:
        return NewFacts(unreachable=str(error))
    return as_new_facts(found) if known(found) else NewFacts()


def read_old(s: Session) -> OldFacts:
    cfg = s.settings
    try:
        env_text = mastodon.read_env(s, s.old)
        try:
            site, why = nginx.find_site(s.old, cfg.domain), ""
        except StepFailed as error:
            site, why = "", str(error)
        found = s.old.fact(old_facts(s, site, env_text))
    except HostUnreachable as error:
        return OldFacts(unreachable=str(error))
    if not known(found):
        return OldFacts()
    facts = as_old_facts(cfg, site, found)
    facts.site_problem = why
    return facts


def read_replication(s: Session) -> tuple[ReplicationReport | None, str]:
    """postgres.replication_report, or why it could not be read (e.g. old's cluster is down)."""
    try:
        return postgres.replication_report(s), ""
    except (Unparseable, HostUnreachable) as error:
        return None, str(error)


# --- DNS: what each authoritative server answers ---------------------------------------------------


@dataclass(frozen=True)
class DnsAnswer:
    source: str  # an authoritative server, or the provider's API
    name: str
    rtype: str
    answer: str  # the content answered, or why there is none
    holds: str  # "new", "old", "other", "no record" or "no answer"


def judge_answer(source: str, target: Target, answer: Answer) -> DnsAnswer:
    if answer.problem:
        return DnsAnswer(source, target.name, target.rtype, answer.problem, "no answer")
    if answer.record is None:
        return DnsAnswer(source, target.name, target.rtype, "no such record", "no record")
    content = answer.record.content
    holds = "new" if same(content, target.new) else "old" if same(content, target.old) else "other"
    return DnsAnswer(source, target.name, target.rtype, content, holds)


def _api_reader(provider) -> Callable[[str, str], Answer]:
    def read(name: str, rtype: str) -> Answer:
        try:
            return Answer(provider.read(name, rtype))
        except StepFailed as error:
            return Answer(problem=str(error))

    return read


def dns_sources(s: Session) -> dict[str, Callable[[str, str], Answer]]:
    """Who is asked: each authoritative server; for Cloudflare without DNS_VERIFY_SERVERS its API (a
    proxied record's servers answer Cloudflare's own addresses, so the API tells where it points)."""
    cfg, provider = s.settings, dns.provider_for(s)
    if cfg.dns_provider == "cloudflare" and not cfg.dns_verify_servers:
        return {f"{provider.label} API": _api_reader(provider)}
    return {
        server: (lambda name, rtype, server=server: dns_answers.ask(server, name, rtype))
        for server in provider.authoritative_servers()
    }


def _planned_question(source: str, target: Target) -> str:
    if source.endswith(" API"):
        return f"check: read {target.name} {target.rtype} through the {source}"
    address, port = dns_answers.address_and_port(source)
    return (
        f"check: dig +norecurse @{address} -p {port} {target.name} {target.rtype}  # flag aa: authoritative"
    )


def read_dns(s: Session) -> tuple[list[DnsAnswer], str]:
    """Every configured record from every source, asked in parallel; or why nothing could be asked."""
    try:
        sources = dns_sources(s)
    except StepFailed as error:
        s.note(f"DNS is not checked: {error}")
        return [], str(error)
    questions = [(source, ask, target) for source, ask in sources.items() for target in targets(s.settings)]
    if s.planning:
        for source, _, target in questions:
            s.note(_planned_question(source, target))
        return [], ""
    with ThreadPoolExecutor(max_workers=len(questions) or 1) as pool:
        answers = list(pool.map(lambda q: q[1](q[2].name, q[2].rtype), questions))
    return [
        judge_answer(source, target, answer)
        for (source, _, target), answer in zip(questions, answers, strict=True)
    ], ""


# --- judging the phases (pure) ---------------------------------------------------------------------


@dataclass
class Evidence:
    new: NewFacts
    old: OldFacts
    replication: ReplicationReport | None = None
    replication_problem: str = ""
    dns: list[DnsAnswer] = field(default_factory=list)
    dns_problem: str = ""


@dataclass
class PhaseStatus:
    number: int
    name: str
    state: str
    evidence: list[str]
    command: str


def replication_evidence(report: ReplicationReport | None, problem: str) -> str:
    if report is None:
        return f"replication not read: {problem}"
    new = report.standby
    if report.lag_bytes is None:
        return (
            f"no replica streams from old (new: {'in recovery' if new.in_recovery else 'a primary'}, "
            f"WAL receiver {new.receiver_status or 'not running'})"
            if new
            else "no replica streams from old; no cluster answers on new"
        )
    seconds = report.lag_seconds
    lag = f"lag {human_bytes(report.lag_bytes)}, " + (f"{seconds:.1f} s" if seconds is not None else "? s")
    return f"new streams from old, {lag}" + (
        "" if report.healthy else f": NOT healthy (needs under {human_bytes(report.max_lag_bytes)})"
    )


def _units(units: dict[str, str]) -> str:
    return ", ".join(f"{unit} {state}" for unit, state in units.items()) or "not read"


def _phase1(ev: Evidence) -> tuple[str, list[str]]:
    new, report = ev.new, ev.replication
    evidence = [
        f"tunnel {tunnel.UNIT} on new: {new.tunnel}" + ("" if new.tunnel_installed else " (not installed)")
    ]
    if new.promoted:
        return DONE, evidence + ["new was promoted since: replication has ended, as planned"]
    if (new.failover or {}).get("stage"):
        return DONE, evidence + ["phase 3 has fenced old since: replication ends there, as planned"]
    evidence.append(replication_evidence(report, ev.replication_problem))
    if new.tunnel == "active" and report and report.healthy:
        return DONE, evidence
    started = new.tunnel_installed or bool(
        report and ((report.standby and report.standby.in_recovery) or report.slot)
    )
    return (IN_PROGRESS if started else NOT_STARTED), evidence


def _phase2(cfg: Settings, ev: Evidence) -> tuple[str, list[str]]:
    old, new = ev.old, ev.new
    proxy = {
        True: f"old's nginx ({old.site}) proxies to new",
        False: f"old's nginx ({old.site}) serves {cfg.domain} itself",
        None: f"old's nginx: {old.site_problem or 'not read'}",
    }[old.proxies]
    evidence = [
        proxy,
        f"new's Mastodon: {_units(new.units)}",
        "new's .env.production: " + ("copied from old" if new.env_copied else "not copied yet"),
        f"streaming relay on new (feeds old's streaming server): {new.relay}",
    ]
    if _pooled(cfg):
        evidence.append(
            f"new's PgBouncer: its database on {new.pool.host}:{new.pool.port}"
            + (", PAUSED" if new.pool.paused else "")
            if new.pool
            else "new's PgBouncer: not answering"
        )
    if old.proxies:
        return DONE, evidence
    started = new.env_copied or any(state == "active" for state in new.units.values())
    return (IN_PROGRESS if started else NOT_STARTED), evidence


def _phase3(ev: Evidence) -> tuple[str, list[str]]:
    old, promoted = ev.old, ev.new.promoted
    sidekiq_state = (
        f"old's Sidekiq: {', '.join(old.durable_left)} still on old"
        if old.durable_left
        else f"old's Sidekiq: no {'/'.join(DURABLE_SETS)} left on old, {old.moved} key(s) set aside "
        f"as {sidekiq.MOVED_PATTERN}"
    )
    evidence = [
        f"old's Mastodon: {_units(old.units)}",
        sidekiq_state,
        f"new promoted at {promoted.get('promoted_at')}, timeline {promoted.get('timeline')}, WAL "
        f"{promoted.get('lsn')}"
        if promoted
        else "new not promoted",
    ]
    stage = (ev.new.failover or {}).get("stage")
    paused = bool(ev.new.pool and ev.new.pool.paused)
    if paused:
        evidence.append("PgBouncer on new is paused: Mastodon's queries wait; run phase3-failover again now")
    if stage and stage != "done":
        evidence.append(
            f"a phase 3 run stopped at stage `{stage}`"
            + (": old is fenced and takes no writes, run phase3-failover again now" if not promoted else "")
        )
    writers = {unit: state for unit, state in old.units.items() if unit != old.streaming_unit}
    old_down = bool(writers) and all(stopped(state) for state in writers.values())
    if promoted and old_down and not old.durable_left and stage in (None, "done") and not paused:
        return DONE, evidence
    started = bool(
        promoted
        or stage
        or paused
        or old.moved
        or (old.proxies and any(stopped(state) for state in writers.values()))
    )
    return (IN_PROGRESS if started else NOT_STARTED), evidence


def _phase4(ev: Evidence) -> tuple[str, list[str]]:
    if not ev.dns:
        return UNKNOWN, [f"DNS not asked: {ev.dns_problem or 'no record configured'}"]
    evidence = [
        f"{a.source}: {a.name} {a.rtype} {a.answer}"
        + (f" ({a.holds}'s address)" if a.holds in ("old", "new") else f" ({a.holds})")
        for a in ev.dns
    ]
    holds = {a.holds for a in ev.dns}
    if holds == {"new"}:
        return DONE, evidence
    if "new" in holds:
        return IN_PROGRESS, evidence
    return (NOT_STARTED if holds == {"old"} else UNKNOWN), evidence


def _cleanup(ev: Evidence) -> tuple[str, list[str]]:
    evidence = [f"tunnel unit on new: {'installed' if ev.new.tunnel_installed else 'not installed'}"]
    if ev.new.relay == "active":
        evidence.append(
            f"streaming relay on new: active, with old's streaming server, until `{streaming_relay.CLEANUP}`"
        )
    return (DONE if ev.new.promoted and not ev.new.tunnel_installed else NOT_STARTED), evidence


def judge(cfg: Settings, ev: Evidence) -> list[PhaseStatus]:
    unreachable = [problem for problem in (ev.old.unreachable, ev.new.unreachable) if problem]
    judged = [_phase1(ev), _phase2(cfg, ev), _phase3(ev), _phase4(ev), _cleanup(ev)]
    return [
        PhaseStatus(
            phase.number,
            phase.name,
            UNKNOWN if unreachable else state,
            unreachable or evidence,
            phase.command(cfg),
        )
        for phase, (state, evidence) in zip(PHASES, judged, strict=True)
    ]


def next_command(cfg: Settings, phases: list[PhaseStatus]) -> str | None:
    """The first phase not done (a phase in progress continues where it stopped when run again)."""
    if any(p.state == UNKNOWN and p.number < 4 for p in phases):
        return f"fab -H {cfg.old_ssh},{cfg.new_ssh} preflight"
    return next((p.command for p in phases if p.state != DONE), None)


# --- output ---------------------------------------------------------------------------------------


def table(phases: list[PhaseStatus], command: str | None) -> str:
    rows = [("PHASE", "STATE", "EVIDENCE")]
    for p in phases:
        rows.append((f"{p.number} {p.name}", p.state, p.evidence[0] if p.evidence else ""))
        rows += [("", "", line) for line in p.evidence[1:]]
    widths = [max(len(row[i]) for row in rows) for i in range(2)]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)) + "  " + row[2]
        for row in rows
    ]
    return "\n".join(
        lines + ["", f"next: {command}" if command else "next: nothing: the migration is complete"]
    )


def as_json(phases: list[PhaseStatus], command: str | None, evidence: Evidence) -> str:
    return json_module.dumps(
        {
            "phases": [asdict(p) for p in phases],
            "next": command,
            "replication": evidence.replication.as_dict() if evidence.replication else None,
            "dns": [asdict(a) for a in evidence.dns],
        },
        indent=2,
    )


def gather(s: Session) -> Evidence:
    new, old = read_new(s), read_old(s)
    report, problem = (None, "new is the primary") if new.promoted else read_replication(s)
    return Evidence(new, old, report, problem, *read_dns(s))


@two_host_task(help={"json": "print JSON instead of a table"})
def status(s: Session, json=False):
    """Show each phase as done, in progress or not started, with evidence, and the next command."""
    evidence = gather(s)
    if s.planning:
        return
    phases = judge(s.settings, evidence)
    command = next_command(s.settings, phases)
    s.show(as_json(phases, command, evidence) if json else table(phases, command))
