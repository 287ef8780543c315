"""One migration's settings: a dotenv file, validated as a whole before any host is touched.

The file is `$MIGRATION_ENV` (default `env/migration.env`); `env/example.env` documents every key.
A bad file gives one error that names the file and lists every problem, with what was expected.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
from dataclasses import dataclass, fields
from pathlib import Path

from dotenv import dotenv_values

DEFAULT_PATH = "env/migration.env"
DNS_PROVIDERS = ("manual", "cloudflare", "rfc2136")
DATABASE_ENDPOINTS = ("pgbouncer", "direct")


class SettingsError(Exception):
    """The settings file cannot be used; the message says what to change."""


# --- value parsers: text -> value, or ValueError saying what was expected ---------------------


def _domain(text: str) -> str:
    labels = text.rstrip(".").lower().split(".")
    if len(labels) < 2 or not all(re.fullmatch(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", x) for x in labels):
        raise ValueError("a domain name such as example.social")
    return ".".join(labels)


def _key_name(text: str) -> str:
    """A TSIG key name: one or more DNS labels (tsig-keygen's default is a single label)."""
    if not re.fullmatch(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*\.?", text):
        raise ValueError("a TSIG key name such as migration-key")
    return text


def _ssh_alias(text: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9._@:-]+", text):
        raise ValueError("an ssh host alias such as old (no spaces)")
    return text


def _ip(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise ValueError("an IPv4 or IPv6 address such as 203.0.113.20") from None


def _port(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise ValueError("a TCP port number from 1 to 65535")
    return int(text)


def _pg_size(text: str) -> str:
    if not re.fullmatch(r"[1-9][0-9]*(MB|GB|TB)", text):
        raise ValueError("a size such as 512MB, 5GB or 1TB")
    return text


def _bytes(text: str) -> int:
    if not text.isdigit():
        raise ValueError("a number of bytes such as 16777216")
    return int(text)


def _abs_path(text: str) -> str:
    """An absolute, normalised path of plain characters: it reaches remote shells, so nothing in it may
    be shell syntax (no spaces, quotes, $, backquotes, ;, &, |, *, ...), and no `..` or `//`."""
    path = text.rstrip("/") or "/"
    if not re.fullmatch(r"/[A-Za-z0-9._+@:/-]*", path) or os.path.normpath(path) != path:
        raise ValueError(
            "an absolute, normalised path of letters, digits and . _ - + @ : / only, "
            "such as /home/mastodon/live"
        )
    return path


def _local_path(text: str) -> Path:
    return Path(text).expanduser()


def _pg_identifier(text: str) -> str:
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", text):
        raise ValueError("lowercase letters, digits and _, starting with a letter (at most 63)")
    return text


def _unix_user(text: str) -> str:
    if not re.fullmatch(r"[a-z_][a-z0-9_-]{0,31}", text):
        raise ValueError("a Unix user name such as mastodon")
    return text


def _unit(text: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9:_.@-]+", text.removesuffix(".service")):
        raise ValueError("a systemd unit name such as mastodon-web")
    return text.removesuffix(".service")


def _yes_no(text: str) -> bool:
    value = text.lower()
    if value not in ("yes", "no", "true", "false", "1", "0"):
        raise ValueError("yes or no")
    return value in ("yes", "true", "1")


def _provider(text: str) -> str:
    if text not in DNS_PROVIDERS:
        raise ValueError(" or ".join(DNS_PROVIDERS))
    return text


def _endpoint(text: str) -> str:
    if text not in DATABASE_ENDPOINTS:
        raise ValueError(" or ".join(DATABASE_ENDPOINTS))
    return text


def _names(text: str) -> tuple[str, ...]:
    return tuple(_domain(x.strip()) for x in text.split(",") if x.strip())


def _ttl(text: str) -> int:
    if not text.isdigit() or not 30 <= int(text) <= 86400:
        raise ValueError("a TTL in seconds from 30 to 86400")
    return int(text)


def _servers(text: str) -> tuple[str, ...]:
    """Comma-separated IP[:port] (IPv6 as [addr]:port) of authoritative servers."""
    servers = []
    for item in (x.strip() for x in text.split(",") if x.strip()):
        match = re.fullmatch(r"\[([0-9a-fA-F:]+)\](?::(\d+))?|([0-9.]+)(?::(\d+))?", item)
        if not match:
            raise ValueError(
                "IP[:port] of authoritative servers, comma separated, e.g. 192.0.2.53,[2001:db8::53]:53"
            )
        address, port = (
            (match.group(1), match.group(2)) if match.group(1) else (match.group(3), match.group(4))
        )
        _ip(address)
        if port:
            _port(port)
        servers.append(item)
    return tuple(servers)


def _url(text: str) -> str:
    if not re.fullmatch(r"https?://\S+", text):
        raise ValueError("an http(s) URL")
    return text.rstrip("/")


def _tsig_algorithm(text: str) -> str:
    if text not in ("hmac-sha256", "hmac-sha384", "hmac-sha512"):
        raise ValueError("hmac-sha256, hmac-sha384 or hmac-sha512")
    return text


def _optional(parse):
    def parse_or_none(text: str):
        return parse(text) if text else None

    return parse_or_none


# --- the settings ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """Validated settings of one migration. Field names are the lowercased keys of the file."""

    path: Path
    domain: str
    old_ssh: str
    new_ssh: str
    old_address: str
    new_address: str
    old_address_from_new: str
    pg_port: int
    tunnel_port: int
    redis_tunnel_port: int
    replication_role: str
    replication_slot: str
    max_slot_wal_keep_size: str
    max_lag_bytes: int
    old_ssh_port_from_new: int
    mastodon_user: str
    mastodon_dir: str
    mastodon_web_service: str
    mastodon_sidekiq_service: str
    mastodon_streaming_service: str
    mastodon_web_port: int
    mastodon_streaming_port: int
    database_endpoint: str
    pgbouncer_port: int
    smoke_test_token_file: Path | None
    ssh_known_hosts: Path | None
    ssh_accept_new_host_keys: bool
    log_dir: Path
    old_address6: str | None
    new_address6: str | None
    dns_provider: str
    dns_zone: str | None
    dns_names: tuple[str, ...]
    dns_ttl: int
    dns_verify_servers: tuple[str, ...]
    cloudflare_api_token_file: Path | None
    cloudflare_base_url: str | None
    rfc2136_server: str | None
    rfc2136_port: int
    rfc2136_key_name: str | None
    rfc2136_key_file: Path | None
    rfc2136_key_algorithm: str

    @property
    def roles(self) -> dict[str, str]:
        """Role name -> ssh alias."""
        return {"old": self.old_ssh, "new": self.new_ssh}

    @property
    def mastodon_services(self) -> tuple[str, str, str]:
        return (self.mastodon_web_service, self.mastodon_sidekiq_service, self.mastodon_streaming_service)

    @property
    def log_file(self) -> Path:
        return self.log_dir / f"{self.path.stem}.log"


REQUIRED = object()

# key -> (parser, default). REQUIRED keys must be present and non-empty.
SCHEMA = {
    "DOMAIN": (_domain, REQUIRED),
    "OLD_SSH": (_ssh_alias, REQUIRED),
    "NEW_SSH": (_ssh_alias, REQUIRED),
    "OLD_ADDRESS": (_ip, REQUIRED),
    "NEW_ADDRESS": (_ip, REQUIRED),
    "OLD_ADDRESS_FROM_NEW": (_ip, REQUIRED),
    "PG_PORT": (_port, "5432"),
    "TUNNEL_PORT": (_port, "5433"),
    "REDIS_TUNNEL_PORT": (_port, "6380"),
    "REPLICATION_ROLE": (_pg_identifier, "mig_replicator"),
    "REPLICATION_SLOT": (_pg_identifier, "mig_new"),
    "MAX_SLOT_WAL_KEEP_SIZE": (_pg_size, "5GB"),
    "MAX_LAG_BYTES": (_bytes, str(16 * 1024 * 1024)),
    "OLD_SSH_PORT_FROM_NEW": (_port, "22"),
    "MASTODON_USER": (_unix_user, "mastodon"),
    "MASTODON_DIR": (_abs_path, "/home/mastodon/live"),
    "MASTODON_WEB_SERVICE": (_unit, "mastodon-web"),
    "MASTODON_SIDEKIQ_SERVICE": (_unit, "mastodon-sidekiq"),
    "MASTODON_STREAMING_SERVICE": (_unit, "mastodon-streaming"),
    "MASTODON_WEB_PORT": (_port, "3000"),
    "MASTODON_STREAMING_PORT": (_port, "4000"),
    "DATABASE_ENDPOINT": (_endpoint, "pgbouncer"),
    "PGBOUNCER_PORT": (_port, "6432"),
    "SMOKE_TEST_TOKEN_FILE": (_optional(_local_path), ""),
    "SSH_KNOWN_HOSTS": (_optional(_local_path), ""),
    "SSH_ACCEPT_NEW_HOST_KEYS": (_yes_no, "no"),
    "LOG_DIR": (_local_path, "logs"),
    "OLD_ADDRESS6": (_optional(_ip), ""),
    "NEW_ADDRESS6": (_optional(_ip), ""),
    "DNS_PROVIDER": (_provider, "manual"),
    "DNS_ZONE": (_optional(_domain), ""),
    "DNS_NAMES": (_names, ""),
    "DNS_TTL": (_ttl, "60"),
    "DNS_VERIFY_SERVERS": (_servers, ""),
    "CLOUDFLARE_API_TOKEN_FILE": (_optional(_local_path), ""),
    "CLOUDFLARE_BASE_URL": (_optional(_url), ""),
    "RFC2136_SERVER": (_optional(_ip), ""),
    "RFC2136_PORT": (_port, "53"),
    "RFC2136_KEY_NAME": (_optional(_key_name), ""),
    "RFC2136_KEY_FILE": (_optional(_local_path), ""),
    "RFC2136_KEY_ALGORITHM": (_tsig_algorithm, "hmac-sha256"),
}
assert set(SCHEMA) == {f.name.upper() for f in fields(Settings)} - {"PATH"}


def _cross_checks(v: dict) -> list[str]:
    """Problems that involve more than one key."""
    problems = []
    if v.get("OLD_SSH") and v.get("OLD_SSH") == v.get("NEW_SSH"):
        problems.append("OLD_SSH and NEW_SSH: must name two different hosts")
    if v.get("PGBOUNCER_PORT") in (v.get("PG_PORT"), v.get("TUNNEL_PORT")):
        problems.append("PGBOUNCER_PORT: must differ from PG_PORT and TUNNEL_PORT")
    if v.get("REDIS_TUNNEL_PORT") and v.get("REDIS_TUNNEL_PORT") in (
        v.get("PG_PORT"),
        v.get("TUNNEL_PORT"),
        v.get("PGBOUNCER_PORT"),
    ):
        problems.append("REDIS_TUNNEL_PORT: must differ from PG_PORT, TUNNEL_PORT and PGBOUNCER_PORT")
    if v.get("TUNNEL_PORT") and v.get("TUNNEL_PORT") == v.get("PG_PORT"):
        problems.append("TUNNEL_PORT: must differ from PG_PORT (new's own PostgreSQL listens there)")
    if v.get("DNS_PROVIDER") == "cloudflare" and not (
        v.get("CLOUDFLARE_API_TOKEN_FILE") or os.environ.get("CLOUDFLARE_API_TOKEN")
    ):
        problems.append(
            "CLOUDFLARE_API_TOKEN_FILE: required with DNS_PROVIDER=cloudflare "
            "(or set the environment variable CLOUDFLARE_API_TOKEN)"
        )
    if bool(v.get("OLD_ADDRESS6")) != bool(v.get("NEW_ADDRESS6")):
        problems.append("OLD_ADDRESS6 and NEW_ADDRESS6: set both (AAAA records move too) or neither")
    if v.get("DNS_PROVIDER") == "rfc2136":
        for key in ("RFC2136_SERVER", "RFC2136_KEY_NAME", "RFC2136_KEY_FILE"):
            if not v.get(key):
                problems.append(f"{key}: required with DNS_PROVIDER=rfc2136")
    for key in ("CLOUDFLARE_API_TOKEN_FILE", "RFC2136_KEY_FILE", "SMOKE_TEST_TOKEN_FILE"):
        problems += _secret_file_problems(key, v.get(key))
    return problems


def _secret_file_problems(key: str, path: Path | None) -> list[str]:
    if path is None:
        return []
    if not path.is_file():
        return [f"{key}: {path} does not exist"]
    if path.stat().st_mode & 0o077:
        return [f"{key}: {path} is readable by others; run chmod 600 {path}"]
    return []


# Keys of earlier versions, with what replaced them.
RETIRED = {
    "PG_VERSION": "each host's cluster is read with pg_lsclusters (the one on PG_PORT)",
    "PG_DATA_DIR": "each host's data directory is read with pg_lsclusters (the cluster on PG_PORT)",
}


def parse(raw: dict[str, str | None], path: Path) -> Settings:
    """Validate raw key/value pairs; raise SettingsError listing every problem."""
    problems = [f"{key}: no longer used, remove it: {why}" for key, why in RETIRED.items() if key in raw]
    for key in sorted(set(raw) - set(SCHEMA) - set(RETIRED)):
        hint = difflib.get_close_matches(key, SCHEMA, n=1)
        problems.append(f"{key}: unknown key" + (f" (did you mean {hint[0]}?)" if hint else ""))
    values = {}
    for key, (parse_value, default) in SCHEMA.items():
        text = (raw.get(key) or "").strip()
        if not text and default is REQUIRED:
            problems.append(f"{key}: missing")
            continue
        try:
            values[key] = parse_value(text or default)
        except ValueError as expected:
            problems.append(f"{key}: {text!r} is not valid; expected {expected}")
    problems += _cross_checks(values)
    if problems:
        raise SettingsError(
            f"{path}: {len(problems)} problem(s) in the settings:\n"
            + "\n".join(f"  - {p}" for p in problems)
            + "\nSee env/example.env for every key with an example."
        )
    values["DNS_NAMES"] = values["DNS_NAMES"] or (values["DOMAIN"],)
    values["DNS_ZONE"] = values["DNS_ZONE"] or values["DOMAIN"]
    return Settings(path=path, **{k.lower(): v for k, v in values.items()})


def load(path: str | os.PathLike | None = None) -> Settings:
    """Load the settings file named by `path`, else $MIGRATION_ENV, else env/migration.env."""
    path = Path(path or os.environ.get("MIGRATION_ENV") or DEFAULT_PATH)
    if not path.is_file():
        raise SettingsError(
            f"{path}: settings file not found. Copy env/example.env to {DEFAULT_PATH} "
            "and edit it, or set MIGRATION_ENV to your settings file."
        )
    return parse(dotenv_values(path, interpolate=False), path)
