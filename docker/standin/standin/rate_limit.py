"""Rate limiting as Mastodon configures Rack::Attack (config/initializers/rack_attack.rb).

- safelist: requests whose computed client address is exactly 127.0.0.1 or ::1 are never throttled;
- throttles keyed by user, token or client address, each a fixed window of `period` seconds;
- counters live in the cache Redis (Rails cache store, namespace `cache`, or `<REDIS_NAMESPACE>_cache`) under
  `cache:rack::attack:<epoch window>:<throttle name>:<discriminator>`, so they are shared by all web
  processes; when that Redis is unreachable the cache store swallows the error and nothing is throttled
  (fail open);
- 429 body `{"error":"Too many requests"}` and the X-RateLimit-* headers of Mastodon's throttled responder;
  API responses also carry X-RateLimit-* for the most limited matching throttle (RateLimitHeaders concern).

Limits and windows are Mastodon's defaults; each can be changed with
`STANDIN_THROTTLE_<NAME>=<limit>/<period>` (e.g. `STANDIN_THROTTLE_UNAUTHENTICATED_API=20/60`), in
.env.production or the process environment.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable, Optional

SAFELIST = ("127.0.0.1", "::1")
PREFIX = "rack::attack"
CACHE_NAMESPACE = "cache"


@dataclass
class RequestInfo:
    method: str
    path: str
    remote_ip: str                   # computed client address (remote_ip.calculate_ip)
    throttleable_ip: str             # IPv6 grouped by /64
    user_id: Optional[int] = None    # users.id of the token's resource owner, if authenticated
    token_id: Optional[int] = None
    params: dict = field(default_factory=dict)

    @property
    def api(self) -> bool:
        return self.path.startswith("/api")

    @property
    def unauthenticated(self) -> bool:
        return not self.user_id

    @property
    def paging(self) -> bool:
        return any(self.params.get(k) for k in ("page", "min_id", "max_id", "since_id"))

    def path_matches(self, other: str) -> bool:
        return re.fullmatch(re.escape(other) + r"(\..*)?", self.path) is not None


@dataclass
class Throttle:
    name: str
    limit: int
    period: int
    discriminator: Callable[[RequestInfo], Optional[object]]


_MEDIA = re.compile(r"/api/v\d+/media", re.I)
_DELETE_REBLOG = re.compile(r"/api/v1/statuses/\d+/unreblog")
_DELETE_STATUS = re.compile(r"/api/v1/statuses/\d+")


def default_throttles() -> list[Throttle]:
    return [
        Throttle("throttle_authenticated_api", 1500, 300, lambda r: r.user_id if r.api else None),
        Throttle("throttle_per_token_api", 300, 300, lambda r: r.token_id if r.api else None),
        Throttle("throttle_unauthenticated_api", 300, 300,
                 lambda r: r.throttleable_ip if r.api and r.unauthenticated else None),
        Throttle("throttle_api_media", 30, 1800,
                 lambda r: r.user_id if r.method == "POST" and _MEDIA.fullmatch(r.path) else None),
        Throttle("throttle_api_sign_up", 5, 1800,
                 lambda r: (r.throttleable_ip if r.method == "POST" and r.path == "/api/v1/accounts"
                            else None)),
        Throttle("throttle_authenticated_paging", 300, 900, lambda r: r.user_id if r.paging else None),
        Throttle("throttle_unauthenticated_paging", 300, 900,
                 lambda r: r.throttleable_ip if r.paging and r.unauthenticated else None),
        Throttle("throttle_api_delete", 30, 1800,
                 lambda r: (r.user_id if ((r.method == "POST" and _DELETE_REBLOG.fullmatch(r.path))
                                          or (r.method == "DELETE" and _DELETE_STATUS.fullmatch(r.path)))
                            else None)),
        Throttle("throttle_sign_up_attempts/ip", 25, 300,
                 lambda r: r.throttleable_ip if r.method == "POST" and r.path_matches("/auth") else None),
        Throttle("throttle_login_attempts/ip", 25, 300,
                 lambda r: (r.throttleable_ip if r.method == "POST" and r.path_matches("/auth/sign_in")
                            else None)),
    ]


def env_key(name: str) -> str:
    base = name[len("throttle_"):] if name.startswith("throttle_") else name
    return "STANDIN_THROTTLE_" + re.sub(r"[^A-Za-z0-9]+", "_", base).upper()


def configured_throttles(get: Callable[[str], Optional[str]]) -> list[Throttle]:
    out = []
    for t in default_throttles():
        raw = get(env_key(t.name))
        if raw:
            m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", raw)
            if m and int(m.group(2)) > 0:
                t.limit, t.period = int(m.group(1)), int(m.group(2))
        out.append(t)
    return out


class MemoryStore:
    """In-process counter store (unit tests)."""

    def __init__(self):
        self.data: dict[str, int] = {}
        self.lock = threading.Lock()

    def increment(self, key: str, ttl: int) -> int:
        with self.lock:
            self.data[key] = self.data.get(key, 0) + 1
            return self.data[key]


class RedisStore:
    """Counters in the cache Redis, like Rails.cache (RedisCacheStore, namespace "cache" or
    "<REDIS_NAMESPACE>_cache": Config.cache_namespace)."""

    def __init__(self, redis_client, namespace: str = CACHE_NAMESPACE):
        self.r = redis_client
        self.namespace = namespace

    def key(self, key: str) -> str:
        return f"{self.namespace}:{key}"

    def increment(self, key: str, ttl: int) -> Optional[int]:
        full = self.key(key)
        try:
            p = self.r.pipeline(transaction=False)
            p.incrby(full, 1)
            p.ttl(full)
            count, current_ttl = p.execute()
            if current_ttl is None or current_ttl < 0:
                self.r.expire(full, ttl)
            return int(count)
        except Exception:  # RedisCacheStore's failsafe: errors mean "no count", never throttle
            return None


@dataclass
class Decision:
    safelisted: bool = False
    throttled: Optional[str] = None
    data: dict = field(default_factory=dict)   # name -> {count, limit, period, epoch_time}
    now: float = 0.0

    def headers(self) -> dict[str, str]:
        """X-RateLimit-* for the throttled response, or for the most limited matching throttle."""
        if self.throttled:
            d = self.data[self.throttled]
            return {"X-RateLimit-Limit": str(d["limit"]), "X-RateLimit-Remaining": "0",
                    "X-RateLimit-Reset": reset_time(self.now, d["period"])}
        if not self.data:
            return {}
        name = min(self.data, key=lambda k: self.data[k]["limit"] - self.data[k]["count"])
        d = self.data[name]
        return {"X-RateLimit-Limit": str(d["limit"]),
                "X-RateLimit-Remaining": str(max(0, d["limit"] - d["count"])),
                "X-RateLimit-Reset": reset_time(self.now, d["period"])}


def reset_time(now: float, period: int) -> str:
    """`(now + (period - now.to_i % period)).iso8601(6)` in UTC."""
    t = now + (period - int(now) % period)
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f") + "Z"


class RateLimiter:
    def __init__(self, store, throttles: list[Throttle], clock: Callable[[], float] = time.time):
        self.store = store
        self.throttles = throttles
        self.clock = clock

    def check(self, req: RequestInfo) -> Decision:
        now = self.clock()
        dec = Decision(now=now)
        if req.remote_ip in SAFELIST:
            dec.safelisted = True
            return dec
        for t in self.throttles:
            disc = t.discriminator(req)
            if disc is None or disc == "":
                continue
            epoch = int(now) // t.period
            key = f"{PREFIX}:{epoch}:{t.name}:{disc}"
            ttl = t.period - (int(now) % t.period) + 1
            count = self.store.increment(key, ttl)
            if count is None:
                continue
            dec.data[t.name] = {"count": count, "limit": t.limit, "period": t.period, "epoch_time": int(now)}
            if count > t.limit:
                dec.throttled = t.name
                break  # Rack::Attack stops at the first throttle that trips
        return dec
