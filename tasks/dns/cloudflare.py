"""Cloudflare through its official SDK (v5): zone by name, records by exact name and type, PATCH.

The `proxied` flag is always sent as read: a record updated without it becomes DNS-only and
publishes the origin's address. Cloudflare has no conditional update, so the compare-and-swap
is read, compare, then PATCH by record id.
"""

from __future__ import annotations

import os
import socket
from functools import cached_property

from ..core import Secret, StepFailed
from ..settings import Settings
from . import answers
from .records import CHANGED, Record, Swap, judge_refusal, same

DEFAULT_BASE_URL = "https://api.cloudflare.com/client/v4"
MAX_RETRIES = 4  # the SDK retries 429 and 5xx, waiting as retry-after asks (up to 60 s), else backing off
TIMEOUT = 20.0
AUTO_TTL = 1  # what Cloudflare calls "automatic"; proxied records always have it


def read_token(cfg: Settings) -> Secret:
    if cfg.cloudflare_api_token_file:
        where = f"CLOUDFLARE_API_TOKEN_FILE ({cfg.cloudflare_api_token_file})"
        return Secret(cfg.cloudflare_api_token_file.read_text().strip(), where)
    if os.environ.get("CLOUDFLARE_API_TOKEN"):
        return Secret(os.environ["CLOUDFLARE_API_TOKEN"], "the environment variable CLOUDFLARE_API_TOKEN")
    raise StepFailed(
        "no Cloudflare API token: set CLOUDFLARE_API_TOKEN_FILE (a 0600 file) or the environment "
        "variable CLOUDFLARE_API_TOKEN"
    )


class CloudflareProvider:
    label = "Cloudflare"

    def __init__(self, cfg: Settings):
        self.cfg = cfg
        self.base_url = cfg.cloudflare_base_url or DEFAULT_BASE_URL

    @cached_property
    def _token(self) -> Secret:
        return read_token(self.cfg)

    @cached_property
    def _client(self):
        from cloudflare import Cloudflare  # imported on first use: fab starts faster without it

        client = Cloudflare(
            api_token=self._token.reveal(), base_url=self.base_url, max_retries=MAX_RETRIES, timeout=TIMEOUT
        )
        # The token is the only credential: the SDK would prefer a global API key from the environment
        # (CLOUDFLARE_EMAIL, CLOUDFLARE_API_KEY) over it.
        client.api_email = client.api_key = client.user_service_key = None
        return client

    @cached_property
    def _zone(self):
        zones = self._call(lambda: self._client.zones.list(name=self.cfg.dns_zone).result)
        if not zones:
            raise StepFailed(
                f"Cloudflare shows no zone named {self.cfg.dns_zone} to this token: check DNS_ZONE and "
                f"that {self._token.where} has Zone:Read on it"
            )
        return zones[0]

    def read(self, name: str, rtype: str) -> Record | None:
        found = self._call(
            lambda: (
                self._client.dns.records.list(  # one page: the filter is exact
                    zone_id=self._zone.id, name={"exact": name}, type=rtype
                ).result
            )
        )
        if len(found) > 1:  # several values: a record that matches no single address
            return Record(", ".join(sorted(r.content for r in found)), int(found[0].ttl))
        return (
            Record(found[0].content, int(found[0].ttl), bool(found[0].proxied), found[0].id)
            if found
            else None
        )

    def swap(self, change: Swap) -> str:
        now = self.read(change.name, change.rtype)
        if now is None or now.id is None or not same(now.content, change.expected.content):
            return judge_refusal(change, now)
        self._call(
            lambda: self._client.dns.records.edit(
                now.id,
                zone_id=self._zone.id,
                name=change.name,
                type=change.rtype,
                content=change.content,
                ttl=AUTO_TTL if now.proxied else change.ttl,
                proxied=now.proxied,
            )
        )
        return CHANGED

    def authoritative_servers(self) -> tuple[str, ...]:
        """DNS_VERIFY_SERVERS, else the zone's name servers (their addresses from this machine's resolver)."""
        if self.cfg.dns_verify_servers:
            return self.cfg.dns_verify_servers
        addresses = []
        for host in self._zone.name_servers:
            try:
                infos = socket.getaddrinfo(host, 53, proto=socket.IPPROTO_UDP)
            except OSError as error:
                raise StepFailed(
                    f"cannot resolve Cloudflare's name server {host} ({error}): set DNS_VERIFY_SERVERS "
                    "to the zone's name server addresses"
                ) from None
            addresses += [answers.server_text(info[4][0], 53) for info in infos]
        return tuple(dict.fromkeys(addresses))

    def describe(self, change: Swap) -> str:
        ttl_only = change.content == change.expected.content
        body = (
            f'{{"name": "{change.name}", "type": "{change.rtype}", "content": "{change.content}", '
            f'"ttl": {change.ttl}{"" if ttl_only else " (1 if proxied)"}, "proxied": <as read>}}'
        )
        return (
            f"GET {self.base_url}/zones?name={self.cfg.dns_zone}, GET .../dns_records?type={change.rtype}"
            f"&name.exact={change.name}; only if it holds {change.expected.content}"
            f"{' and is not proxied (its TTL is automatic)' if ttl_only else ''}: "
            f"PATCH {self.base_url}/zones/<zone id>/dns_records/<record id> {body}"
        )

    def _call(self, request):
        """One SDK call; its failures become errors that say what to change, without the token."""
        import cloudflare

        try:
            return request()
        except (cloudflare.AuthenticationError, cloudflare.PermissionDeniedError) as error:
            raise StepFailed(
                f"Cloudflare refused the API token ({self._why(error)}): {self._token.where} must hold "
                f"a token with Zone:Read and DNS:Edit on {self.cfg.dns_zone}"
            ) from None
        except cloudflare.RateLimitError as error:
            raise StepFailed(
                f"Cloudflare's rate limit still applied after {MAX_RETRIES} retries ({self._why(error)}); "
                "it can block for 5 minutes: run again later"
            ) from None
        except cloudflare.APIStatusError as error:
            raise StepFailed(f"Cloudflare answered {self._why(error)}") from None
        except cloudflare.APIConnectionError as error:
            raise StepFailed(
                f"cannot reach the Cloudflare API at {self.base_url} "
                f"({self._token_masked(str(error))}): check CLOUDFLARE_BASE_URL and the network"
            ) from None

    def _why(self, error) -> str:
        body = error.body if isinstance(error.body, dict) else {}
        errors = "; ".join(f"{e.get('code')} {e.get('message')}" for e in body.get("errors") or [])
        return self._token_masked(f"HTTP {error.status_code}" + (f": {errors}" if errors else ""))

    def _token_masked(self, text: str) -> str:
        return text.replace(self._token.reveal(), str(self._token))
