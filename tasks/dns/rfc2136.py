"""RFC 2136 dynamic update with a TSIG key (BIND, Knot, PowerDNS): compare-and-swap by prerequisite."""

from __future__ import annotations

import base64
import binascii
import re
import shlex
from pathlib import Path

import dns.exception
import dns.name
import dns.query
import dns.rcode
import dns.tsig
import dns.tsigkeyring
import dns.update

from ..core import Secret, StepFailed
from ..settings import Settings
from . import answers
from .records import CHANGED, Record, Swap, after_refusal

UPDATE_TIMEOUT = 10.0
_KEY_CLAUSE = re.compile(r'key\s+"?([^"\s{]+)"?\s*\{(.*?)\}\s*;', re.S)


def _same_name(a: str, b: str) -> bool:
    return a.rstrip(".").lower() == b.rstrip(".").lower()


def read_key(path: Path, name: str, algorithm: str) -> tuple[Secret, bool]:
    """The TSIG secret from a file holding either the bare base64 secret or BIND's
    `key "NAME" { algorithm ...; secret "..."; };`; and whether it was the BIND form."""
    text = path.read_text()
    clause = _KEY_CLAUSE.search(text)
    where = f"RFC2136_KEY_FILE ({path})"
    if clause:
        declared, body = clause.groups()
        if not _same_name(declared, name):
            raise StepFailed(
                f"{where} declares key {declared!r} but RFC2136_KEY_NAME is {name!r}: make them the same"
            )
        declared_algorithm = re.search(r'algorithm\s+"?([\w-]+)', body)
        if declared_algorithm and declared_algorithm.group(1).lower() != algorithm:
            raise StepFailed(
                f"{where} declares algorithm {declared_algorithm.group(1)} but "
                f"RFC2136_KEY_ALGORITHM is {algorithm}: make them the same"
            )
        secret = re.search(r'secret\s+"([^"]+)"', body)
        text = secret.group(1) if secret else ""
    try:
        base64.b64decode(text.strip(), validate=True)
    except binascii.Error:
        text = ""
    if not text.strip():
        raise StepFailed(
            f"{where} holds neither a base64 TSIG secret nor a BIND key clause "
            '(key "NAME" { algorithm ...; secret "..."; };), e.g. the output of tsig-keygen'
        )
    return Secret(text.strip(), where), bool(clause)


class Rfc2136Provider:
    label = "RFC 2136"

    def __init__(self, cfg: Settings):
        self.cfg = cfg
        self.server = answers.server_text(cfg.rfc2136_server, cfg.rfc2136_port)

    def read(self, name: str, rtype: str) -> Record | None:
        return answers.read(self.server, name, rtype)

    def authoritative_servers(self) -> tuple[str, ...]:
        return self.cfg.dns_verify_servers or (self.server,)

    def swap(self, change: Swap) -> str:
        cfg = self.cfg
        secret, _ = read_key(cfg.rfc2136_key_file, cfg.rfc2136_key_name, cfg.rfc2136_key_algorithm)
        keyring = dns.tsigkeyring.from_text(
            {cfg.rfc2136_key_name: (cfg.rfc2136_key_algorithm, secret.reveal())}
        )
        update = dns.update.UpdateMessage(
            cfg.dns_zone, keyring=keyring, keyalgorithm=cfg.rfc2136_key_algorithm
        )
        name = dns.name.from_text(change.name)
        update.present(name, change.rtype, change.expected.content)  # the compare: exactly this RRset
        update.replace(name, change.ttl, change.rtype, change.content)
        try:
            rcode = dns.query.tcp(
                update, cfg.rfc2136_server, timeout=UPDATE_TIMEOUT, port=cfg.rfc2136_port
            ).rcode()
        except dns.tsig.PeerError as error:
            raise StepFailed(
                f"{self.server} rejected the TSIG key {cfg.rfc2136_key_name} ({type(error).__name__}): "
                f"check that {secret.where} holds that key's secret and that RFC2136_KEY_ALGORITHM "
                f"({cfg.rfc2136_key_algorithm}) is its algorithm. Nothing was changed."
            ) from None
        except (dns.exception.DNSException, OSError) as error:
            raise StepFailed(
                f"no answer from {self.server} to the update of {change.name} {change.rtype} "
                f"({error or type(error).__name__}): check RFC2136_SERVER and RFC2136_PORT"
            ) from None
        if rcode == dns.rcode.NOERROR:
            return CHANGED
        if rcode == dns.rcode.NXRRSET:  # the prerequisite failed: already done, or changed by someone else
            return after_refusal(self, change)
        raise StepFailed(
            f"{self.server} answered {dns.rcode.to_text(rcode)} to the update of {change.name} "
            f"{change.rtype}: its update-policy must grant key {cfg.rfc2136_key_name} this name "
            f"in zone {cfg.dns_zone} (e.g. grant KEY zonesub ANY;)"
        )

    def describe(self, change: Swap) -> str:
        """The same compare-and-swap as a copy-pasteable nsupdate script; the key stays in its file."""
        cfg = self.cfg
        path = shlex.quote(str(cfg.rfc2136_key_file))
        _, bind_form = read_key(cfg.rfc2136_key_file, cfg.rfc2136_key_name, cfg.rfc2136_key_algorithm)
        key = (
            path
            if bind_form
            # bash: printf is a builtin, so the secret is on no command line
            else (
                f"""<(printf 'key "%s" {{ algorithm %s; secret "%s"; }};\\n' {cfg.rfc2136_key_name} """
                f'{cfg.rfc2136_key_algorithm} "$(cat {path})")'
            )
        )
        name = change.name.rstrip(".") + "."
        return "\n".join(
            [
                f"nsupdate -k {key} <<'EOF'",
                f"server {cfg.rfc2136_server} {cfg.rfc2136_port}",
                f"zone {cfg.dns_zone}",
                f"prereq yxrrset {name} {change.rtype} {change.expected.content}",
                f"update delete {name} {change.rtype}",
                f"update add {name} {change.ttl} {change.rtype} {change.content}",
                "send",
                "EOF",
            ]
        )
