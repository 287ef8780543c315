"""Mastodon 4.3's three Redis configurations (lib/mastodon/redis_configuration.rb) and REDIS_NAMESPACE
(redis-namespace around the base and Sidekiq connections, `<ns>_cache` for the cache store, `<ns>:` before the
streaming server's channels). Pure: no Redis server, no redis package."""

import os

import pytest
from standin import config, jobs, namespace, rate_limit


@pytest.fixture
def load(tmp_path, monkeypatch):
    for k in list(os.environ):
        if "REDIS" in k:
            monkeypatch.delenv(k, raising=False)

    def _load(text: str = "", **env):
        (tmp_path / ".env.production").write_text(text)
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        return config.load("production", tmp_path)
    return _load


def test_base_defaults(load):
    cfg = load()
    assert cfg.redis_url() == "redis://localhost:6379/0"
    assert cfg.redis_url("SIDEKIQ_") == cfg.redis_url("CACHE_") == cfg.redis_url()
    assert cfg.redis_namespace is None and cfg.cache_namespace == "cache"


def test_base_from_parts(load):
    cfg = load("REDIS_HOST=10.0.0.2\nREDIS_PORT=6380\nREDIS_DB=3\nREDIS_USER=mastodon\nREDIS_PASSWORD=p@ss\n")
    assert cfg.redis_url() == "redis://mastodon:p%40ss@10.0.0.2:6380/3"
    assert load("REDIS_PASSWORD=secret\n").redis_url() == "redis://:secret@localhost:6379/0"
    assert load("REDIS_HOST=::1\n").redis_url() == "redis://[::1]:6379/0"


def test_url_wins_and_is_used_alone(load):
    cfg = load("REDIS_URL=redis://:pw@127.0.0.1:6379/0\nREDIS_HOST=elsewhere\nREDIS_DB=5\n")
    assert cfg.redis_url() == "redis://:pw@127.0.0.1:6379/0"
    # the prefixed configs without URL/HOST are the base config, URL and all
    assert cfg.redis_url("SIDEKIQ_") == cfg.redis_url("CACHE_") == "redis://:pw@127.0.0.1:6379/0"
    # an empty URL is a value (ENV.fetch), which Mastodon cannot connect with either
    assert load("REDIS_URL=\n").redis_url() == ""


def test_prefixed_url(load):
    cfg = load("REDIS_URL=redis://:pw@127.0.0.1:6379/0\nSIDEKIQ_REDIS_URL=redis://:pw@127.0.0.1:6379/1\n")
    assert cfg.redis_url("SIDEKIQ_") == "redis://:pw@127.0.0.1:6379/1"
    assert cfg.redis_url("CACHE_") == "redis://:pw@127.0.0.1:6379/0"


def test_prefixed_host_takes_nothing_from_base(load):
    cfg = load("REDIS_HOST=10.0.0.2\nREDIS_PORT=6380\nREDIS_PASSWORD=pw\nREDIS_DB=2\n"
               "SIDEKIQ_REDIS_HOST=10.0.0.3\n")
    assert cfg.redis_url("SIDEKIQ_") == "redis://10.0.0.3:6379/0"
    cfg = load("SIDEKIQ_REDIS_HOST=10.0.0.3\nSIDEKIQ_REDIS_PORT=6390\nSIDEKIQ_REDIS_DB=1\n"
               "SIDEKIQ_REDIS_PASSWORD=x\n")
    assert cfg.redis_url("SIDEKIQ_") == "redis://:x@10.0.0.3:6390/1"


def test_prefixed_without_url_or_host_is_the_base(load):
    # SIDEKIQ_REDIS_DB / _PORT / _PASSWORD alone are ignored: no host, so the base config entirely
    cfg = load("REDIS_PASSWORD=pw\nSIDEKIQ_REDIS_DB=1\nSIDEKIQ_REDIS_PORT=7000\nCACHE_REDIS_PASSWORD=other\n"
               "SIDEKIQ_REDIS_HOST=\n")
    assert cfg.redis_url("SIDEKIQ_") == cfg.redis_url() == "redis://:pw@localhost:6379/0"
    assert cfg.redis_url("CACHE_") == cfg.redis_url()


def test_sentinels_are_refused(load):
    cfg = load("REDIS_SENTINELS=10.0.0.1:26379\nREDIS_SENTINEL_MASTER=mymaster\n")
    with pytest.raises(ValueError):
        cfg.redis_url()


def test_process_env_wins(load):
    cfg = load("REDIS_URL=redis://file:6379/0\n", REDIS_URL="redis://env:6379/0", REDIS_NAMESPACE="x")
    assert cfg.redis_url() == "redis://env:6379/0"
    assert cfg.redis_namespace == "x"


def test_namespaces(load):
    cfg = load("REDIS_NAMESPACE=social\n")
    assert cfg.redis_namespace == "social"
    assert cfg.cache_namespace == "social_cache"
    assert load("REDIS_NAMESPACE=\n").redis_namespace is None


def test_key_prefixing():
    a = namespace.command_args
    assert a("social", ("ZADD", "feed:home:1", 5, 5)) == ("ZADD", "social:feed:home:1", 5, 5)
    assert a("social", ("DEL", "schedule", "retry", "dead")) == (
        "DEL", "social:schedule", "social:retry", "social:dead")
    assert a("social", ("BRPOP", "queue:default", "queue:push", 2)) == (
        "BRPOP", "social:queue:default", "social:queue:push", 2)
    assert a("social", ("EVALSHA", "abc", 1, "retry", "123.4")) == (
        "EVALSHA", "abc", 1, "social:retry", "123.4")
    assert a("social", ("MSET", "a", 1, "b", 2)) == ("MSET", "social:a", 1, "social:b", 2)
    assert a("social", ("PUBLISH", "timeline:1", "{}")) == ("PUBLISH", "social:timeline:1", "{}")
    assert a("social", ("SCAN", 0, b"MATCH", "feed:*", b"COUNT", 1000)) == (
        "SCAN", 0, b"MATCH", "social:feed:*", b"COUNT", 1000)
    assert a("social", ("SCAN", 0)) == ("SCAN", 0, "MATCH", "social:*")
    assert a("social", ("KEYS", "feed:*")) == ("KEYS", "social:feed:*")
    assert a("social", ("PING",)) == ("PING",)
    assert a("social", ("MEMORY USAGE", "feed:home:1")) == ("MEMORY USAGE", "social:feed:home:1")
    assert a("social", ("SET", b"k", b"v")) == ("SET", b"social:k", b"v")
    with pytest.raises(namespace.UnknownCommand):
        a("social", ("FLUSHALL",))


def test_reply_stripping():
    r = namespace.reply
    assert r("social", "SCAN", (0, ["social:feed:home:1"])) == (0, ["feed:home:1"])
    assert r("social", "KEYS", ["social:a", "social:b"]) == ["a", "b"]
    assert r("social", "BRPOP", ("social:queue:default", "{}")) == ("queue:default", "{}")
    assert r("social", "BRPOP", None) is None
    assert r("social", "GET", "social:x") == "social:x"   # values are never touched


class FakeRedis:
    """Records the commands the Sidekiq helpers issue, through the namespace as NamespacedRedis does."""

    def __init__(self, ns):
        self.ns, self.commands = ns, []

    def pipeline(self, transaction=True):
        return self

    def execute(self):
        return []

    def _cmd(self, *args):
        self.commands.append(namespace.command_args(self.ns, args))
        return self

    def sadd(self, *a):
        return self._cmd("SADD", *a)

    def lpush(self, *a):
        return self._cmd("LPUSH", *a)

    def zadd(self, key, mapping):
        return self._cmd("ZADD", key, *[x for m, s in mapping.items() for x in (s, m)])


def test_sidekiq_layout_in_namespace():
    r = FakeRedis("social")
    jobs.push(r, "DistributionWorker", [1])
    jobs.schedule(r, "PublishScheduledStatusWorker", [1], at=1e10)
    keys = [c[1] for c in r.commands]
    assert keys == ["social:queues", "social:queue:default", "social:schedule"]
    assert r.commands[0][2] == "default"   # SADD queues <name>: the member is not a key


def test_cache_store_namespace():
    class P:
        def __init__(self):
            self.keys = []

        def pipeline(self, transaction=False):
            return self

        def incrby(self, k, n):
            self.keys.append(k)

        def ttl(self, k):
            pass

        def execute(self):
            return [1, 10]

    p = P()
    assert rate_limit.RedisStore(p, "social_cache").increment("rack::attack:1:x:y", 10) == 1
    assert p.keys == ["social_cache:rack::attack:1:x:y"]
    p = P()
    rate_limit.RedisStore(p).increment("rack::attack:1:x:y", 10)
    assert p.keys == ["cache:rack::attack:1:x:y"]


def test_streaming_channels():
    assert namespace.channel("social", "timeline:1") == "social:timeline:1"
    assert namespace.channel("social", "subscribed:timeline:1") == "social:subscribed:timeline:1"
    assert namespace.channel(None, "timeline:1") == "timeline:1"
