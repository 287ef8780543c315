"""The stand-in Mastodon on old, as a client and as the migration see it.

- A status posted through old's nginx (127.0.0.1:8441, SNI and Host = the domain, verified against the test
  CA) is readable back, reaches a follower's home timeline and arrives on the follower's streaming WebSocket.
- Rate limiting behind a proxy that is not trusted, host authorization and force_ssl, checked inside old
  against 127.0.0.1:3000 (and a second web process on the private address for the untrusted peer).
"""

from __future__ import annotations

import json
import socket
import time
import uuid

import pytest

from .tokens import follower_pair

pytestmark = [pytest.mark.docker, pytest.mark.fresh_pair]


@pytest.fixture(scope="module")
def accounts(pair):
    return follower_pair(pair)


def test_status_roundtrip_timeline_and_streaming(pair, accounts):
    from websockets.sync.client import connect

    author, follower = accounts
    port = pair.https_port("old")
    uri = f"wss://{pair.domain}:{port}/api/v1/streaming?stream=user&access_token={follower.token}"
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)   # the published port only
    with connect(uri, sock=raw, ssl=pair.ssl_context(), server_hostname=pair.domain, proxy=None,
                 open_timeout=10, compression=None) as ws:
        text = f"e2e {uuid.uuid4()}"
        posted = pair.json("POST", "/api/v1/statuses", token=author.token,
                           body={"status": text, "visibility": "public"})
        sid = str(posted["id"])
        assert text in posted["content"]

        # readable back
        got = pair.json("GET", f"/api/v1/statuses/{sid}", token=author.token)
        assert str(got["id"]) == sid and text in got["content"]

        # arrives on the follower's stream
        deadline = time.monotonic() + 15
        seen = None
        while time.monotonic() < deadline and seen is None:
            try:
                msg = json.loads(ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            except TimeoutError:
                break
            if msg.get("event") == "update":
                payload = json.loads(msg["payload"]) if isinstance(msg["payload"], str) else msg["payload"]
                if str(payload.get("id")) == sid:
                    seen = payload
        assert seen is not None, "the status did not arrive on the follower's user stream"

    # in the follower's home timeline (feed:home:<id> in Redis, written by the fan-out job)
    deadline = time.monotonic() + 15
    ids: list[str] = []
    while time.monotonic() < deadline:
        status, headers, body = pair.request("GET", "/api/v1/timelines/home", token=follower.token)
        assert status in (200, 206), (status, body[:300])
        ids = [str(s["id"]) for s in json.loads(body)]
        if sid in ids:
            break
        time.sleep(0.5)
    assert sid in ids, "the status is not in the follower's home timeline"


def curl_in_old(pair, url, *args: str) -> tuple[int, dict, str]:
    """curl inside old; returns status, headers (lower-case), body."""
    r = pair.exec("old", "curl", "-sS", "--max-time", "10", "-D", "/dev/stderr", "-o", "/dev/stdout",
                  *args, url)
    head, _, _ = r.stderr.replace("\r\n", "\n").partition("\n\n")   # text mode may have turned CRLF into LF
    lines = head.split("\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return status, headers, r.stdout


def test_host_authorization(pair):
    https = ("-H", "X-Forwarded-Proto: https")
    status, _, _ = curl_in_old(pair, "http://127.0.0.1:3000/api/v1/instance", "-H", "Host: evil.test", *https)
    assert status == 403
    status, _, _ = curl_in_old(pair, "http://127.0.0.1:3000/api/v1/instance", "-H", f"Host: {pair.domain}",
                               *https)
    assert status == 200
    status, _, body = curl_in_old(pair, "http://127.0.0.1:3000/health", "-H", "Host: evil.test")
    assert (status, body.strip()) == (200, "OK")   # /health is exempt


def test_force_ssl(pair):
    host = ("-H", f"Host: {pair.domain}")
    status, headers, _ = curl_in_old(pair, "http://127.0.0.1:3000/api/v1/instance", *host)
    assert status == 301
    assert headers["location"] == f"https://{pair.domain}/api/v1/instance"
    status, _, _ = curl_in_old(pair, "http://127.0.0.1:3000/api/v1/instance", *host,
                               "-H", "X-Forwarded-Proto: https")
    assert status == 200
    status, _, body = curl_in_old(pair, "http://127.0.0.1:3000/health", *host)
    assert (status, body.strip()) == (200, "OK")   # /health is exempt


@pytest.fixture
def extra_web(pair):
    """A second web process on old with the same code and .env.production, bound to 0.0.0.0:3001 (so it has a
    non-loopback peer on the private address) and a small unauthenticated API limit (5 per 60 s)."""
    unit = "mastomig-e2e-web"
    execstart = pair.exec("old", "systemctl", "show", "-p", "ExecStart", "--value", "mastodon-web",
                          check=True).stdout
    # "{ path=/x/bundle ; argv[]=/x/bundle exec puma -C config/puma.rb ; ... }"
    argv = execstart.split("argv[]=", 1)[1].split(" ;", 1)[0].split()
    pair.exec("old", "systemctl", "stop", unit)
    pair.exec("old", "systemctl", "reset-failed", unit)
    pair.exec("old", "systemd-run", f"--unit={unit}", "-p", "User=mastodon",
              "-p", "WorkingDirectory=/home/mastodon/live",
              "-E", "RAILS_ENV=production", "-E", "PORT=3001", "-E", "BIND=0.0.0.0",
              "-E", "STANDIN_THROTTLE_UNAUTHENTICATED_API=5/60", *argv, check=True)
    try:
        pair.sh("old", "for i in $(seq 1 100); do curl -fsS -o /dev/null http://127.0.0.1:3001/health "
                       "&& exit 0; sleep 0.2; done; exit 1", check=True)
        yield 3001
    finally:
        pair.exec("old", "systemctl", "stop", unit)


def test_rate_limit_shared_behind_an_untrusted_proxy(pair, extra_web):
    """Through a trusted proxy (loopback) each X-Forwarded-For client has its own bucket; from a peer that is
    not in TRUSTED_PROXY_IP the header is ignored and every client shares the proxy's address."""
    port = extra_web
    private = pair.info["hosts"]["old"]["address"]
    run = uuid.uuid4().int % 200 + 1
    common = ("-H", f"Host: {pair.domain}", "-H", "X-Forwarded-Proto: https")

    def responses(peer: str, n: int = 12) -> list[tuple[int, dict, str]]:
        return [curl_in_old(pair, f"http://{peer}:{port}/api/v1/instance", *common,
                            "-H", f"X-Forwarded-For: 198.51.{run}.{i + 1}") for i in range(n)]

    trusted = [r[0] for r in responses("127.0.0.1")]
    assert set(trusted) == {200}, trusted
    untrusted = responses(private)
    codes = [r[0] for r in untrusted]
    # 12 requests against 5 per 60 s: at least one fixed window holds 6 of them, even across a boundary
    assert 429 in codes and set(codes) <= {200, 429}, codes
    _, headers, body = next(r for r in untrusted if r[0] == 429)
    assert json.loads(body) == {"error": "Too many requests"}
    assert headers.get("x-ratelimit-limit") == "5"


def test_front_page_served_after_assets_precompile(pair):
    status, headers, body = pair.request("GET", "/", headers={"Accept": "text/html"})
    assert status == 200, body[:300]
    assert pair.exec("old", "test", "-d", "/home/mastodon/live/public/packs").returncode == 0
