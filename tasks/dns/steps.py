"""DNS: move the domain's records from old's address to new's (Cloudflare, RFC 2136 or manual).

Order: `dns --lower-ttl` well ahead; the cutover (`dns`) once the original TTL has run out since then;
`dns --verify`; later `dns --restore-ttl`. Until `retire_after()`, old keeps proxying to new, so a
client that still holds old's address is served. What must survive between runs (original TTLs, when
they were lowered, when records switched) is kept in a JSON file next to the run log (state).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Callable

from .. import mastodon
from ..command import Session, StepFailed
from ..executor import two_host_task
from . import answers
from .answers import Expected
from .cloudflare import CloudflareProvider
from .manual import WAIT_TIMEOUT, ManualProvider
from .records import REQUESTED, Provider, Record, Swap, Target, same, targets
from .rfc2136 import Rfc2136Provider
from .state import DnsState, RecordState, now

VERIFY_TIMEOUT = 300.0
RETIRE_MARGIN = timedelta(hours=1)  # resolvers that stretch TTLs, peers' pooled connections to old


def provider_for(s: Session) -> Provider:
    cfg = s.settings
    if cfg.dns_provider == "cloudflare":
        return CloudflareProvider(cfg)
    if cfg.dns_provider == "rfc2136":
        return Rfc2136Provider(cfg)
    return ManualProvider(cfg, say=s.say)


def _plan_swap(s: Session, provider: Provider, change: Swap) -> None:
    """--dry: the change and how it would be made; nothing is read or contacted."""
    s.note(
        f"{change.name} {change.rtype}: if it holds {change.expected.content}, make it {change.content} "
        f"with TTL {change.ttl}"
    )
    how = provider.describe(change)
    if "\n" in how:
        s.show(how)  # a script: shown as it is, to be copied
    else:
        s.note(how)


def _plan_swaps(s: Session, provider: Provider, swaps: list[Swap], timeout: float, *, with_ttl: bool) -> None:
    """--dry: each change; where a person makes them (manual), the wait for the authoritative servers."""
    for change in swaps:
        _plan_swap(s, provider, change)
    if isinstance(provider, ManualProvider) and swaps:
        await_answers(
            s,
            _planned_servers(s, provider),
            [Expected(c.name, c.rtype, c.content, c.ttl if with_ttl else None) for c in swaps],
            timeout,
        )


def _mismatch(target: Target, record: Record | None) -> str:
    """Why this record cannot be switched from old to new ("" when it holds either address)."""
    if record is None:
        return f"no {target.rtype} record exists (create it, or remove the name from DNS_NAMES)"
    if same(record.content, target.old) or same(record.content, target.new):
        return ""
    return f"holds {record.content}: neither old's {target.old} nor new's {target.new}"


def _read_all(provider: Provider, wanted: list[Target], refusal: str) -> list[tuple[Target, Record]]:
    """Every record, checked before any is changed: one that holds neither address stops everything."""
    current = [(t, provider.read(t.name, t.rtype)) for t in wanted]
    problems = [f"{t.key}: {why}" for t, record in current if (why := _mismatch(t, record))]
    if problems:
        raise StepFailed(
            f"{refusal}:\n"
            + "\n".join(f"  - {p}" for p in problems)
            + "\nFix these records at the provider (or the addresses in the settings), "
            "then run dns --plan."
        )
    return current


def _not_ready(s: Session, entry: RecordState | None, record: Record, moment: datetime) -> str:
    """Why switching this record now would leave resolvers caching old's address for longer than
    DNS_TTL ("" when it would not)."""
    if record.proxied:
        return ""  # clients resolve Cloudflare's addresses; the edge follows the change within seconds
    if entry and entry.lowered_at:
        ready = entry.lowered_at + timedelta(seconds=entry.original_ttl)
        return (
            ""
            if moment >= ready
            else (
                f"its original TTL ({entry.original_ttl} s) runs until {ready:%Y-%m-%d %H:%M:%S} UTC "
                f"({(ready - moment).total_seconds():.0f} s from now), counted from the lowering at "
                f"{entry.lowered_at:%H:%M:%S}"
            )
        )
    if record.ttl > s.settings.dns_ttl:
        return f"its TTL is {record.ttl} s and was not lowered: run dns --lower-ttl first"
    return ""


def _apply(
    s: Session,
    provider: Provider,
    changes: list[tuple[Target, Swap]],
    remember: Callable[[RecordState, Swap], None],
    *,
    with_ttl: bool,
    timeout: float,
) -> None:
    """Swap each record, saying and logging each outcome. `remember` notes a swap in the state file as
    soon as it is done; a swap the operator makes (manual) is done once the authoritative servers
    answer it."""
    state, requested = DnsState.load(s.settings), []
    for target, change in changes:
        outcome = provider.swap(change)
        s.say(f"{target.key}: {change.expected.show()} -> {change.content}, TTL {change.ttl}: {outcome}")
        s.mode.log.write(
            dns=target.key,
            provider=provider.label,
            before=change.expected.content,
            after=change.content,
            ttl=change.ttl,
            outcome=outcome,
        )
        if outcome == REQUESTED:
            requested.append((target, change))
        else:
            remember(state.entry(target.key), change)
            state.save()
    if requested:
        expected = [Expected(c.name, c.rtype, c.content, c.ttl if with_ttl else None) for _, c in requested]
        await_answers(s, provider.authoritative_servers(), expected, timeout)
        for target, change in requested:
            remember(state.entry(target.key), change)
        state.save()


def await_answers(s: Session, servers: tuple[str, ...], expected: list[Expected], timeout: float) -> None:
    """Until every authoritative server answers every expected value (asked from here, each directly)."""
    wanted = ", ".join(
        f"{e.name} {e.rtype} {e.content}" + (f" TTL {e.ttl}" if e.ttl else "") for e in expected
    )

    def probe() -> list[str]:
        if s.planning:
            for item in expected:
                for server in servers:
                    address, port = answers.address_and_port(server)
                    s.note(
                        f"check: dig +norecurse @{address} -p {port} {item.name} {item.rtype}  # flag aa, "
                        f"answer {item.content}" + (f", TTL {item.ttl}" if item.ttl else "")
                    )
            return []
        return answers.lagging(servers, expected)

    s.wait_until(
        probe,
        lambda behind: not behind,
        what=f"every authoritative server answers {wanted}",
        timeout=timeout,
        interval=answers.POLL_INTERVAL,
        show=lambda behind: f"{len(behind)} answer(s) behind: " + "; ".join(behind),
    )
    if not s.planning:
        s.say(f"every authoritative server ({', '.join(servers)}) answers {wanted}")


def _lowered(entry: RecordState, change: Swap) -> None:
    entry.original_ttl, entry.lowered_at = change.expected.ttl, now()


def _switched(entry: RecordState, change: Swap) -> None:
    entry.switched_at, entry.ttl_at_switch = now(), 0 if change.expected.proxied else change.expected.ttl


def _restored(entry: RecordState, change: Swap) -> None:
    entry.lowered_at = None  # a cutover after this needs a new lowering, and its wait


def show_plan(s: Session) -> None:
    """Current and target value of every configured record, and whether the cutover may run yet."""
    cfg, provider = s.settings, provider_for(s)
    with s.step(
        "DNS plan",
        f"{provider.label}, zone {cfg.dns_zone}: each record now and after the cutover",
        undo="not needed: the plan only reads",
    ):
        if s.planning:
            for t in targets(cfg):
                s.note(f"{t.key}: now {t.old} (expected; --dry reads nothing) -> target {t.new}")
            return
        state, moment = DnsState.load(cfg), now()
        for t in targets(cfg):
            record = provider.read(t.name, t.rtype)
            if record is None or _mismatch(t, record):
                verdict = f"CANNOT SWITCH: {_mismatch(t, record)}"
            elif same(record.content, t.new):
                verdict = "unchanged (already at the target)"
            else:
                why = _not_ready(s, state.records.get(t.key), record, moment)
                verdict = f"switch (not yet: {why})" if why else "switch (allowed now)"
            s.say(f"{t.key}: now {record.show() if record else 'missing'} -> target {t.new}: {verdict}")


def lower_ttls(s: Session, timeout: float = WAIT_TIMEOUT) -> None:
    """Set DNS_TTL on every DNS-only record; remember each original TTL and when it was lowered."""
    cfg, provider = s.settings, provider_for(s)
    state = DnsState.load(cfg)
    with s.step(
        "lower the DNS TTL",
        f"to {cfg.dns_ttl} s, so that after the cutover resolvers let go of old's address "
        f"within {cfg.dns_ttl} s; original TTLs are kept in {state.path}",
        undo=f"fab -H {cfg.old_ssh},{cfg.new_ssh} dns --restore-ttl",
    ):
        if s.planning:
            _plan_swaps(
                s,
                provider,
                [Swap(t.name, t.rtype, Record(t.old, 0), t.old, cfg.dns_ttl) for t in targets(cfg)],
                timeout,
                with_ttl=True,
            )
            return
        changes = []
        for t, record in _read_all(provider, targets(cfg), "TTLs not lowered, NOTHING was changed"):
            if record.proxied:
                s.say(f"{t.key}: proxied: clients see Cloudflare's addresses, there is no TTL to lower")
            elif record.ttl <= cfg.dns_ttl:
                s.say(f"{t.key}: TTL {record.ttl} s: unchanged")
                state.records.setdefault(t.key, RecordState(original_ttl=record.ttl))
            else:
                changes.append((t, Swap(t.name, t.rtype, record, record.content, cfg.dns_ttl)))
        state.save()
        _apply(s, provider, changes, _lowered, with_ttl=True, timeout=timeout)


def cutover(s: Session, force: bool = False, timeout: float = WAIT_TIMEOUT) -> None:
    """Switch every record from old's address to new's by compare-and-swap, once the original TTL
    has run out since the lowering (or at once with `force`)."""
    cfg, provider = s.settings, provider_for(s)
    with s.step(
        "DNS cutover",
        f"{', '.join(cfg.dns_names)} from old ({cfg.old_address}) to new ({cfg.new_address}); "
        "old keeps proxying for clients that still resolve to it",
        undo=f"switch each record back to old's address ({cfg.old_address}) at {provider.label}; old "
        "still proxies to new, so either answer is served",
    ):
        if s.planning:
            s.note(
                "refused while an original TTL has not run out since dns --lower-ttl (unless --force); "
                "all records are read first, and one holding neither address stops the cutover unchanged"
            )
            _plan_swaps(
                s,
                provider,
                [Swap(t.name, t.rtype, Record(t.old, cfg.dns_ttl), t.new, cfg.dns_ttl) for t in targets(cfg)],
                timeout,
                with_ttl=False,
            )
            return
        state, moment = DnsState.load(cfg), now()
        changes = []
        for t, record in _read_all(provider, targets(cfg), "cutover refused, NOTHING was changed"):
            if same(record.content, t.new):
                s.say(f"{t.key}: unchanged (already {t.new})")
                entry = state.entry(t.key)
                if entry.switched_at is None:  # switched outside this tool: count from now, to be safe
                    entry.switched_at, entry.ttl_at_switch = moment, record.ttl
            else:
                changes.append((t, Swap(t.name, t.rtype, record, t.new, record.ttl)))
        waits = [
            f"{t.key}: {why}"
            for t, c in changes
            if (why := _not_ready(s, state.records.get(t.key), c.expected, moment))
        ]
        if waits and not force:
            raise StepFailed(
                "cutover refused, NOTHING was changed: resolvers may still hold old's address with the "
                "long TTL:\n" + "\n".join(f"  - {w}" for w in waits) + "\nRun it again then, or add --force "
                "(old keeps proxying, and must do so until the time dns prints afterwards)."
            )
        for wait in waits:
            s.say(f"--force: switching although {wait}")
        state.save()
        _apply(s, provider, changes, _switched, with_ttl=False, timeout=timeout)


def verify_records(s: Session, timeout: float = VERIFY_TIMEOUT) -> None:
    """Every authoritative server answers new's address (AA bit); proxied records: the API read-back
    and new's origin over HTTPS."""
    cfg, provider = s.settings, provider_for(s)
    with s.step(
        "verify DNS",
        "at the source: each authoritative server directly, no resolver or cache",
        undo="not needed: it only asks",
    ):
        if s.planning:
            await_answers(
                s,
                _planned_servers(s, provider),
                [Expected(t.name, t.rtype, t.new) for t in targets(cfg)],
                timeout,
            )
            return
        current = _read_all(provider, targets(cfg), "cannot verify")
        behind = [f"{t.key} holds {r.content}" for t, r in current if not same(r.content, t.new)]
        if behind:
            raise StepFailed(
                f"{provider.label}: {', '.join(behind)}, not new's address yet: run the cutover (fab -H "
                f"{cfg.old_ssh},{cfg.new_ssh} dns) first"
            )
        proxied = [t for t, r in current if r.proxied]
        for t in proxied:
            s.say(f"{t.key}: proxied; Cloudflare's API shows {t.new} (its edge follows within seconds)")
        if proxied:
            _check_origin(s)
        dns_only = [Expected(t.name, t.rtype, t.new) for t, r in current if not r.proxied]
        if dns_only:
            await_answers(s, provider.authoritative_servers(), dns_only, timeout)


def _planned_servers(s: Session, provider: Provider) -> tuple[str, ...]:
    """The servers --verify will ask, as far as they are known without contacting anything."""
    if s.settings.dns_provider == "cloudflare" and not s.settings.dns_verify_servers:
        return ("each of the zone's name servers",)  # known only by asking Cloudflare's API
    try:
        return provider.authoritative_servers()
    except StepFailed as missing:  # a plan still shows the rest; the real run stops here
        s.note(str(missing))
        return ()


def _check_origin(s: Session) -> None:
    """Cloudflare's edge now fetches from new: new must answer HTTPS for the domain (asked from old)."""
    cfg = s.settings
    status, _ = s.old.fact(
        mastodon.https_request(cfg, cfg.new_address, "/health"),
        planned=(200, "OK"),
        then="anything but 200: Cloudflare's edge cannot reach new",
    )
    if status != 200:
        raise StepFailed(
            f"new's origin https://{cfg.domain}/health at {cfg.new_address} answered "
            f"{status or 'nothing'} (asked from old): Cloudflare's edge cannot reach new"
        )
    s.say(f"new's origin answers https://{cfg.domain}/health at {cfg.new_address}")


def restore_ttls(s: Session, timeout: float = WAIT_TIMEOUT) -> None:
    """Put back the TTL each record had before dns --lower-ttl."""
    cfg, provider = s.settings, provider_for(s)
    state = DnsState.load(cfg)
    with s.step(
        "restore the DNS TTL",
        f"the TTLs from before the migration, as kept in {state.path}",
        undo=f"fab -H {cfg.old_ssh},{cfg.new_ssh} dns --lower-ttl",
    ):
        remembered = [
            (t, state.records[t.key])
            for t in targets(cfg)
            if t.key in state.records and state.records[t.key].original_ttl
        ]
        if not remembered:
            s.say(f"nothing to restore: {state.path} holds no original TTL (dns --lower-ttl records them)")
            return
        if s.planning:
            swaps = []
            for t, entry in remembered:
                content = t.new if entry.switched_at else t.old
                swaps.append(Swap(t.name, t.rtype, Record(content, 0), content, entry.original_ttl))
            _plan_swaps(s, provider, swaps, timeout, with_ttl=True)
            return
        current = dict(
            _read_all(provider, [t for t, _ in remembered], "TTLs not restored, NOTHING was changed")
        )
        changes = []
        for t, entry in remembered:
            record = current[t]
            if record.proxied or record.ttl == entry.original_ttl:
                s.say(f"{t.key}: TTL {record.ttl}: unchanged")
            else:
                changes.append((t, Swap(t.name, t.rtype, record, record.content, entry.original_ttl)))
        _apply(s, provider, changes, _restored, with_ttl=True, timeout=timeout)


def retire_after(s: Session) -> datetime | None:
    """When old's proxy may go: the last moment a resolver may still hold old's address, plus a margin.
    None until every record was switched."""
    state, ends = DnsState.load(s.settings), []
    for t in targets(s.settings):
        entry = state.records.get(t.key)
        if entry is None or entry.switched_at is None:
            return None
        end = entry.switched_at + timedelta(seconds=entry.ttl_at_switch or 0)
        if entry.lowered_at:  # answers given before the lowering carried the original TTL
            end = max(end, entry.lowered_at + timedelta(seconds=entry.original_ttl))
        ends.append(end)
    return max(ends) + RETIRE_MARGIN


def show_retire_time(s: Session) -> None:
    """The reminder after a cutover: old's proxy serves resolvers that still hold its address until then."""
    when = None if s.planning else retire_after(s)
    s.say(
        "old keeps proxying until every resolver has dropped its address: run cleanup after "
        + (
            f"{when:%Y-%m-%d %H:%M:%S} UTC"
            if when
            else f"the switch + the TTL resolvers were given + {RETIRE_MARGIN.seconds // 60} min "
            "(shown by the real cutover)"
        )
    )


@two_host_task(
    help={
        "plan": "show current and target values only",
        "lower_ttl": "lower the TTL ahead of the cutover",
        "verify": "ask every authoritative server",
        "restore_ttl": "put the original TTL back",
        "force": "switch before the old TTL has expired",
    }
)
def dns(s: Session, plan=False, lower_ttl=False, verify=False, restore_ttl=False, force=False):
    """Switch the domain's DNS records from old to new (compare-and-swap), or plan/verify it."""
    chosen = [
        flag
        for flag, on in (
            ("--plan", plan),
            ("--lower-ttl", lower_ttl),
            ("--verify", verify),
            ("--restore-ttl", restore_ttl),
        )
        if on
    ]
    if len(chosen) > 1 or (chosen and force):
        raise StepFailed(
            f"choose one of --plan, --lower-ttl, --verify, --restore-ttl, or none for the cutover "
            f"(the only one that takes --force); got {' '.join(chosen + ['--force'] * force)}"
        )
    if plan:
        show_plan(s)
    elif lower_ttl:
        lower_ttls(s)
    elif verify:
        verify_records(s)
    elif restore_ttl:
        restore_ttls(s)
    else:
        cutover(s, force=force)
        show_retire_time(s)
