"""redis-cli against the Redis that a host's Mastodon uses (its .env.production), password off argv."""

from __future__ import annotations

import shlex
from urllib.parse import unquote, urlsplit

from .command import Cmd, Secret


def target(values: dict[str, str] | None) -> tuple[str, str, str, str]:
    """(host, port, db, password) as Mastodon reads them: REDIS_URL wins over REDIS_HOST/PORT/DB/PASSWORD.
    None (a plan: the file was not read) gives placeholders, which the runbook shows as such."""
    if values is None:
        return "<REDIS_HOST>", "<REDIS_PORT>", "<REDIS_DB>", ""
    if values.get("REDIS_URL"):
        url = urlsplit(values["REDIS_URL"])
        return (
            url.hostname or "localhost",
            str(url.port or 6379),
            url.path.strip("/") or "0",
            unquote(url.password or ""),
        )
    return (
        values.get("REDIS_HOST") or "localhost",
        values.get("REDIS_PORT") or "6379",
        values.get("REDIS_DB") or "0",
        values.get("REDIS_PASSWORD") or "",
    )


def script(values: dict[str, str] | None, body: str, stdin: str | None = None, secrets=()) -> Cmd:
    """A shell script in which `r ARGS` runs redis-cli (raw output) against that Redis.
    A password travels as REDISCLI_AUTH inside the script, on stdin: never on a command line."""
    host, port, db, password = target(values)
    shown_host = host if values is None else shlex.quote(host)  # a plan's placeholder stays readable
    lines = [f'r() {{ redis-cli --raw -h {shown_host} -p {port} -n {db} "$@"; }}', body]
    if password:
        lines.insert(0, f"export REDISCLI_AUTH={shlex.quote(password)}")
        secrets = (*secrets, Secret(password, "REDIS_PASSWORD in .env.production"))
    return Cmd("\n".join(lines), user=None, stdin=stdin, secrets=secrets)


def cli(values: dict[str, str] | None, args: str) -> Cmd:
    return script(values, f"r {args}")
