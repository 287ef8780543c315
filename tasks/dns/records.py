"""The DNS records a migration moves, and the interface every DNS provider offers.

A provider reads a record, compare-and-swaps it (content and/or TTL), names the zone's
authoritative servers, and describes a swap without contacting anything (for `fab --dry`).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Protocol

from ..core import StepFailed
from ..settings import Settings

CHANGED, UNCHANGED, REQUESTED = "changed", "unchanged", "requested"  # outcomes of a swap


@dataclass(frozen=True)
class Record:
    """One name and type as the provider holds it. Several values are joined by ", "
    (such a record matches no single address, so it is never switched)."""

    content: str
    ttl: int
    proxied: bool | None = None  # Cloudflare only
    id: str | None = None  # the provider's record id, when it has one

    def show(self) -> str:
        proxied = {True: ", proxied", False: ", DNS only", None: ""}[self.proxied]
        return f"{self.content} (TTL {self.ttl}{proxied})"


@dataclass(frozen=True)
class Target:
    """A configured name and type that moves from old's address to new's."""

    name: str
    rtype: str
    old: str
    new: str

    @property
    def key(self) -> str:
        return f"{self.name} {self.rtype}"


@dataclass(frozen=True)
class Swap:
    """Compare-and-swap: only if the record still holds `expected.content`, make it (content, ttl)."""

    name: str
    rtype: str
    expected: Record
    content: str
    ttl: int

    def done_by(self, record: Record | None) -> bool:
        return record is not None and same(record.content, self.content) and record.ttl == self.ttl


class Conflict(StepFailed):
    """The record no longer held the expected value: someone else changed it."""


class Provider(Protocol):
    label: str

    def read(self, name: str, rtype: str) -> Record | None: ...

    def swap(self, change: Swap) -> str: ...  # CHANGED, UNCHANGED or REQUESTED; Conflict otherwise

    def authoritative_servers(self) -> tuple[str, ...]: ...  # "IP[:port]" / "[IPv6]:port"

    def describe(self, change: Swap) -> str: ...  # what swap would do; contacts nothing


def targets(cfg: Settings) -> list[Target]:
    """Every configured name, with A, and AAAA when IPv6 addresses are set."""
    pairs = [("A", cfg.old_address, cfg.new_address)]
    if cfg.old_address6 and cfg.new_address6:
        pairs.append(("AAAA", cfg.old_address6, cfg.new_address6))
    return [Target(name, rtype, old, new) for name in cfg.dns_names for rtype, old, new in pairs]


def same(content: str, address: str) -> bool:
    """Equal as addresses (IPv6 has many spellings); other content compares as text."""
    try:
        return ipaddress.ip_address(content) == ipaddress.ip_address(address)
    except ValueError:
        return content == address


def after_refusal(provider: Provider, change: Swap) -> str:
    """The provider refused the swap's precondition: read back to tell which case it is."""
    return judge_refusal(change, provider.read(change.name, change.rtype))


def judge_refusal(change: Swap, now: Record | None) -> str:
    """The record did not hold the expected value: already done (UNCHANGED), or someone else's change."""
    if change.done_by(now):
        return UNCHANGED
    found = now.show() if now else "no record"
    raise Conflict(
        f"{change.name} {change.rtype} changed under us: it holds {found}, not the expected "
        f"{change.expected.content}. Look at who changed it, then run dns --plan."
    )
