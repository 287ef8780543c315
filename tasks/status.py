"""status: where this migration stands, read from the hosts (not from a record of past runs).

Round trips are few, for speed: one read-only script per host (old's needs its .env.production and
nginx site first: the Redis password and the site's path), the replication report while new is still
a replica, and the DNS questions in parallel. Judging the phases from what was read is pure.
"""
from __future__ import annotations

import json as json_module
import shlex
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Callable

from . import dns, dns_answers, mastodon, mastodon_env, nginx, postgres, redis_cli, sidekiq, tunnel
from .command import Cmd, HostUnreachable, Session, StepFailed, known, note
from .dns_answers import Answer
from .dns_records import Target, same, targets
from .executor import two_host_task
from .facts import Output, Unparseable, human_bytes
from .runbook import PHASES
from .settings import Settings
from .sidekiq_jobs import DURABLE_SETS

DONE, IN_PROGRESS, NOT_STARTED, UNKNOWN = "done", "in progress", "not started", "unknown"
SECTION = "@@ "
MOVED_PATTERN = sidekiq.MOVED.rsplit(":", 1)[0] + ":*"  # the keys every drain set aside, whatever its time


# --- one read-only script per host ---------------------------------------------------------------

def sections_script(parts: dict[str, str]) -> str:
    """Each part's output under a line `@@ NAME`. A missing unit or file is an answer, not an error: error
    messages are silenced and the script exits 0."""
    return "\n".join(["exec 2>/dev/null", *(f"echo '{SECTION}{name}'\n{shell}" for name, shell in parts.items()),
                      "true"])


def parse_sections(out: Output) -> dict[str, str]:
    found: dict[str, list[str]] = {}
    for line in out.stdout.splitlines():
        if line.startswith(SECTION):
            found[line[len(SECTION):]] = []
        elif found:
            found[next(reversed(found))].append(line)
    return {name: "\n".join(lines).strip() for name, lines in found.items()}


def unit_states(text: str, units: tuple[str, ...]) -> dict[str, str]:
    """`systemctl is-active A B C` prints one state per unit, in order."""
    states = text.split()
    return {unit: states[i] if i < len(states) else "unknown" for i, unit in enumerate(units)}


@dataclass
class NewFacts:
    tunnel: str = "unknown"  # the tunnel unit's state
    tunnel_installed: bool = False
    units: dict[str, str] = field(default_factory=dict)
    env_copied: bool = False  # .env.production written by copy-config
    promoted: dict | None = None  # what the promotion recorded
    unreachable: str = ""


def new_script(s: Session) -> Cmd:
    cfg = s.settings
    return Cmd(sections_script({
        "tunnel": f"systemctl is-active {tunnel.UNIT}",
        "tunnel_file": f"test -e {tunnel.UNIT_FILE} && echo installed",
        "units": "systemctl is-active " + " ".join(cfg.mastodon_services),
        "env": f"grep -cxF {shlex.quote(mastodon_env.HEADER)} {mastodon.env_path(s)}",
        "promoted": f"cat {postgres.PROMOTION_RECORD}"}))


def parse_new(cfg: Settings, out: Output) -> NewFacts:
    found = parse_sections(out)
    try:
        promoted = json_module.loads(found.get("promoted") or "null")
    except ValueError:
        promoted = None
    return NewFacts(tunnel=found.get("tunnel") or "unknown", tunnel_installed=found.get("tunnel_file") == "installed",
                    units=unit_states(found.get("units", ""), cfg.mastodon_services),
                    env_copied=found.get("env", "0") not in ("", "0"), promoted=promoted)


@dataclass
class OldFacts:
    site: str = ""  # the nginx site that serves the domain
    proxies: bool | None = None  # None: not known (no single site found)
    units: dict[str, str] = field(default_factory=dict)
    durable_left: list[str] = field(default_factory=list)  # Sidekiq's sets still on old
    moved: int = 0  # keys old's Sidekiq state was set aside to
    site_problem: str = ""
    unreachable: str = ""


def old_script(s: Session, site: str, env_text) -> Cmd:
    """The site's first line, Mastodon's units, and Sidekiq's keys in the Redis old's Mastodon uses."""
    cfg = s.settings
    parts = {"site": f"head -n 1 {shlex.quote(site)}"} if site else {}
    parts.update({"units": "systemctl is-active " + " ".join(cfg.mastodon_services),
                  "durable": "\n".join(f'[ "$(r EXISTS {key})" = 1 ] && echo {key}' for key in DURABLE_SETS),
                  "moved": f"r --scan --pattern '{MOVED_PATTERN}' | wc -l"})
    return redis_cli.script(mastodon.env_values(env_text), sections_script(parts))


def parse_old(cfg: Settings, site: str, out: Output) -> OldFacts:
    found = parse_sections(out)
    moved = found.get("moved", "")
    return OldFacts(site=site, proxies=found["site"].startswith(nginx.MARK_LINE) if "site" in found else None,
                    units=unit_states(found.get("units", ""), cfg.mastodon_services),
                    durable_left=found.get("durable", "").split(), moved=int(moved) if moved.isdigit() else 0)


def read_new(s: Session) -> NewFacts:
    try:
        facts = s.new.fact(new_script(s), lambda out: parse_new(s.settings, out))
    except HostUnreachable as error:
        return NewFacts(unreachable=str(error))
    return facts if known(facts) else NewFacts()


def read_old(s: Session) -> OldFacts:
    cfg = s.settings
    try:
        env_text = mastodon.read_env(s, s.old)
        try:
            site, why = nginx.find_site(s.old, cfg.domain), ""
        except StepFailed as error:
            site, why = "", str(error)
        facts = s.old.fact(old_script(s, site, env_text), lambda out: parse_old(cfg, site, out))
    except HostUnreachable as error:
        return OldFacts(unreachable=str(error))
    if not known(facts):
        return OldFacts()
    facts.site_problem = why
    return facts


def read_replication(s: Session) -> tuple[dict | None, str]:
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
    return {server: (lambda name, rtype, server=server: dns_answers.ask(server, name, rtype))
            for server in provider.authoritative_servers()}


def _planned_question(source: str, target: Target) -> str:
    if source.endswith(" API"):
        return f"check: read {target.name} {target.rtype} through the {source}"
    address, port = dns_answers.address_and_port(source)
    return f"check: dig +norecurse @{address} -p {port} {target.name} {target.rtype}  # flag aa: authoritative"


def read_dns(s: Session) -> tuple[list[DnsAnswer], str]:
    """Every configured record from every source, asked in parallel; or why nothing could be asked."""
    try:
        sources = dns_sources(s)
    except StepFailed as error:
        note(s.mode, f"DNS is not checked: {error}")
        return [], str(error)
    questions = [(source, ask, target) for source, ask in sources.items() for target in targets(s.settings)]
    if s.planning:
        for source, _, target in questions:
            note(s.mode, _planned_question(source, target))
        return [], ""
    with ThreadPoolExecutor(max_workers=len(questions) or 1) as pool:
        answers = list(pool.map(lambda q: q[1](q[2].name, q[2].rtype), questions))
    return [judge_answer(source, target, answer) for (source, _, target), answer in zip(questions, answers)], ""


# --- judging the phases (pure) ---------------------------------------------------------------------

@dataclass
class Evidence:
    new: NewFacts
    old: OldFacts
    replication: dict | None = None
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


def lag_seconds(report: dict) -> float | None:
    """How far behind new's replay is in time: nothing when it has replayed all old sent, else the age of
    its last replayed transaction (an upper bound)."""
    if report["lag_bytes"] == 0:
        return 0.0
    return (report["new"] or {}).get("replay_age_seconds")


def replication_evidence(report: dict | None, problem: str) -> str:
    if report is None:
        return f"replication not read: {problem}"
    new = report["new"] or {}
    if report["lag_bytes"] is None:
        return (f"no replica streams from old (new: {'in recovery' if new.get('in_recovery') else 'a primary'}, "
                f"WAL receiver {new.get('receiver_status') or 'not running'})" if new else
                "no replica streams from old; no cluster answers on new")
    seconds = lag_seconds(report)
    lag = f"lag {human_bytes(report['lag_bytes'])}, " + (f"{seconds:.1f} s" if seconds is not None else "? s")
    return f"new streams from old, {lag}" + ("" if report["healthy"] else
                                           f": NOT healthy (needs under {human_bytes(report['max_lag_bytes'])})")


def _units(units: dict[str, str]) -> str:
    return ", ".join(f"{unit} {state}" for unit, state in units.items()) or "not read"


def _stopped(state: str) -> bool:
    return state in ("inactive", "failed")


def _phase1(ev: Evidence) -> tuple[str, list[str]]:
    new, report = ev.new, ev.replication
    evidence = [f"tunnel {tunnel.UNIT} on new: {new.tunnel}" + ("" if new.tunnel_installed else " (not installed)")]
    if new.promoted:
        return DONE, evidence + ["new was promoted since: replication has ended, as planned"]
    evidence.append(replication_evidence(report, ev.replication_problem))
    if new.tunnel == "active" and report and report["healthy"]:
        return DONE, evidence
    started = new.tunnel_installed or bool(report and ((report["new"] or {}).get("in_recovery") or report["old"]["slot"]))
    return (IN_PROGRESS if started else NOT_STARTED), evidence


def _phase2(cfg: Settings, ev: Evidence) -> tuple[str, list[str]]:
    old, new = ev.old, ev.new
    proxy = {True: f"old's nginx ({old.site}) proxies to new", False: f"old's nginx ({old.site}) serves "
             f"{cfg.domain} itself", None: f"old's nginx: {old.site_problem or 'not read'}"}[old.proxies]
    evidence = [proxy, f"new's Mastodon: {_units(new.units)}",
                "new's .env.production: " + ("copied from old" if new.env_copied else "not copied yet")]
    if old.proxies:
        return DONE, evidence
    started = new.env_copied or any(state == "active" for state in new.units.values())
    return (IN_PROGRESS if started else NOT_STARTED), evidence


def _phase3(ev: Evidence) -> tuple[str, list[str]]:
    old, promoted = ev.old, ev.new.promoted
    sidekiq_state = (f"old's Sidekiq: {', '.join(old.durable_left)} still on old" if old.durable_left else
                     f"old's Sidekiq: no {'/'.join(DURABLE_SETS)} left on old, {old.moved} key(s) set aside "
                     f"as {MOVED_PATTERN}")
    evidence = [f"old's Mastodon: {_units(old.units)}", sidekiq_state,
                f"new promoted at {promoted.get('promoted_at')}, timeline {promoted.get('timeline')}, WAL "
                f"{promoted.get('lsn')}" if promoted else "new not promoted"]
    stopped = bool(old.units) and all(_stopped(state) for state in old.units.values())
    if promoted and stopped and not old.durable_left:
        return DONE, evidence
    started = bool(promoted or old.moved or (old.proxies and any(_stopped(state) for state in old.units.values())))
    return (IN_PROGRESS if started else NOT_STARTED), evidence


def _phase4(ev: Evidence) -> tuple[str, list[str]]:
    if not ev.dns:
        return UNKNOWN, [f"DNS not asked: {ev.dns_problem or 'no record configured'}"]
    evidence = [f"{a.source}: {a.name} {a.rtype} {a.answer}" + (f" ({a.holds}'s address)" if a.holds in
                                                                 ("old", "new") else f" ({a.holds})") for a in ev.dns]
    holds = {a.holds for a in ev.dns}
    if holds == {"new"}:
        return DONE, evidence
    if "new" in holds:
        return IN_PROGRESS, evidence
    return (NOT_STARTED if holds == {"old"} else UNKNOWN), evidence


def _cleanup(ev: Evidence) -> tuple[str, list[str]]:
    evidence = [f"tunnel unit on new: {'installed' if ev.new.tunnel_installed else 'not installed'}"]
    return (DONE if ev.new.promoted and not ev.new.tunnel_installed else NOT_STARTED), evidence


def judge(cfg: Settings, ev: Evidence) -> list[PhaseStatus]:
    unreachable = [problem for problem in (ev.old.unreachable, ev.new.unreachable) if problem]
    judged = [_phase1(ev), _phase2(cfg, ev), _phase3(ev), _phase4(ev), _cleanup(ev)]
    return [PhaseStatus(phase.number, phase.name, UNKNOWN if unreachable else state,
                        unreachable or evidence, phase.command(cfg))
            for phase, (state, evidence) in zip(PHASES, judged)]


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
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[2] for row in rows]
    return "\n".join(lines + ["", f"next: {command}" if command else "next: nothing: the migration is complete"])


def as_json(phases: list[PhaseStatus], command: str | None, evidence: Evidence) -> str:
    return json_module.dumps({"phases": [asdict(p) for p in phases], "next": command,
                              "replication": evidence.replication, "dns": [asdict(a) for a in evidence.dns]}, indent=2)


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
    print(as_json(phases, command, evidence) if json else table(phases, command), flush=True)
