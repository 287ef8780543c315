"""redis-cli against a Redis that a host's Mastodon uses, found in its .env.production exactly as Mastodon
finds it (4.3's Mastodon::RedisConfiguration); the password never goes on a command line.

Mastodon reads three Redis configurations, each from its own prefix of settings:
- base, `REDIS_*`: home feeds, pub/sub;
- Sidekiq, `SIDEKIQ_REDIS_*`: queues, schedule, retry, dead, processes (see sidekiq_jobs);
- cache, `CACHE_REDIS_*`: rate limits and the Rails cache, which the migration does not carry.

For each prefix: `<prefix>URL` alone when set; else `<prefix>HOST`, `PORT`, `DB`, `USER`, `PASSWORD`. The
base defaults to localhost:6379, database 0. A prefixed configuration with neither a URL nor a HOST is the
base one, whole. `REDIS_NAMESPACE` (set up before Mastodon 4.3, still honoured by it) puts `<namespace>:`
before every base and Sidekiq key; scripts here write each key as `"${P}key"`. Sentinels
(`<prefix>SENTINELS` with `<prefix>SENTINEL_MASTER`, and no URL) are not supported: `sentinel_keys`
names them so that preflight can refuse.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from .core import Secret
from .shell import Cmd


@dataclass(frozen=True)
class Target:
    """One Redis database as Mastodon reaches it, and the namespace of its keys."""

    host: str  # a host name or address; for a unix:// URL, the socket path
    port: str
    db: str
    user: str = ""
    password: str = ""
    namespace: str = ""
    tls: bool = False
    socket: bool = False

    @property
    def prefix(self) -> str:
        return f"{self.namespace}:" if self.namespace else ""

    @property
    def server(self) -> str:
        """Where it is, for messages (no secret): `127.0.0.1:6379`, or the socket path."""
        return self.host if self.socket else f"{self.host}:{self.port}"

    def __str__(self) -> str:
        space = f", keys under {self.prefix}" if self.namespace else ""
        return f"{self.server} database {self.db}{space}"


# A plan reads no file: placeholders, which the runbook shows as such (the namespace too, see script).
PLANNED = Target("<REDIS_HOST>", "<REDIS_PORT>", "<REDIS_DB>")


def _from_url(url: str, namespace: str) -> Target:
    parts = urlsplit(url)
    user, password = unquote(parts.username or ""), unquote(parts.password or "")
    if parts.scheme == "unix":
        return Target(parts.path, "", "0", user, password, namespace, socket=True)
    return Target(
        parts.hostname or "localhost",
        str(parts.port or 6379),
        parts.path.strip("/") or "0",
        user,
        password,
        namespace,
        tls=parts.scheme == "rediss",
    )


def _configured(values: dict[str, str], prefix: str) -> Target | None:
    """The configuration under one prefix; None when it has neither URL nor HOST (the base one is used)."""
    namespace = values.get("REDIS_NAMESPACE", "")
    if values.get(f"{prefix}REDIS_URL"):
        return _from_url(values[f"{prefix}REDIS_URL"], namespace)
    host = values.get(f"{prefix}REDIS_HOST") or ("localhost" if not prefix else "")
    if not host:
        return None
    return Target(
        host,
        values.get(f"{prefix}REDIS_PORT") or "6379",
        values.get(f"{prefix}REDIS_DB") or "0",
        values.get(f"{prefix}REDIS_USER", ""),
        values.get(f"{prefix}REDIS_PASSWORD", ""),
        namespace,
    )


def base(values: dict[str, str] | None) -> Target:
    """The Redis of home feeds and pub/sub. None (a plan: the file was not read) gives placeholders."""
    if values is None:
        return PLANNED
    found = _configured(values, "")
    assert found is not None  # the base configuration always has a host
    return found


def sidekiq(values: dict[str, str] | None) -> Target:
    """The Redis of Sidekiq's queues and job sets."""
    if values is None:
        return PLANNED
    return _configured(values, "SIDEKIQ_") or base(values)


def sentinel_keys(values: dict[str, str]) -> list[str]:
    """The settings that make Mastodon use Redis Sentinel (which this tool does not support)."""
    return [
        f"{prefix}REDIS_SENTINELS"
        for prefix in ("", "SIDEKIQ_", "CACHE_")
        if values.get(f"{prefix}REDIS_SENTINELS")
        and values.get(f"{prefix}REDIS_SENTINEL_MASTER")
        and not values.get(f"{prefix}REDIS_URL")
    ]


def _client(target: Target) -> str:
    if target is PLANNED:
        return f"redis-cli --raw -h {target.host} -p {target.port} -n {target.db}"
    where = (
        f"-s {shlex.quote(target.host)}"
        if target.socket
        else f"-h {shlex.quote(target.host)} -p {shlex.quote(target.port)}"
    )
    user = f" --user {shlex.quote(target.user)}" if target.user else ""
    tls = " --tls" if target.tls else ""
    return f"redis-cli --raw{tls} {where}{user} -n {shlex.quote(target.db)}"


def script(target: Target, body: str, stdin: str | None = None, secrets=()) -> Cmd:
    """A shell script in which `r ARGS` runs redis-cli (raw output) against that Redis and `$P` is its key
    prefix (the namespace). A password travels as REDISCLI_AUTH inside the script, on stdin: never on a
    command line."""
    if target is PLANNED:  # one placeholder a line: a plan does not know whether there is a password
        auth, prefix = PLANNED_AUTH, "<REDIS_NAMESPACE and a colon, or ''>"
    elif target.password:
        auth, prefix = f"export REDISCLI_AUTH={shlex.quote(target.password)}", shlex.quote(target.prefix)
        secrets = (*secrets, Secret(target.password, "the Redis password in .env.production"))
    else:
        auth, prefix = "unset REDISCLI_AUTH", shlex.quote(target.prefix)
    lines = [auth, f"P={prefix}", f'r() {{ {_client(target)} "$@"; }}', body]
    return Cmd("\n".join(lines), user=None, stdin=stdin, secrets=secrets)


PLANNED_AUTH = "<export REDISCLI_AUTH=the Redis password in .env.production, or unset REDISCLI_AUTH>"


def cli(target: Target, args: str) -> Cmd:
    return script(target, f"r {args}")
