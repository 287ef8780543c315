"""Deterministic seeder: `bin/seed-standin --size small|medium|large|N` or
`bundle exec rails mastodon:seed_standin` with SEED_SIZE=...

The same size gives the same rows every time (ids, usernames, follows, texts, media bytes); only times that
must be relative to "now" (sign-in times, Sidekiq job times) move with the clock.

Rules the tests rely on (also in README.md):
- usernames  user0001 ... userNNNN (4 digits or more), account i (1-based) is users.id = i;
- token      sha256("standin-token:" + username) as lowercase hex, scopes "read write follow push";
- follows    user i follows the next F accounts, wrapping around: user0001 follows user0002 ... user(F+1);
- active     users whose number is a multiple of 10 last signed in 30 days ago (inactive:
             `tootctl feeds build` skips them and they get no seeded home feed); everybody else signed in
             within the last day;
- statuses   status g (0-based) belongs to account (g mod accounts) + 1, created between 2025-01-01 and
             2026-01-01, id = Mastodon snowflake of its created_at;
- home feeds built for active users (own + followed statuses, newest 400);
- Sidekiq    jobs on every queue, `schedule` entries (PublishScheduledStatusWorker, 2-48 h ahead, with rows in
             scheduled_statuses), `retry` entries (ActivityPub::DeliveryWorker to *.invalid inboxes, due 1-5 h
             ahead) and `dead` entries (Web::PushNotificationWorker).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import heapq
import io
import itertools
import json
import os
import random
import shutil
import struct
import sys
import time
import zlib
from datetime import datetime, timedelta, timezone

import psycopg2

from . import config as config_mod
from . import feeds, jobs, render, schema

SIZES = {
    "small": dict(accounts=50, statuses=1_000, follows=10, media=20, media_kb=16),
    "medium": dict(accounts=2_000, statuses=200_000, follows=40, media=500, media_kb=64),
    "large": dict(accounts=20_000, statuses=5_000_000, follows=100, media=4_000, media_kb=256),
}
STATUS_START = datetime(2025, 1, 1, tzinfo=timezone.utc)
STATUS_END = datetime(2026, 1, 1, tzinfo=timezone.utc)
ACCOUNT_START = datetime(2024, 6, 1, tzinfo=timezone.utc)
SCOPES = "read write follow push"
WORDS = ("the a migration server mastodon toot timeline home feed federation post reply boost follow "
         "replica primary standby cutover zero downtime nginx redis sidekiq queue database snapshot backup "
         "coffee weather garden train music book morning evening weekend project code review deploy "
         "hello world today tomorrow small large quick slow bright quiet river mountain city").split()


def token_for(username: str) -> str:
    return hashlib.sha256(f"standin-token:{username}".encode()).hexdigest()


def username(n: int, accounts: int) -> str:
    width = max(4, len(str(accounts)))
    return f"user{n:0{width}d}"


def resolve_size(size: str) -> dict:
    if size in SIZES:
        return dict(SIZES[size])
    if size.isdigit() and int(size) >= 2:
        n = int(size)
        return dict(accounts=n, statuses=n * 100, follows=min(40, n - 1), media=max(1, n // 5), media_kb=64)
    raise SystemExit(f"unknown size {size!r}: use small, medium, large or a number of accounts (>= 2)")


def ms(dt: datetime) -> int:
    return int(dt.timestamp() * 1000)


def snowflake(created_ms: int, tail: int) -> int:
    return (created_ms << 16) | (tail & 0xFFFF)


def naive(ms_value: int) -> str:
    """COPY text for a `timestamp without time zone` (UTC)."""
    dt = datetime.fromtimestamp(ms_value / 1000, timezone.utc)
    return dt.strftime("%Y-%m-%d %H:%M:%S.") + f"{dt.microsecond:06d}"


class Plan:
    def __init__(self, p: dict, domain: str, text_bytes: int):
        self.accounts = int(p["accounts"])
        self.statuses = int(p["statuses"])
        self.follows = max(0, min(int(p["follows"]), self.accounts - 1))
        self.media = min(int(p["media"]), self.statuses)
        self.media_kb = int(p["media_kb"])
        self.domain = domain
        self.text_bytes = text_bytes
        span = ms(STATUS_END) - ms(STATUS_START)
        self.step = span / max(1, self.statuses)
        self.start_ms = ms(STATUS_START)

    def account_id(self, i: int) -> int:      # i: 0-based account index
        return snowflake(ms(ACCOUNT_START) + i * 1000, i)

    def status_ms(self, g: int) -> int:
        return self.start_ms + int(g * self.step)

    def status_id(self, g: int) -> int:
        return snowflake(self.status_ms(g), g)

    def status_owner(self, g: int) -> int:
        return g % self.accounts

    def inactive(self, i: int) -> bool:
        return (i + 1) % 10 == 0

    def followees(self, i: int) -> list[int]:
        return [(i + k) % self.accounts for k in range(1, self.follows + 1)]

    def last_g(self, i: int) -> int | None:
        if i >= self.statuses:
            return None
        return i + self.accounts * ((self.statuses - 1 - i) // self.accounts)

    def status_count(self, i: int) -> int:
        return 0 if i >= self.statuses else (self.statuses - 1 - i) // self.accounts + 1

    def newest_ids(self, i: int, limit: int):
        """Newest `limit` status ids of account i, newest first."""
        last = self.last_g(i)
        if last is None:
            return iter(())
        return (self.status_id(g) for g in range(last, -1, -self.accounts)[:limit])

    def media_status(self, j: int) -> int:
        return (j * self.statuses) // max(1, self.media) + (self.statuses // max(1, self.media)) // 2


class CopySource(io.RawIOBase):
    """A file-like object over an iterator of text lines, for psycopg2's copy_expert."""

    def __init__(self, lines):
        self.lines = iter(lines)
        self.buf = b""

    def readable(self):
        return True

    def read(self, size=-1):
        while size < 0 or len(self.buf) < size:
            chunk = list(itertools.islice(self.lines, 2000))
            if not chunk:
                break
            self.buf += "".join(chunk).encode()
        if size < 0:
            out, self.buf = self.buf, b""
        else:
            out, self.buf = self.buf[:size], self.buf[size:]
        return out

    def readline(self, size=-1):
        return self.read(size)


def copy(cur, table: str, cols: str, lines) -> None:
    cur.copy_expert(f"COPY {table} ({cols}) FROM STDIN", CopySource(lines), size=1 << 20)


WORDY = 2000  # longer texts are a short sentence and a base64 tail (see status_text)


def status_text(rng: random.Random, target: int) -> str:
    """About `target` characters. Up to WORDY, a sentence of WORDS (which compresses about 3x in TOAST).
    Longer ones, only asked for to make a big database quickly (SEED_TEXT_BYTES), end in random base64,
    which is fast to make and takes its full size on disk."""
    if target > WORDY:
        head = status_text(rng, 200)
        return head + " " + base64.b64encode(rng.randbytes((target - len(head)) * 3 // 4)).decode()
    words = []
    n = 0
    while n < target:
        w = rng.choice(WORDS)
        words.append(w)
        n += len(w) + 1
    return " ".join(words).capitalize() + "."


def png_bytes(seed: str, size: int) -> bytes:
    """A valid, deterministic RGB PNG of about `size` bytes (stored, uncompressed deflate)."""
    side = max(1, int((max(size, 64) / 3) ** 0.5))
    rng = random.Random(seed)
    row = side * 3
    raw = bytearray()
    data = rng.randbytes(row * side)
    for y in range(side):
        raw += b"\x00" + data[y * row:(y + 1) * row]

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(bytes(raw), 0)) + \
        chunk(b"IEND", b"")


def log(msg: str) -> None:
    print(msg, flush=True)


def seed(cfg, plan: Plan, reset: bool, jobs_per_queue: int, build_feeds: bool) -> dict:
    t_all = time.monotonic()
    conn = psycopg2.connect(**cfg.db_params())
    conn.autocommit = False
    cur = conn.cursor()
    if not schema.schema_present(cur):
        log("schema missing: loading it (db:schema:load)")
        schema.load(cur, cfg.env_name)
        conn.commit()
    cur.execute("SELECT count(*) FROM accounts")
    if cur.fetchone()[0]:
        if not reset:
            conn.rollback()
            raise SystemExit("the database already has accounts; "
                             "run with --reset (SEED_RESET=1) to replace them")
        log("--reset: truncating the stand-in's tables")
        cur.execute("TRUNCATE media_attachments, scheduled_statuses, statuses, oauth_access_tokens, "
                    "oauth_applications, follows, account_stats, users, accounts RESTART IDENTITY CASCADE")
        conn.commit()
        shutil.rmtree(cfg.root / "public" / "system" / "media_attachments", ignore_errors=True)
    from .redisconn import for_config as redis_for

    r = redis_for(cfg, "base")
    sr = redis_for(cfg, "sidekiq", name=f"Sidekiq-client-PID-{os.getpid()}")
    if reset:
        for client, pattern in ((r, "feed:*"), (r, "account:*:regeneration"), (sr, "queue:*")):
            keys = list(client.scan_iter(pattern, count=1000))
            for i in range(0, len(keys), 1000):
                client.delete(*keys[i:i + 1000])
        sr.delete("schedule", "retry", "dead")

    now = datetime.now(timezone.utc)
    now_ms = ms(now)
    domain = plan.domain
    N = plan.accounts
    log(f"seeding: {N} accounts, {plan.statuses} statuses, {plan.follows} follows each, "
        f"{plan.media} media files of ~{plan.media_kb} KB, domain {domain}")

    t = time.monotonic()
    copy(cur, "accounts", "id, username, display_name, note, uri, url, discoverable, created_at, updated_at",
         (f"{plan.account_id(i)}\t{username(i + 1, N)}\tUser {i + 1}\t\t"
          f"https://{domain}/users/{username(i + 1, N)}\thttps://{domain}/@{username(i + 1, N)}\tt\t"
          f"{naive(ms(ACCOUNT_START) + i * 1000)}\t{naive(ms(ACCOUNT_START) + i * 1000)}\n"
          for i in range(N)))

    def sign_in(i: int) -> str:
        if plan.inactive(i):
            return naive(now_ms - 30 * 86400_000)
        return naive(now_ms - ((i % 12) + 1) * 300_000)

    copy(cur, "users", "id, email, encrypted_password, account_id, confirmed_at, current_sign_in_at, "
                       "last_sign_in_at, locale, created_at, updated_at",
         (f"{i + 1}\t{username(i + 1, N)}@{domain}\t!standin\t{plan.account_id(i)}\t"
          f"{naive(ms(ACCOUNT_START) + i * 1000)}\t{sign_in(i)}\t{sign_in(i)}\ten\t"
          f"{naive(ms(ACCOUNT_START) + i * 1000)}\t{naive(ms(ACCOUNT_START) + i * 1000)}\n"
          for i in range(N)))
    cur.execute("INSERT INTO oauth_applications "
                "(id, name, uid, secret, redirect_uri, scopes, created_at, updated_at)"
                " VALUES (1, 'Stand-in test client', %s, %s, 'urn:ietf:wg:oauth:2.0:oob', %s, %s, %s)",
                (hashlib.sha256(b"standin-app-uid").hexdigest()[:43],
                 hashlib.sha256(b"standin-app-secret").hexdigest()[:43],
                 SCOPES, STATUS_START.replace(tzinfo=None), STATUS_START.replace(tzinfo=None)))
    copy(cur, "oauth_access_tokens", "id, token, created_at, scopes, application_id, resource_owner_id",
         (f"{i + 1}\t{token_for(username(i + 1, N))}\t{naive(ms(ACCOUNT_START) + i * 1000)}\t"
          f"{SCOPES}\t1\t{i + 1}\n"
          for i in range(N)))
    log(f"  accounts, users, tokens: {time.monotonic() - t:.1f} s")

    t = time.monotonic()
    copy(cur, "follows", "id, created_at, updated_at, account_id, target_account_id, show_reblogs, notify",
         (f"{i * plan.follows + k + 1}\t{naive(ms(ACCOUNT_START) + i * 1000)}\t"
          f"{naive(ms(ACCOUNT_START) + i * 1000)}\t"
          f"{plan.account_id(i)}\t{plan.account_id((i + k + 1) % N)}\tt\tf\n"
          for i in range(N) for k in range(plan.follows)))
    log(f"  follows ({N * plan.follows}): {time.monotonic() - t:.1f} s")

    t = time.monotonic()
    rng = random.Random(f"standin-statuses:{N}:{plan.statuses}")
    last_report = [time.monotonic()]

    def status_lines():
        for g in range(plan.statuses):
            i = plan.status_owner(g)
            sid = plan.status_id(g)
            when = naive(plan.status_ms(g))
            text = status_text(rng, max(8, int(rng.gauss(plan.text_bytes, plan.text_bytes / 3))))
            user = username(i + 1, N)
            yield (f"{sid}\thttps://{domain}/users/{user}/statuses/{sid}\t{text}\t{when}\t{when}\tf\t0\t\tf\ten\tt\t"
                   f"{plan.account_id(i)}\n")
            if g and g % 250_000 == 0 and time.monotonic() - last_report[0] > 5:
                last_report[0] = time.monotonic()
                log(f"    statuses: {g}/{plan.statuses}")

    copy(cur, "statuses", "id, uri, text, created_at, updated_at, sensitive, visibility, spoiler_text, "
                          "reply, language, local, account_id", status_lines())
    log(f"  statuses ({plan.statuses}): {time.monotonic() - t:.1f} s")

    t = time.monotonic()
    copy(cur, "account_stats", "id, account_id, statuses_count, following_count, followers_count, "
                               "created_at, updated_at, last_status_at",
         (f"{i + 1}\t{plan.account_id(i)}\t{plan.status_count(i)}\t{plan.follows}\t{plan.follows}\t"
          f"{naive(ms(ACCOUNT_START))}\t{naive(ms(ACCOUNT_START))}\t"
          f"{naive(plan.status_ms(plan.last_g(i))) if plan.last_g(i) is not None else chr(92) + 'N'}\n"
          for i in range(N)))

    # media: files under public/system and rows attached to statuses
    system = cfg.root / "public" / "system"
    media_bytes = 0
    media_lines = []
    small = png_bytes("standin-thumb", 200)
    for j in range(plan.media):
        g = min(plan.statuses - 1, plan.media_status(j))
        i = plan.status_owner(g)
        mid = snowflake(plan.status_ms(g), g)
        name = hashlib.sha1(f"standin-media:{j}".encode()).hexdigest()[:16] + ".png"
        data = png_bytes(f"standin-media:{j}", plan.media_kb * 1024)
        for style, body in (("original", data), ("small", small)):
            path = system / render.media_path(mid, style, name)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(body)
        media_bytes += len(data) + len(small)
        meta = json.dumps({"original": {"size": len(data)}, "small": {"size": len(small)}})
        when = naive(plan.status_ms(g))
        media_lines.append(f"{mid}\t{plan.status_id(g)}\t{name}\timage/png\t{len(data)}\t{when}\t{when}\t{when}\t0\t"
                           f"{meta}\t{plan.account_id(i)}\tStand-in image {j}\t2\n")
    copy(cur, "media_attachments", "id, status_id, file_file_name, file_content_type, file_file_size, "
                                   "file_updated_at, created_at, updated_at, type, file_meta, account_id, "
                                   "description, processing", media_lines)
    log(f"  account_stats, media ({plan.media} files, {media_bytes / 1e6:.1f} MB): "
        f"{time.monotonic() - t:.1f} s")

    # sequences: new rows continue after the seeded ones
    cur.execute("SELECT setval('users_id_seq', %s)", (N,))
    cur.execute("SELECT setval('oauth_access_tokens_id_seq', %s)", (N,))
    cur.execute("SELECT setval('oauth_applications_id_seq', 1)")
    cur.execute("SELECT setval('follows_id_seq', %s)", (max(1, N * plan.follows),))
    cur.execute("SELECT setval('account_stats_id_seq', %s)", (N,))
    cur.execute("SELECT setval('statuses_id_seq', %s)", (max(1, plan.statuses),))
    cur.execute("SELECT setval('accounts_id_seq', %s)", (N,))

    # scheduled statuses (for the `schedule` jobs)
    scheduled = []
    for k, hours in enumerate((2, 6, 12, 24, 48)):
        i = (k * 7) % N
        at = now + timedelta(hours=hours)
        cur.execute("INSERT INTO scheduled_statuses (account_id, scheduled_at, params) VALUES (%s, %s, %s) "
                    "RETURNING id", (plan.account_id(i), at.replace(tzinfo=None),
                                     json.dumps({"text": f"Scheduled status {k + 1} from the seeder",
                                                 "visibility": "public", "media_ids": None,
                                                 "sensitive": False, "spoiler_text": "", "language": "en"})))
        scheduled.append((cur.fetchone()[0], at.timestamp()))
    conn.commit()
    cur.execute("ANALYZE")
    conn.commit()
    conn.close()

    # home feeds in Redis
    t = time.monotonic()
    built = 0
    if build_feeds:
        limit = feeds.MAX_ITEMS // 2
        p = r.pipeline(transaction=False)
        for i in range(N):
            if plan.inactive(i):
                continue
            sources = [plan.newest_ids(a, limit) for a in [i] + plan.followees(i)]
            top = list(itertools.islice(heapq.merge(*sources, reverse=True), feeds.MAX_ITEMS))
            key = feeds.key("home", plan.account_id(i))
            p.delete(key)
            if top:
                p.zadd(key, {str(s): s for s in top})
            built += 1
            if built % 200 == 0:
                p.execute()
        p.execute()
    log(f"  home feeds ({built}): {time.monotonic() - t:.1f} s")

    # Sidekiq: every queue, schedule, retry, dead
    jrng = random.Random(f"standin-jobs:{N}:{plan.statuses}")
    now_f = time.time()
    sid0 = plan.status_id(plan.statuses - 1)
    a0 = plan.account_id(0)
    queue_jobs = {
        "default": lambda k: ("LocalNotificationWorker", [plan.account_id(k % N), sid0, "Status", "status"]),
        "push": lambda k: ("ActivityPub::DistributionWorker",
                           [plan.status_id(max(0, plan.statuses - 1 - k))]),
        "ingress": lambda k: ("ActivityPub::ProcessingWorker",
                              [a0, json.dumps({"type": "Create", "id": f"https://remote.example/activities/{k}"}),
                               False]),
        "mailers": lambda k: ("ActiveJob::QueueAdapters::SidekiqAdapter::JobWrapper",
                              [{"job_class": "ActionMailer::MailDeliveryJob", "job_id": f"seed-mail-{k}",
                                "queue_name": "mailers",
                                "arguments": ["UserMailer", "welcome", "deliver_now",
                                              {"args": [{"_aj_globalid": f"gid://mastodon/User/{k + 1}"}]}],
                                "executions": 0, "locale": "en"}]),
        "pull": lambda k: ("LinkCrawlWorker", [plan.status_id(max(0, plan.statuses - 1 - k))]),
        "scheduler": lambda k: ("Scheduler::FeedCleanupScheduler", []),
    }
    payloads = []
    for q in jobs.QUEUES:
        for k in range(jobs_per_queue):
            klass, args = queue_jobs[q](k)
            extra = {"wrapped": "ActionMailer::MailDeliveryJob"} if q == "mailers" else None
            payloads.append(jobs.build_job(klass, args, queue=q, jid=jobs.new_jid(jrng), created_at=now_f,
                                           extra=extra))
    jobs.push_payloads(sr, payloads, now=now_f)
    for ss_id, at in scheduled:
        job = jobs.build_job("PublishScheduledStatusWorker", [ss_id], jid=jobs.new_jid(jrng),
                             created_at=now_f)
        sr.zadd("schedule", {jobs.dump(job): at})
    for k in range(5):
        job = jobs.build_job("ActivityPub::DeliveryWorker",
                             [json.dumps({"type": "Create",
                                          "actor": f"https://{domain}/users/{username(1, N)}"}),
                              a0, f"https://remote{k + 1}.invalid/inbox"], jid=jobs.new_jid(jrng),
                             created_at=now_f - 3600 * (k + 1))
        job.update({"error_message": f"failed to connect: getaddrinfo: Name or service not known "
                                     f"(remote{k + 1}.invalid)",
                    "error_class": "HTTP::ConnectionError", "failed_at": now_f - 3600 * (k + 1),
                    "retry_count": 3 + k, "retried_at": now_f - 60})
        sr.zadd("retry", {jobs.dump(job): now_f + 3600 * (k + 1)})
    for k in range(3):
        job = jobs.build_job("Web::PushNotificationWorker", [k + 1, 1000 + k], jid=jobs.new_jid(jrng),
                             created_at=now_f - 86400 * (k + 2))
        job.update({"error_message": "failed to connect: getaddrinfo: Name or service not known "
                                     "(push.invalid)",
                    "error_class": "HTTP::ConnectionError", "failed_at": now_f - 86400 * (k + 2),
                    "retry_count": 5, "retried_at": now_f - 86400 * (k + 1),
                    "endpoint": "https://push.invalid/wpush/v2/seed"})
        sr.zadd("dead", {jobs.dump(job): now_f - 86400 * (k + 1)})
    log(f"  sidekiq: {len(payloads)} queued on {len(jobs.QUEUES)} queues, {len(scheduled)} scheduled, "
        "5 retry, 3 dead")
    log(f"seeded in {time.monotonic() - t_all:.1f} s")
    return {"accounts": N, "statuses": plan.statuses, "follows": N * plan.follows, "media": plan.media,
            "media_bytes": media_bytes, "feeds": built}


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("STANDIN_PROCESS", "seed")
    p = argparse.ArgumentParser(prog="seed-standin", description=__doc__.split("\n\n")[0])
    p.add_argument("--size", default=os.environ.get("SEED_SIZE") or "small",
                   help="small | medium | large | N (number of accounts); default $SEED_SIZE or small")
    p.add_argument("--accounts", type=int)
    p.add_argument("--statuses", type=int)
    p.add_argument("--follows", type=int, help="accounts each account follows")
    p.add_argument("--media", type=int, help="number of media files")
    p.add_argument("--media-kb", type=int, help="size of each media file in KB")
    p.add_argument("--text-bytes", type=int, default=int(os.environ.get("SEED_TEXT_BYTES") or 180),
                   help="average status text length (default 180)")
    p.add_argument("--jobs-per-queue", type=int, default=3)
    p.add_argument("--no-feeds", action="store_true", help="do not build home feeds in Redis")
    p.add_argument("--reset", action="store_true", default=bool(os.environ.get("SEED_RESET")),
                   help="replace existing data (truncate tables, clear feeds and Sidekiq sets)")
    a = p.parse_args(sys.argv[1:] if argv is None else argv)
    params = resolve_size(str(a.size))
    for k in ("accounts", "statuses", "follows", "media", "media_kb"):
        v = getattr(a, k)
        if v is not None:
            params[k] = v
    cfg = config_mod.load()
    if datetime.now(timezone.utc) < STATUS_END:
        raise SystemExit("the clock is before 2026-01-01: seeded statuses would be newer than new ones")
    plan = Plan(params, cfg.local_domain, a.text_bytes)
    summary = seed(cfg, plan, a.reset, a.jobs_per_queue, not a.no_feeds)
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
