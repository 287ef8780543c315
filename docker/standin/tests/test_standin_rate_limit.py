from standin import rate_limit as rl


class Clock:
    def __init__(self, t=1_000_000.0):
        self.t = t

    def __call__(self):
        return self.t


def limiter(clock, **over):
    get = {rl.env_key(k): v for k, v in over.items()}.get
    return rl.RateLimiter(rl.MemoryStore(), rl.configured_throttles(get), clock)


def req(ip, path="/api/v1/instance", method="GET", user=None, token=None, params=None):
    return rl.RequestInfo(method, path, ip, ip, user, token, params or {})


def test_unauthenticated_api_per_ip_window():
    clock = Clock(1_000_020.0)
    lim = limiter(clock, throttle_unauthenticated_api="5/60")
    results = [lim.check(req("203.0.113.1")) for _ in range(6)]
    assert [bool(d.throttled) for d in results] == [False] * 5 + [True]
    assert results[-1].throttled == "throttle_unauthenticated_api"
    h = results[-1].headers()
    assert h["X-RateLimit-Limit"] == "5" and h["X-RateLimit-Remaining"] == "0"
    assert h["X-RateLimit-Reset"].endswith("Z")
    assert not lim.check(req("203.0.113.2")).throttled          # another address has its own counter
    clock.t += 60                                               # next window
    assert not lim.check(req("203.0.113.1")).throttled


def test_headers_report_most_limited_throttle():
    lim = limiter(Clock())
    d = lim.check(req("203.0.113.1"))
    assert d.headers()["X-RateLimit-Remaining"] == "299" and d.headers()["X-RateLimit-Limit"] == "300"


def test_safelist_exact_loopback():
    lim = limiter(Clock(), throttle_unauthenticated_api="1/60")
    for _ in range(5):
        d = lim.check(req("127.0.0.1"))
        assert d.safelisted and not d.throttled and d.headers() == {}
    lim.check(req("127.0.0.2"))
    assert lim.check(req("127.0.0.2")).throttled             # only 127.0.0.1 and ::1 are safelisted


def test_authenticated_requests_are_keyed_by_user_and_token():
    lim = limiter(Clock(), throttle_per_token_api="2/300")
    assert not lim.check(req("203.0.113.1", user=1, token=10)).throttled
    assert not lim.check(req("203.0.113.1", user=1, token=10)).throttled
    assert lim.check(req("203.0.113.1", user=1, token=10)).throttled == "throttle_per_token_api"
    assert not lim.check(req("203.0.113.1", user=2, token=20)).throttled  # same address, another user


def test_non_api_paths_are_not_api_throttled():
    lim = limiter(Clock(), throttle_unauthenticated_api="1/60")
    for _ in range(3):
        assert not lim.check(req("203.0.113.1", path="/health")).throttled


def test_override_parsing_ignores_garbage():
    get = {"STANDIN_THROTTLE_UNAUTHENTICATED_API": "nonsense"}.get
    t = {x.name: x for x in rl.configured_throttles(get)}
    assert (t["throttle_unauthenticated_api"].limit, t["throttle_unauthenticated_api"].period) == (300, 300)


def test_store_failure_fails_open():
    class Broken:
        def increment(self, key, ttl):
            return None
    lim = rl.RateLimiter(Broken(),
                         rl.configured_throttles({"STANDIN_THROTTLE_UNAUTHENTICATED_API": "0/60"}.get),
                         Clock())
    assert not lim.check(req("203.0.113.1")).throttled
