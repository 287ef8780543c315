#!/usr/bin/python3
"""End-to-end checks of the stand-in against the local development instance (dev/local.sh up && start).

  /usr/bin/python3 docker/standin/dev/smoke.py [CHECK ...]

Talks only to 127.0.0.1. Some checks edit $DEV/live/.env.production and signal the processes started by
dev/local.sh; each restores what it changed. Prints one line per check and "N passed, M failed".
"""

from __future__ import annotations

import asyncio
import hashlib
import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

DEV = Path(os.environ.get("DEV", "/tmp/standin-dev"))
LIVE = DEV / "live"
WEB = int(os.environ.get("WEBPORT", "53000"))
STREAM = int(os.environ.get("STREAMPORT", "54000"))
REDISPORT = int(os.environ.get("REDISPORT", "56379"))
DOMAIN = "social.test"
sys.path.insert(0, str(LIVE))

import psycopg2  # noqa: E402
import redis  # noqa: E402

R = redis.Redis(port=REDISPORT, decode_responses=True)


def pg():
    os.environ.setdefault("RAILS_ENV", "production")
    from standin import config
    conn = psycopg2.connect(**config.load("production", LIVE).db_params())
    conn.autocommit = True
    return conn


def sql(*statements):
    """Each statement in its own autocommit transaction (not `with conn:`, which opens one); last result."""
    c = pg()
    try:
        cur = c.cursor()
        row = None
        for st in statements:
            cur.execute(st)
            row = cur.fetchone() if cur.description else None
        return row
    finally:
        c.close()


def _width():
    try:
        return max(4, len(str(sql("SELECT count(*) FROM accounts")[0])))
    except Exception:
        return 4


WIDTH = _width()


def U(n: int) -> str:
    return f"user{n:0{WIDTH}d}"


def token(user: str) -> str:
    return hashlib.sha256(f"standin-token:{user}".encode()).hexdigest()


def request(method, path, *, tok=None, body=None, headers=None, host=DOMAIN, proto="https", port=WEB,
            source=None, raw=None, ctype=None, timeout=20):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout,
                                      source_address=(source, 0) if source else None)
    h = {"Host": host}
    if proto:
        h["X-Forwarded-Proto"] = proto
    if tok:
        h["Authorization"] = f"Bearer {tok}"
    data = raw
    if body is not None:
        data = json.dumps(body).encode()
        h["Content-Type"] = "application/json"
    if ctype:
        h["Content-Type"] = ctype
    h.update(headers or {})
    conn.request(method, path, body=data, headers=h)
    resp = conn.getresponse()
    out = resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    conn.close()
    return out


def jget(path, **kw):
    st, h, b = request("GET", path, **kw)
    assert st in (200, 206), (path, st, b[:300])
    return json.loads(b)


def pid(name):
    return int((DEV / f"{name}.pid").read_text())


def set_env(**changes):
    p = LIVE / ".env.production"
    lines = [ln for ln in p.read_text().splitlines() if ln.split("=", 1)[0] not in changes]
    lines += [f"{k}={v}" for k, v in changes.items() if v is not None]
    p.write_text("\n".join(lines) + "\n")


def reload_web(wait=True):
    os.kill(pid("web"), signal.SIGUSR1)
    if wait:
        deadline = time.time() + 30
        time.sleep(0.3)
        while time.time() < deadline:
            try:
                if request("GET", "/health", proto=None)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError("web did not come back after reload")


def wait_for(fn, timeout=15.0, interval=0.1):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out; last={last!r}")


def post(user, text, **kw):
    st, h, b = request("POST", "/api/v1/statuses", tok=token(user), body={"status": text}, **kw)
    assert st == 200, (st, b[:300])
    return json.loads(b)


# -- checks ------------------------------------------------------------------------------------------------
def check_health():
    st, h, b = request("GET", "/health", host="whatever.invalid", proto=None)
    assert (st, b) == (200, b"OK") and h["content-type"].startswith("text/plain"), (st, h, b)
    st, h, b = request("GET", "/api/v1/streaming/health", port=STREAM, proto=None)
    assert (st, b) == (200, b"OK"), (st, b)


def check_host_and_ssl():
    assert request("GET", "/api/v1/instance", host="evil.test")[0] == 403
    assert request("GET", "/api/v1/instance", headers={"X-Forwarded-Host": "evil.test"})[0] == 403
    st, h, _ = request("GET", "/api/v1/instance?a=1", proto=None)
    assert st == 301 and h["location"] == f"https://{DOMAIN}/api/v1/instance?a=1", (st, h)
    st, h, _ = request("POST", "/api/v1/statuses", proto="http")
    assert st == 308, st
    st, h, _ = request("GET", "/api/v1/instance", host=f"{DOMAIN}:3000")
    assert st == 200, st
    assert h["cache-control"] == "private, no-store", h


def check_post_read_home():
    me = jget("/api/v1/accounts/verify_credentials", tok=token(U(1)))
    text = f"smoke {uuid.uuid4()}"
    s = post(U(2), text)
    assert isinstance(s["id"], str) and s["content"] == f"<p>{text}</p>"
    got = jget(f"/api/v1/statuses/{s['id']}")
    assert got["id"] == s["id"]
    t0 = time.time()
    wait_for(lambda: any(x["id"] == s["id"] for x in jget("/api/v1/timelines/home", tok=token(U(1)))))
    own = jget("/api/v1/timelines/home", tok=token(U(2)))
    assert any(x["id"] == s["id"] for x in own)
    assert R.zscore(f"feed:home:{me['id']}", s["id"]) == float(s["id"])
    return f"fan-out {time.time() - t0:.2f} s"


def check_idempotency():
    key = str(uuid.uuid4())
    a = post(U(3), "idem", headers={"Idempotency-Key": key})
    b = post(U(3), "idem", headers={"Idempotency-Key": key})
    assert a["id"] == b["id"]


def check_streaming():
    import websockets

    async def run():
        url = f"ws://127.0.0.1:{STREAM}/api/v1/streaming?stream=user&access_token={token(U(1))}"
        async with websockets.connect(url) as ws:
            await asyncio.sleep(0.3)
            text = f"live {uuid.uuid4()}"
            s = await asyncio.get_running_loop().run_in_executor(None, post, U(2), text)
            while True:
                frame = json.loads(await asyncio.wait_for(ws.recv(), 15))
                if frame["event"] == "update" and json.loads(frame["payload"])["id"] == s["id"]:
                    assert frame["stream"] == ["user"]
                    return
        # header and subprotocol auth
    asyncio.run(run())

    async def proto():
        url = f"ws://127.0.0.1:{STREAM}/api/v1/streaming?stream=user"
        async with websockets.connect(url, subprotocols=[token(U(1))]) as ws:
            assert ws.subprotocol == token(U(1))
        async with websockets.connect(url, extra_headers={"Authorization": f"Bearer {token(U(1))}"}):
            pass
        try:
            async with websockets.connect(url + "&access_token=nope"):
                raise AssertionError("invalid token accepted")
        except websockets.exceptions.InvalidStatusCode as e:
            assert e.status_code == 401
    asyncio.run(proto())
    uid = jget("/api/v1/accounts/verify_credentials", tok=token(U(1)))["id"]
    assert R.ttl(f"subscribed:timeline:{uid}") > 1000


def check_media():
    sys.path.insert(0, str(LIVE))
    from standin.seed import png_bytes
    png = png_bytes("smoke", 4000)
    boundary = "----smoke" + uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.png\"\r\n"
            f"Content-Type: image/png\r\n\r\n").encode() + png + \
           (f"\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"description\"\r\n\r\n"
            f"smoke\r\n--{boundary}--\r\n").encode()
    st, h, b = request("POST", "/api/v2/media", tok=token(U(4)), raw=body,
                       ctype=f"multipart/form-data; boundary={boundary}")
    assert st == 200, (st, b[:300])
    m = json.loads(b)
    assert m["url"].startswith(f"https://{DOMAIN}/system/media_attachments/files/")
    path = LIVE / "public" / m["url"].split(f"https://{DOMAIN}/", 1)[1]
    assert path.read_bytes() == png, path
    st, h, b = request("POST", "/api/v1/statuses", tok=token(U(4)),
                       body={"status": "pic", "media_ids": [m["id"]]})
    assert st == 200 and json.loads(b)["media_attachments"][0]["id"] == m["id"], (st, b[:300])


def check_rate_limit_and_proxy():
    set_env(STANDIN_THROTTLE_UNAUTHENTICATED_API="5/60", TRUSTED_PROXY_IP=None)
    reload_web()
    try:
        fwd = f"198.51.100.{os.getpid() % 200 + 1}"
        codes = [request("GET", "/api/v1/instance", headers={"X-Forwarded-For": fwd})[0] for _ in range(6)]
        assert codes == [200] * 5 + [429], codes
        st, h, b = request("GET", "/api/v1/instance", headers={"X-Forwarded-For": fwd})
        assert st == 429 and h["x-ratelimit-limit"] == "5" and h["x-ratelimit-remaining"] == "0" \
            and json.loads(b) == {"error": "Too many requests"}, (st, h, b)
        st, h, _ = request("GET", "/api/v1/instance", headers={"X-Forwarded-For": "198.51.100.250"})
        assert st == 200 and h["x-ratelimit-remaining"] == "4", (st, h)
        assert request("GET", "/api/v1/instance")[0] == 200        # 127.0.0.1 itself: safelisted
        log = (DEV / "log" / "web.log").read_text()
        assert f"remote_ip={fwd} peer=127.0.0.1" in log
        # a proxy that is not trusted: peer 127.0.0.2 with TRUSTED_PROXY_IP=127.0.0.1 → everyone is 127.0.0.2
        set_env(TRUSTED_PROXY_IP="127.0.0.1")
        reload_web()
        codes = [request("GET", "/api/v1/instance", source="127.0.0.2",
                         headers={"X-Forwarded-For": f"203.0.113.{i}"})[0] for i in range(1, 8)]
        assert codes[:5] == [200] * 5 and codes[5:] == [429, 429], codes
        log = (DEV / "log" / "web.log").read_text()
        assert "remote_ip=127.0.0.2 peer=127.0.0.2" in log
        # and a trusted one: the same through 127.0.0.2 once it is listed
        set_env(TRUSTED_PROXY_IP="127.0.0.1, 127.0.0.2")
        reload_web()
        codes = [request("GET", "/api/v1/instance", source="127.0.0.2",
                         headers={"X-Forwarded-For": f"203.0.113.{i}"})[0] for i in range(20, 27)]
        assert codes == [200] * 7, codes
    finally:
        set_env(STANDIN_THROTTLE_UNAUTHENTICATED_API=None, TRUSTED_PROXY_IP="")
        reload_web()


def check_reload_under_load():
    """SIGUSR1 with BOOT_SECONDS=2 while clients post: none refused or failed, PID kept."""
    set_env(BOOT_SECONDS="2")
    reload_web()
    before = pid("web")
    errors, lat, done = [], [], threading.Event()
    posted = []

    def client(i):
        while not done.is_set():
            t0 = time.time()
            try:
                st, _, b = request("POST", "/api/v1/statuses", tok=token(U(i)),
                                   body={"status": f"reload {i} {t0}"}, timeout=30)
                if st != 200:
                    errors.append(st)
                else:
                    posted.append(json.loads(b)["id"])
            except Exception as e:
                errors.append(repr(e))
            lat.append(time.time() - t0)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(1, 5)]
    for t in threads:
        t.start()
    time.sleep(1)
    os.kill(before, signal.SIGUSR1)
    time.sleep(4)
    done.set()
    for t in threads:
        t.join()
    set_env(BOOT_SECONDS=None)
    reload_web()
    assert pid("web") == before and Path(f"/proc/{before}").exists()
    assert not errors, errors[:5]
    assert max(lat) >= 1.5, max(lat)
    return f"{len(posted)} posts, max latency {max(lat):.2f} s, 0 errors"


def check_assets():
    subprocess.run(["/usr/bin/python3", "bin/rails", "assets:clobber"], cwd=LIVE, check=True,
                   env={**os.environ, "RAILS_ENV": "production"}, capture_output=True)
    reload_web()
    st, h, b = request("GET", "/")
    assert st == 500 and b"something went wrong" in b, st
    subprocess.run(["/usr/bin/python3", "bin/rails", "assets:precompile"], cwd=LIVE, check=True,
                   env={**os.environ, "RAILS_ENV": "production", "STANDIN_ASSETS_SECONDS": "0"},
                   capture_output=True)
    assert request("GET", "/")[0] == 500        # Webpacker cached the missing manifest at the first request
    reload_web()
    st, h, b = request("GET", "/")
    assert st == 200 and b"/packs/js/application-" in b, st


def check_tootctl():
    env = {**os.environ, "RAILS_ENV": "production"}
    uid = jget("/api/v1/accounts/verify_credentials", tok=token(U(5)))["id"]
    R.delete(f"feed:home:{uid}")
    R.set(f"account:{uid}:regeneration", "1")
    st, _, _ = request("GET", "/api/v1/timelines/home", tok=token(U(5)))
    assert st == 206, st
    p = subprocess.run(["bin/tootctl", "feeds", "build", "--dry-run"], cwd=LIVE, env=env, capture_output=True,
                       text=True)
    assert p.returncode == 0 and "(DRY RUN)" in p.stdout, p
    p = subprocess.run(["bin/tootctl", "feeds", "build", U(5)], cwd=LIVE, env=env, capture_output=True,
                       text=True)
    assert p.returncode == 0 and p.stdout.strip() == "OK", p
    assert R.zcard(f"feed:home:{uid}") > 0 and not R.exists(f"account:{uid}:regeneration")
    p = subprocess.run(["bin/tootctl", "feeds", "build", "--all", "-c", "3"], cwd=LIVE, env=env,
                       capture_output=True, text=True)
    assert p.returncode == 0 and "Regenerated feeds for " in p.stdout and "Progress: |" in p.stdout, p
    p = subprocess.run(["bin/tootctl", "feeds", "build", "nobody"], cwd=LIVE, env=env, capture_output=True,
                       text=True)
    assert p.returncode == 1 and "No such account" in p.stdout, p
    p = subprocess.run(["bin/tootctl", "feeds", "build"], cwd=LIVE, capture_output=True, text=True,
                       env={k: v for k, v in os.environ.items() if k != "RAILS_ENV"})
    assert p.returncode == 1, p                  # development environment: no .env.production
    return p.stderr.strip().splitlines()[0][:80]


def _process_hash():
    for ident in R.smembers("processes"):
        if R.exists(ident) and f":{pid('sidekiq')}:" in ident:
            return ident, R.hgetall(ident)
    return None, {}


def check_sidekiq_layout():
    ident, h = wait_for(lambda: _process_hash() if _process_hash()[0] else None, timeout=15)
    info = json.loads(h["info"])
    assert h["quiet"] == "false" and "busy" in h and float(h["beat"]) > time.time() - 15, h
    assert info["identity"] == ident and set(info["queues"]) >= {"default", "push", "ingress", "mailers",
                                                                  "pull", "scheduler"}
    assert 0 < R.ttl(ident) <= 60
    assert R.zcard("schedule") >= 5 and R.zcard("retry") >= 5 and R.zcard("dead") >= 3
    assert {"default", "push", "ingress", "mailers", "pull", "scheduler"} <= R.smembers("queues")
    job = json.loads(R.zrange("retry", 0, 0)[0])
    assert {"jid", "class", "args", "queue", "retry", "created_at", "retry_count", "error_class"} <= set(job)


def check_sidekiq_signals():
    """TSTP: quiet at the next heartbeat, nothing fetched; TERM: running job pushed back, process entry
    gone."""
    sys.path.insert(0, str(LIVE))
    from standin import jobs
    # a slow job is running, then quiet
    jobs.push(R, "Standin::SlowWorker", [60])
    ident = wait_for(lambda: next((i for i in R.smembers("processes") if f":{pid('sidekiq')}:" in i), None))
    wait_for(lambda: R.hlen(f"{ident}:work") == 1, timeout=15)
    work = json.loads(next(iter(R.hgetall(f"{ident}:work").values())))
    assert work["queue"] == "default" and json.loads(work["payload"])["class"] == "Standin::SlowWorker"
    os.kill(pid("sidekiq"), signal.SIGTSTP)
    wait_for(lambda: R.hget(ident, "quiet") == "true", timeout=15)
    marker = jobs.push(R, "LinkCrawlWorker", [1])
    time.sleep(3)
    assert any(json.loads(j)["jid"] == marker["jid"] for j in R.lrange("queue:pull", 0, -1)), \
        "quiet fetched a job"
    # TERM with a 60 s job running: Sidekiq waits -t (5 s here), then requeues it
    p = pid("sidekiq")
    t0 = time.time()
    os.kill(p, signal.SIGTERM)
    wait_for(lambda: not Path(f"/proc/{p}").exists()
             or Path(f"/proc/{p}/status").read_text().find("zombie") > 0, timeout=40)
    took = time.time() - t0
    assert ident not in R.smembers("processes") and not R.exists(f"{ident}:work")
    q = [json.loads(j) for j in R.lrange("queue:default", 0, -1)]
    slow = [j for j in q if j["class"] == "Standin::SlowWorker"]
    assert slow, "the running job was not pushed back"
    # restart sidekiq (dev/local.sh start) and clean up the slow job
    R.lrem("queue:default", 0, jobs.dump(slow[0]))
    subprocess.run([str(Path(__file__).with_name("local.sh")), "start"], check=True, capture_output=True)
    wait_for(lambda: not any(json.loads(j)["jid"] == marker["jid"] for j in R.lrange("queue:pull", 0, -1)),
             20)
    return f"stopped in {took:.1f} s"


def check_retry_and_dead():
    sys.path.insert(0, str(LIVE))
    from standin import jobs
    j = jobs.push(R, "Standin::FailingWorker", ["boom"], retry=1)
    found = wait_for(lambda: [x for x in R.zrange("retry", 0, -1, withscores=True)
                              if json.loads(x[0])["jid"] == j["jid"]])
    payload, score = found[0]
    job = json.loads(payload)
    assert (job["retry_count"] == 0 and job["error_class"] == "RuntimeError"
            and 13 <= score - time.time() <= 25), job
    R.zrem("retry", payload)
    # due now: the poller moves it back, it fails again → dead
    R.zadd("retry", {payload: time.time() - 1})
    wait_for(lambda: any(json.loads(x)["jid"] == j["jid"] for x in R.zrange("dead", 0, -1)), timeout=30)
    for x in R.zrange("dead", 0, -1):
        if json.loads(x)["jid"] == j["jid"]:
            R.zrem("dead", x)


def check_scheduled_status():
    from datetime import datetime, timedelta, timezone
    at = (datetime.now(timezone.utc) + timedelta(minutes=10)).isoformat()
    text = f"later {uuid.uuid4()}"
    st, h, b = request("POST", "/api/v1/statuses", tok=token(U(6)), body={"status": text, "scheduled_at": at})
    assert st == 200, (st, b)
    ss = json.loads(b)
    entry = [x for x in R.zrange("schedule", 0, -1, withscores=True)
             if json.loads(x[0])["args"] == [int(ss["id"])]]
    assert entry and abs(entry[0][1] - datetime.fromisoformat(at).timestamp()) < 2
    R.zadd("schedule", {entry[0][0]: time.time() - 1})   # make it due
    wait_for(lambda: any(s["content"] == f"<p>{text}</p>" for s in jget(
        "/api/v1/timelines/home", tok=token(U(6)), timeout=5)), timeout=30)


def check_reload_rereads_env():
    """A reload picks up a changed .env.production (here: a wrong DB_PORT, then the right one)."""
    env = (LIVE / ".env.production").read_text()
    good = [ln for ln in env.splitlines() if ln.startswith("DB_PORT=")][0].split("=", 1)[1]
    set_env(DB_PORT="1")
    try:
        reload_web()
        assert request("GET", "/health")[0] == 200                       # no database needed
        st, _, b = request("GET", "/api/v1/instance")
        assert st == 500 and json.loads(b) == {"error": "Internal Server Error"}, (st, b)
    finally:
        set_env(DB_PORT=good)
        reload_web()
    assert request("GET", "/api/v1/instance")[0] == 200


def check_connections_killed():
    """Killed PostgreSQL backends and Redis clients: every process reconnects by itself."""
    import websockets
    jget("/api/v1/timelines/home", tok=token(U(1)))
    killed_pg = sql("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE usename = 'mastodon' AND pid <> pg_backend_pid()")[0]

    async def run():
        url = f"ws://127.0.0.1:{STREAM}/api/v1/streaming?stream=user&access_token={token(U(1))}"
        async with websockets.connect(url) as ws:
            await asyncio.sleep(0.3)
            killed = R.client_kill_filter(_type="pubsub") + R.client_kill_filter(_type="normal", skipme=True)
            await asyncio.sleep(1.5)       # the subscriber reconnects and resubscribes
            s = await asyncio.get_running_loop().run_in_executor(None, post, U(2), "after kill")
            while True:
                frame = json.loads(await asyncio.wait_for(ws.recv(), 20))
                if frame["event"] == "update" and json.loads(frame["payload"])["id"] == s["id"]:
                    return killed
    killed_redis = asyncio.run(run())
    return (f"{killed_pg} PostgreSQL backends and {killed_redis} Redis clients killed; "
            "post, fan-out, stream OK")


def check_read_only_database():
    """default_transaction_read_only on: posts fail with 500, reads of a used token still work."""
    jget("/api/v1/timelines/home", tok=token(U(7)))       # token used: no tracking write for 24 h
    terminate = ("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE usename = 'mastodon' "
                 "AND pid <> pg_backend_pid()")
    sql("ALTER DATABASE mastodon_production SET default_transaction_read_only = on", terminate)
    try:
        st, _, b = request("POST", "/api/v1/statuses", tok=token(U(7)), body={"status": "ro"})
        assert st == 500, (st, b)
        assert request("GET", "/api/v1/timelines/home", tok=token(U(7)))[0] == 200
    finally:   # the setting is advisory: any session may switch it off for itself
        sql("SET default_transaction_read_only = off",
            "ALTER DATABASE mastodon_production RESET default_transaction_read_only", terminate)
    post(U(7), "rw again")


CHECKS = [check_health, check_host_and_ssl, check_post_read_home, check_idempotency, check_streaming,
          check_media, check_sidekiq_layout, check_retry_and_dead, check_scheduled_status, check_tootctl,
          check_assets, check_rate_limit_and_proxy, check_reload_under_load, check_reload_rereads_env,
          check_connections_killed, check_read_only_database, check_sidekiq_signals]


def main(names):
    chosen = [c for c in CHECKS if not names or c.__name__ in names or c.__name__[6:] in names]
    passed = failed = 0
    for c in chosen:
        t0 = time.time()
        try:
            note = c()
            passed += 1
            print(f"PASS {c.__name__} ({time.time() - t0:.1f} s){': ' + note if note else ''}", flush=True)
        except Exception as e:
            failed += 1
            print(f"FAIL {c.__name__} ({time.time() - t0:.1f} s): {type(e).__name__}: {e}", flush=True)
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
