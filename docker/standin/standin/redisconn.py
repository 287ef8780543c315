"""Redis clients for the three uses Mastodon separates: base (feeds, pub/sub, idempotency),
Sidekiq (SIDEKIQ_REDIS_*) and cache (CACHE_REDIS_*, Rack::Attack counters). Each falls back to the base
settings, so by default all three are the same server."""

from __future__ import annotations

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry


def client(url: str, socket_timeout: float | None = 10.0, name: str | None = None,
           connect_timeout: float = 5.0) -> redis.Redis:
    # `name` is sent with CLIENT SETNAME. Only Sidekiq's connections have one ("Sidekiq-server-PID-<pid>" in
    # the Sidekiq process, "Sidekiq-client-PID-<pid>" where jobs are pushed), as Sidekiq 6.5 sets them;
    # Mastodon's other Redis connections are unnamed.
    # One transparent retry on a connection error (a stale pooled connection after a Redis restart), like
    # redis-rb's reconnect_attempts; a Redis that is really down still raises.
    return redis.Redis.from_url(
        url,
        decode_responses=True,
        socket_connect_timeout=connect_timeout,
        socket_timeout=socket_timeout,
        retry=Retry(NoBackoff(), 1),
        retry_on_error=[redis.exceptions.ConnectionError],
        health_check_interval=30,
        client_name=name,
    )


def redact(url: str) -> str:
    if "@" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url
