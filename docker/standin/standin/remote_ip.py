"""Client address resolution: Rails' ActionDispatch::RemoteIp (GetIp#calculate_ip), as Mastodon configures it.

The peer (REMOTE_ADDR) is a candidate first; X-Forwarded-For entries are only reached by walking past peers
and proxies that are trusted. With an untrusted peer the answer is the peer itself, whatever X-Forwarded-For
says: an untrusted proxy makes every user behind it share the proxy's address.
"""

from __future__ import annotations

import ipaddress
import re


class IpSpoofAttackError(Exception):
    pass


def _parse(ip: str):
    ip = ip.strip()
    if ip.startswith("[") and "]" in ip:
        ip = ip[1 : ip.index("]")]
    try:
        return ipaddress.ip_address(ip)
    except ValueError:
        # "1.2.3.4:5678" (a port) is dropped by Rails too; anything unparsable is ignored
        return None


def ips_from(header: str | None) -> list:
    """Rails `ips_from`: split on commas/whitespace, keep valid addresses (as ipaddress objects)."""
    if not header:
        return []
    out = []
    for item in re.split(r"[,\s]+", header.strip()):
        if not item:
            continue
        addr = _parse(item)
        if addr is not None:
            out.append(addr)
    return out


def _trusted(addr, proxies) -> bool:
    # IPv4-mapped IPv6 peers (::ffff:a.b.c.d) compare as IPv4, as they do in Ruby's IPAddr#include? on
    # a mapped address only when the network is IPv4-mapped too; nginx talks to 127.0.0.1 over IPv4 here.
    if getattr(addr, "ipv4_mapped", None):
        addr = addr.ipv4_mapped
    for net in proxies:
        if addr.version == net.version and addr in net:
            return True
    return False


def calculate_ip(remote_addr: str, x_forwarded_for: str | None, client_ip: str | None, proxies,
                 check_ip: bool = True) -> str:
    remote = ips_from(remote_addr)
    remote_a = remote[-1] if remote else None
    client_ips = list(reversed(ips_from(client_ip)))
    forwarded_ips = list(reversed(ips_from(x_forwarded_for)))

    if check_ip and client_ips and forwarded_ips and client_ips[-1] not in forwarded_ips:
        raise IpSpoofAttackError(f"IP spoofing attack?! HTTP_CLIENT_IP={client_ip!r} "
                                 f"HTTP_X_FORWARDED_FOR={x_forwarded_for!r}")

    ips = forwarded_ips + client_ips
    candidates = ([remote_a] if remote_a is not None else []) + ips
    for addr in candidates:
        if not _trusted(addr, proxies):
            return str(addr)
    if ips:
        return str(ips[-1])
    return str(remote_a) if remote_a is not None else remote_addr


def throttleable(ip: str) -> str:
    """Rack::Attack::Request#throttleable_remote_ip: IPv6 addresses are grouped by /64."""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if addr.version == 6:
        return str(ipaddress.ip_network(f"{addr}/64", strict=False).network_address)
    return str(addr)
