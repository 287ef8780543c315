"""Mastodon's .env.production: parsing, the rewrite for new, and a diff that shows no secret (pure)."""

from __future__ import annotations

import difflib
import io
import re
from urllib.parse import urlsplit, urlunsplit

from dotenv import dotenv_values

HEADER = "# Copied from old by mastodon-migration copy-config: the database is reached through the tunnel."
# Values of these keys may be shown; every other value is treated as a secret.
SHOWN = {
    "LOCAL_DOMAIN",
    "WEB_DOMAIN",
    "ALTERNATE_DOMAINS",
    "RAILS_ENV",
    "NODE_ENV",
    "DB_HOST",
    "DB_PORT",
    "DB_NAME",
    "DB_USER",
    "REDIS_HOST",
    "REDIS_PORT",
    "REDIS_DB",
    "TRUSTED_PROXY_IP",
    "S3_ENABLED",
    "SINGLE_USER_MODE",
    "STREAMING_API_BASE_URL",
    "PREPARED_STATEMENTS",
    "DB_POOL",
    "MAX_THREADS",
    "WEB_CONCURRENCY",
    "BIND",
    "PORT",
    "STREAMING_CLUSTER_NUM",
    "ES_ENABLED",
    "SMTP_SERVER",
    "SMTP_PORT",
    "SMTP_FROM_ADDRESS",
}


# Rails' default trusted proxies (loopback and private ranges), in force while TRUSTED_PROXY_IP is empty.
RAILS_TRUSTED = ("127.0.0.0/8", "::1", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")


def parse(text: str) -> dict[str, str]:
    return {k: v or "" for k, v in dotenv_values(stream=io.StringIO(text), interpolate=False).items()}


def local_media(values: dict[str, str]) -> bool:
    """Uploads live in public/system unless object storage is on."""
    return values.get("S3_ENABLED", "false").strip().lower() != "true"


def _set(lines: list[str], key: str, value: str) -> list[str]:
    pattern = re.compile(rf"^\s*(export\s+)?{key}\s*=")
    if any(pattern.match(x) for x in lines):
        return [f"{key}={value}" if pattern.match(x) else x for x in lines]
    return lines + [f"{key}={value}"]


def _point_database(
    lines: list[str], values: dict[str, str], port: int, host: str = "127.0.0.1"
) -> list[str]:
    """DB_HOST/DB_PORT, and DATABASE_URL when set (it overrides them in Mastodon), to host:port (a
    directory: the socket in it, passed to libpq as the URL's `host` parameter)."""
    lines = _set(_set(lines, "DB_HOST", host), "DB_PORT", str(port))
    if values.get("DATABASE_URL"):
        url = urlsplit(values["DATABASE_URL"])
        userinfo = url.netloc.rpartition("@")[0]
        if host.startswith("/"):
            netloc, query = (userinfo + "@" if userinfo else "") + f":{port}", f"host={host}"
        else:
            netloc, query = (userinfo + "@" if userinfo else "") + f"{host}:{port}", url.query
        lines = _set(lines, "DATABASE_URL", urlunsplit(url._replace(netloc=netloc, query=query)))
    return lines


POOLER_SOCKET_DIR = "/var/run/postgresql"  # Debian's PgBouncer listens there and on 127.0.0.1


def pooler_address(values: dict[str, str]) -> str:
    """Where new's Mastodon reaches new's PgBouncer: its socket where old's Mastodon used a socket (peer
    authentication, as on old), else 127.0.0.1 (with old's password)."""
    return POOLER_SOCKET_DIR if database_address(values)[0].startswith("/") else "127.0.0.1"


def rewrite_for_new(text: str, tunnel_port: int, old_address_from_new: str, pooler_port: int = 0) -> str:
    """old's .env.production as new needs it while old's database is the primary: the database
    through the tunnel, or new's PgBouncer (`pooler_port`, with PREPARED_STATEMENTS=false, as transaction
    pooling needs), old (the proxy) trusted for client addresses, Redis left as new's own."""
    values = parse(text)
    lines = [x for x in text.splitlines() if x != HEADER]
    if pooler_port:
        lines = _set(
            _point_database(lines, values, pooler_port, pooler_address(values)),
            "PREPARED_STATEMENTS",
            "false",
        )
    else:
        lines = _point_database(lines, values, tunnel_port)
    # An empty TRUSTED_PROXY_IP means Rails' defaults; a set one replaces them, so keep them explicitly.
    trusted = [x for x in re.split(r"[\s,]+", values.get("TRUSTED_PROXY_IP", "")) if x] or list(RAILS_TRUSTED)
    if old_address_from_new not in trusted:
        lines = _set(lines, "TRUSTED_PROXY_IP", ",".join(trusted + [old_address_from_new]))
    return "\n".join([HEADER, *lines]) + "\n"


LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")


def database_address(values: dict[str, str]) -> tuple[str, int]:
    """Where Mastodon connects for its database: DATABASE_URL's host and port, else DB_HOST (a directory is
    the socket's) and DB_PORT, with Mastodon's defaults."""
    if values.get("DATABASE_URL"):
        url = urlsplit(values["DATABASE_URL"])
        return url.hostname or "localhost", url.port or 5432
    port = values.get("DB_PORT", "")
    return values.get("DB_HOST") or "localhost", int(port) if port.isdigit() else 5432


def point_at_local_database(text: str, old_text: str, pg_port: int, pooled: bool = False) -> str:
    """After failover: the database is new's own cluster, reached the way old's Mastodon reached old's. Where
    old's DB_HOST was a socket directory or loopback (and DATABASE_URL unset), new takes old's DB_HOST and
    DB_PORT as they were (a socket means peer authentication, as on old); otherwise 127.0.0.1:pg_port.
    `pooled`: old's port was a PgBouncer's, which new does not have: new takes PostgreSQL's own port."""
    old = parse(old_text)
    host = old.get("DB_HOST", "")
    if not old.get("DATABASE_URL") and (host.startswith("/") or host in LOCAL_HOSTS or not host):
        lines = text.splitlines()
        for key in ("DB_HOST", "DB_PORT"):
            lines = _set(lines, key, old[key]) if key in old else _unset(lines, key)
        if pooled:
            lines = _set(lines, "DB_PORT", str(pg_port))
        return "\n".join(lines) + "\n"
    return "\n".join(_point_database(text.splitlines(), parse(text), pg_port)) + "\n"


def _unset(lines: list[str], key: str) -> list[str]:
    pattern = re.compile(rf"^\s*(export\s+)?{key}\s*=")
    return [x for x in lines if not pattern.match(x)]


def masked(text: str) -> str:
    """The file with every value outside SHOWN replaced by <secret>."""
    out = []
    for line in text.splitlines():
        match = re.match(r"^(\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=)(.*)$", line)
        if match and match.group(2) not in SHOWN and match.group(3).strip():
            line = match.group(1) + "<secret>"
        out.append(line)
    return "\n".join(out) + "\n"


def masked_diff(before: str, after: str, before_name: str, after_name: str) -> str:
    return "".join(
        difflib.unified_diff(
            masked(before).splitlines(True), masked(after).splitlines(True), before_name, after_name
        )
    )
