"""Answers straight from the zone's authoritative servers: no resolver, no cache, AA bit required."""

from __future__ import annotations

import re
from dataclasses import dataclass

import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode

from ..core import StepFailed
from .records import Record, same

QUERY_TIMEOUT = 3.0
POLL_INTERVAL = 2.0  # between two rounds of questions while waiting for the servers


def address_and_port(server: str) -> tuple[str, int]:
    """ "192.0.2.53", "192.0.2.53:5353", "[2001:db8::53]:53" -> (address, port)."""
    match = re.fullmatch(r"\[([^\]]+)\](?::(\d+))?|([^:]+)(?::(\d+))?", server)
    if not match:  # a bare IPv6 address
        return server, 53
    address = match.group(1) or match.group(3)
    return address, int(match.group(2) or match.group(4) or 53)


def server_text(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


@dataclass(frozen=True)
class Answer:
    record: Record | None = None  # None: the server holds no such record
    problem: str = ""  # why this answer cannot be trusted (no AA, timeout, error code)


def ask(server: str, name: str, rtype: str) -> Answer:
    """One question to one server, without recursion; an answer counts only with the AA bit."""
    address, port = address_and_port(server)
    query = dns.message.make_query(name, rtype)
    query.flags &= ~dns.flags.RD
    try:
        response, _ = dns.query.udp_with_fallback(query, address, timeout=QUERY_TIMEOUT, port=port)
    except (dns.exception.DNSException, OSError) as error:
        return Answer(problem=f"no answer ({error or type(error).__name__})")
    if not response.flags & dns.flags.AA:
        return Answer(problem="not authoritative (no AA bit): not a server of this zone")
    if response.rcode() == dns.rcode.NXDOMAIN:
        return Answer()
    if response.rcode() != dns.rcode.NOERROR:
        return Answer(problem=f"answered {dns.rcode.to_text(response.rcode())}")
    asked = query.question[0]  # not the records of a CNAME's target, which come in the same answer
    rrset = next((r for r in response.answer if r.name == asked.name and r.rdtype == asked.rdtype), None)
    if rrset is None:
        return Answer()
    return Answer(Record(", ".join(sorted(r.to_text() for r in rrset)), rrset.ttl))


def read(server: str, name: str, rtype: str) -> Record | None:
    """The record as the server holds it; StepFailed when it gives no authoritative answer."""
    answer = ask(server, name, rtype)
    if answer.problem:
        raise StepFailed(
            f"{server} about {name} {rtype}: {answer.problem}. Check the server's address "
            "(DNS_VERIFY_SERVERS, RFC2136_SERVER) and that it serves the zone."
        )
    return answer.record


@dataclass(frozen=True)
class Expected:
    """What every authoritative server must answer: `content`, and `ttl` unless None."""

    name: str
    rtype: str
    content: str
    ttl: int | None = None

    def met_by(self, answer: Answer) -> bool:
        record = answer.record
        return (
            not answer.problem
            and record is not None
            and same(record.content, self.content)
            and self.ttl in (None, record.ttl)
        )


def lagging(servers: tuple[str, ...], expected: list[Expected]) -> list[str]:
    """Every (server, record) that does not answer as expected yet, described."""
    found = []
    for item in expected:
        for server in servers:
            answer = ask(server, item.name, item.rtype)
            if not item.met_by(answer):
                now = answer.problem or (answer.record.show() if answer.record else "no record")
                found.append(f"{server} {item.name} {item.rtype}: {now}")
    return found
