"""Job classes. Names and arguments are Mastodon's; bodies do what the migration can observe.

Fan-out: web enqueues DistributionWorker(status_id) → it pushes the author's own feed and enqueues
FeedInsertWorker(status_id, follower_id, "home", {"update"=>false}) per local follower → FeedInsertWorker adds
to feed:home:<follower> (trim 400) and, when someone is subscribed to the streaming API, enqueues
PushUpdateWorker(account_id, status_id, "timeline:<id>", {...}) → PUBLISH timeline:<id>
{"event":"update","payload":{...status...},"queued_at":<ms>}.

Failures: any job whose arguments contain a URL on a `.invalid` host raises HTTP::ConnectionError (there is
no remote server), so the seeder's ActivityPub::DeliveryWorker / Web::PushNotificationWorker jobs fail, retry
with Sidekiq's backoff and end in `dead` (or are dropped, for `dead: false` classes) as they would for real.
Unknown classes succeed after a short sleep.
"""

from __future__ import annotations

import json
import re
import time
from typing import Callable

from . import feeds, jobs, models, render, services

_INVALID_URL = re.compile(r"https?://([^/\s\"']+)")


class JobError(Exception):
    """An error with a Ruby class name, as Sidekiq records it in error_class."""

    ruby_class = "StandardError"

    def __init__(self, message: str, ruby_class: str | None = None):
        super().__init__(message)
        if ruby_class:
            self.ruby_class = ruby_class


class Context:
    def __init__(self, cfg, db, redis, sidekiq_redis, stopping: Callable[[], bool] = lambda: False):
        self.cfg, self.db, self.redis, self.sidekiq_redis = cfg, db, redis, sidekiq_redis
        self.domain = cfg.local_domain
        self.stopping = stopping


def _find_invalid_host(obj) -> str | None:
    if isinstance(obj, str):
        for host in _INVALID_URL.findall(obj):
            if host.split(":")[0].endswith(".invalid"):
                return host
    elif isinstance(obj, list):
        for x in obj:
            h = _find_invalid_host(x)
            if h:
                return h
    elif isinstance(obj, dict):
        for x in obj.values():
            h = _find_invalid_host(x)
            if h:
                return h
    return None


def perform(ctx: Context, job: dict) -> None:
    klass = job.get("class", "")
    args = job.get("args") or []
    host = _find_invalid_host(args)
    if host:
        raise JobError(f"failed to connect: getaddrinfo: Name or service not known ({host})",
                       "HTTP::ConnectionError")
    fn = HANDLERS.get(klass)
    if fn is None:
        time.sleep(0.05)
        return
    fn(ctx, *args)


def _status_payload(ctx: Context, sess, status_id: int, viewer: int | None) -> dict | None:
    rows = models.load_statuses(sess, [status_id])
    if not rows:
        return None
    s, acc, media = rows[0]
    return render.status_json(s, acc, media, ctx.domain, viewer)


def distribution_worker(ctx: Context, status_id, options=None) -> None:
    sess = ctx.db.session()
    s = sess.one("SELECT id, account_id, visibility, local, reply FROM statuses "
                 "WHERE id = %s AND deleted_at IS NULL",
                 (int(status_id),))
    if s is None:
        return  # ActiveRecord::RecordNotFound → true
    update = bool((options or {}).get("update"))
    if s["local"] is not False:
        # deliver_to_self!
        feeds.push_to_home(ctx.redis, ctx.sidekiq_redis, s["account_id"], s["id"], update)
    if s["visibility"] != 3:
        followers = models.local_follower_ids(sess, s["account_id"])
        for i in range(0, len(followers), 1000):                                            # find_in_batches
            jobs.push_bulk(ctx.sidekiq_redis, "FeedInsertWorker",
                           [[s["id"], f, "home", {"update": update}] for f in followers[i:i + 1000]])
    if s["visibility"] == 0 and not s["reply"]:                                              # public streams
        payload = _status_payload(ctx, sess, s["id"], None)
        if payload:
            msg = json.dumps({"event": "status.update" if update else "update", "payload": payload,
                              "queued_at": int(time.time() * 1000)}, separators=(",", ":"))
            ctx.redis.publish("timeline:public", msg)
            if s["local"] is not False:
                ctx.redis.publish("timeline:public:local", msg)


def feed_insert_worker(ctx: Context, status_id, account_id, type_="home", options=None) -> None:
    sess = ctx.db.session()
    s = sess.one("SELECT id FROM statuses WHERE id = %s AND deleted_at IS NULL", (int(status_id),))
    acc = sess.one("SELECT id FROM accounts WHERE id = %s", (int(account_id),))
    if s is None or acc is None or type_ not in ("home", "tags"):
        return
    feeds.push_to_home(ctx.redis, ctx.sidekiq_redis, acc["id"], s["id"], bool((options or {}).get("update")))


def push_update_worker(ctx: Context, account_id, status_id, timeline_id=None, options=None) -> None:
    sess = ctx.db.session()
    payload = _status_payload(ctx, sess, int(status_id), int(account_id))
    if payload is None:
        return
    update = bool((options or {}).get("update"))
    msg = json.dumps({"event": "status.update" if update else "update", "payload": payload,
                      "queued_at": int(time.time() * 1000)}, separators=(",", ":"))
    ctx.redis.publish(timeline_id or f"timeline:{int(account_id)}", msg)


def regeneration_worker(ctx: Context, account_id) -> None:
    feeds.precompute(ctx.db.session(), ctx.redis, int(account_id))


def merge_worker(ctx: Context, from_account_id, into_account_id, *rest) -> None:
    """FeedManager#merge_into_home: the followed account's newest statuses into the follower's feed."""
    sess = ctx.db.session()
    limit = feeds.MAX_ITEMS // 4
    key = feeds.key("home", int(into_account_id))
    ids = models.account_status_ids(sess, int(from_account_id), limit, visibilities=(0, 1, 2))
    if ctx.redis.zcard(key) >= limit:
        oldest = ctx.redis.zrange(key, 0, 0, withscores=True)
        if oldest:
            ids = [i for i in ids if i > int(oldest[0][1])]
    if ids:
        ctx.redis.zadd(key, {str(i): i for i in ids})
    feeds.trim(ctx.redis, int(into_account_id))


def unmerge_worker(ctx: Context, from_account_id, into_account_id, *rest) -> None:
    sess = ctx.db.session()
    key = feeds.key("home", int(into_account_id))
    rows = sess.all("SELECT id FROM statuses WHERE account_id = %s", (int(from_account_id),))
    ids = [str(r["id"]) for r in rows]
    for i in range(0, len(ids), 1000):
        ctx.redis.zrem(key, *ids[i:i + 1000])


def publish_scheduled_status_worker(ctx: Context, scheduled_status_id) -> None:
    services.publish_scheduled(ctx.db.session(), ctx.redis, ctx.sidekiq_redis, int(scheduled_status_id))


def slow_worker(ctx: Context, seconds=5, *rest) -> None:
    """Standin::SlowWorker(seconds): a job that takes a while (drain / shutdown tests)."""
    deadline = time.monotonic() + float(seconds)
    while time.monotonic() < deadline:
        time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))


def failing_worker(ctx: Context, message="Standin::FailingWorker always fails", *rest) -> None:
    raise JobError(str(message), "RuntimeError")


def noop(ctx: Context, *args) -> None:
    return None


HANDLERS: dict[str, Callable] = {
    "DistributionWorker": distribution_worker,
    "FeedInsertWorker": feed_insert_worker,
    "PushUpdateWorker": push_update_worker,
    "RegenerationWorker": regeneration_worker,
    "MergeWorker": merge_worker,
    "UnmergeWorker": unmerge_worker,
    "PublishScheduledStatusWorker": publish_scheduled_status_worker,
    "ActivityPub::DistributionWorker": noop,     # no remote followers in the stand-in
    "LinkCrawlWorker": noop,
    "Standin::SlowWorker": slow_worker,
    "Standin::FailingWorker": failing_worker,
}
