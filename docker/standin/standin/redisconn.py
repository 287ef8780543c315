"""Redis clients for the three uses Mastodon separates: base (feeds, pub/sub, idempotency),
Sidekiq (SIDEKIQ_REDIS_*) and cache (CACHE_REDIS_*, Rack::Attack counters); see Config.redis_url for how each
is resolved (by default all three are the same server).

With REDIS_NAMESPACE, the base and Sidekiq clients are NamespacedRedis (redis-namespace, as Mastodon <= 4.3
wraps them): every key gets `<namespace>:` in front (standin/namespace.py). The cache client never is: the
Rails cache store puts its own namespace in its keys (rate_limit.RedisStore)."""

from __future__ import annotations

import redis
from redis.backoff import NoBackoff
from redis.client import Pipeline
from redis.retry import Retry

from . import namespace as ns_mod


class _Namespaced:
    namespace: str

    def execute_command(self, *args, **options):
        ns = self.namespace
        args = ns_mod.command_args(ns, args)
        if options.get("keys"):   # redis-py >= 5 passes the keys again (client-side caching)
            options["keys"] = [ns_mod.add(ns, k) for k in options["keys"]]
        if isinstance(self, Pipeline):
            if ns_mod._name(args[0]) in ns_mod.REPLY_KEYS:
                raise ns_mod.UnknownCommand(f"{args[0]} in a pipeline of a namespaced client")
            return super().execute_command(*args, **options)
        return ns_mod.reply(ns, args[0], super().execute_command(*args, **options))


class NamespacedPipeline(_Namespaced, Pipeline):
    pass


class NamespacedRedis(_Namespaced, redis.Redis):
    def pipeline(self, transaction=True, shard_hint=None):
        p = NamespacedPipeline(self.connection_pool, self.response_callbacks, transaction, shard_hint)
        p.namespace = self.namespace
        return p

    def pubsub(self, **kwargs):
        raise NotImplementedError("subscribe with a plain client and namespace.channel() (as the streaming "
                                  "server does)")


def client(url: str, socket_timeout: float | None = 10.0, name: str | None = None,
           connect_timeout: float = 5.0, namespace: str | None = None) -> redis.Redis:
    # `name` is sent with CLIENT SETNAME. Only Sidekiq's connections have one ("Sidekiq-server-PID-<pid>" in
    # the Sidekiq process, "Sidekiq-client-PID-<pid>" where jobs are pushed), as Sidekiq 6.5 sets them;
    # Mastodon's other Redis connections are unnamed.
    # One transparent retry on a connection error (a stale pooled connection after a Redis restart), like
    # redis-rb's reconnect_attempts; a Redis that is really down still raises.
    cls = NamespacedRedis if namespace else redis.Redis
    r = cls.from_url(
        url,
        decode_responses=True,
        socket_connect_timeout=connect_timeout,
        socket_timeout=socket_timeout,
        retry=Retry(NoBackoff(), 1),
        retry_on_error=[redis.exceptions.ConnectionError],
        health_check_interval=30,
        client_name=name,
    )
    if namespace:
        r.namespace = namespace
    return r


def for_config(cfg, use: str, **kw) -> redis.Redis:
    """The client of one of Mastodon's three Redis configurations: "base", "sidekiq" or "cache"."""
    prefix = {"base": "", "sidekiq": "SIDEKIQ_", "cache": "CACHE_"}[use]
    ns = None if use == "cache" else cfg.redis_namespace
    return client(cfg.redis_url(prefix), namespace=ns, **kw)


def redact(url: str) -> str:
    if "@" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url
