"""Manual DNS: the operator changes the record at the registrar; we read and wait at the
authoritative servers (DNS_VERIFY_SERVERS), which answer only once the change is published."""

from __future__ import annotations

from typing import Callable

from ..core import StepFailed
from ..settings import Settings
from . import answers
from .records import REQUESTED, Record, Swap

WAIT_TIMEOUT = 3600.0  # time for a person to make the change and for the registrar to publish it


class ManualProvider:
    label = "manual (at your registrar)"

    def __init__(self, cfg: Settings, say: Callable[[str], None]):
        self.cfg = cfg
        self.say = say  # how the instructions reach the operator (the session's output channel)

    def authoritative_servers(self) -> tuple[str, ...]:
        if not self.cfg.dns_verify_servers:
            zone = self.cfg.dns_zone
            raise StepFailed(
                f"DNS_PROVIDER=manual reads and waits at the authoritative servers of {zone}: "
                f"set DNS_VERIFY_SERVERS to their addresses (dig NS {zone}, then the "
                "addresses of those names)"
            )
        return self.cfg.dns_verify_servers

    def read(self, name: str, rtype: str) -> Record | None:
        return answers.read(self.authoritative_servers()[0], name, rtype)

    def swap(self, change: Swap) -> str:
        """Ask for the change; the caller waits until the authoritative servers answer it."""
        self.say(f"ACTION NEEDED: {self.describe(change)}")
        return REQUESTED

    def describe(self, change: Swap) -> str:
        where = f"at your DNS host, in zone {self.cfg.dns_zone}"
        if change.content == change.expected.content:
            what = (
                f"set the TTL of the {change.rtype} record {change.name} ({change.content}) to {change.ttl} s"
            )
        else:
            what = (
                f"change the {change.rtype} record {change.name} from {change.expected.content} to "
                f"{change.content} (TTL {change.ttl} s); change nothing else"
            )
        return f"{where}, {what}. dns waits until the authoritative servers (DNS_VERIFY_SERVERS) answer it."
