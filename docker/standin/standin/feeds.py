"""FeedManager: home feeds in Redis, as Mastodon keeps them.

feed:home:<account_id>   ZSET, score = member = status id, at most MAX_ITEMS (400), trimmed with
                         ZREMRANGEBYRANK
account:<id>:regeneration  exists while a feed is being rebuilt; the home timeline API answers 206 meanwhile
subscribed:timeline:<id>   set by the streaming server while someone listens; only then is a PushUpdateWorker
                           enqueued to PUBLISH the update on `timeline:<id>`
With REDIS_NAMESPACE=<ns> each key and channel is `<ns>:...` (the client adds it: redisconn.NamespacedRedis).
"""

from __future__ import annotations

import heapq
from datetime import datetime

from . import jobs, models
from .db import Session

MAX_ITEMS = 400


def key(type_: str, id_: int, subtype: str | None = None) -> str:
    return f"feed:{type_}:{id_}" + (f":{subtype}" if subtype else "")


def regeneration_key(account_id: int) -> str:
    return f"account:{account_id}:regeneration"


def add_to_feed(r, account_id: int, status_id: int) -> bool:
    r.zadd(key("home", account_id), {str(status_id): status_id})
    return True


def trim(r, account_id: int) -> None:
    r.zremrangebyrank(key("home", account_id), 0, -(MAX_ITEMS + 1))


def push_update_required(r, timeline_id: str) -> bool:
    return bool(r.exists(f"subscribed:{timeline_id}"))


def push_to_home(r, sidekiq_r, account_id: int, status_id: int, update: bool = False) -> bool:
    if not add_to_feed(r, account_id, status_id):
        return False
    trim(r, account_id)
    timeline = f"timeline:{account_id}"
    if push_update_required(r, timeline):
        jobs.push(sidekiq_r, "PushUpdateWorker", [account_id, status_id, timeline, {"update": update}])
    return True


def snowflake_at(dt: datetime | None) -> int:
    """Mastodon::Snowflake.id_at(t, with_random: false)."""
    if dt is None:
        return 0
    from datetime import timezone
    ms = int(dt.replace(tzinfo=timezone.utc).timestamp() * 1000)
    return ms << 16


def populate_home(sess: Session, r, account_id: int) -> int:
    """FeedManager#populate_home: own newest 200, then each followed account's newest 200 (skipping an account
    whose last status is older than the oldest entry once the feed holds 200), trimming to 400 after each;
    added to the existing feed. Same end state as Mastodon's loop, computed with one query for all followed
    accounts' statuses and one write to Redis (Mastodon does a ZADD per status)."""
    limit = MAX_ITEMS // 2
    timeline_key = key("home", account_id)
    heap: list[int] = []          # min-heap of the newest MAX_ITEMS ids (score = member = id)
    members: set[int] = set()

    def add(ids) -> None:         # ids newest first
        for i in ids:
            if i in members:
                continue
            if len(heap) < MAX_ITEMS:
                heapq.heappush(heap, i)
                members.add(i)
            elif i > heap[0]:
                members.discard(heapq.heapreplace(heap, i))
                members.add(i)
            else:
                break             # the rest are older still: trimmed away at once

    add(sorted((int(m) for m in r.zrange(timeline_key, 0, -1)), reverse=True))
    add(models.account_status_ids(sess, account_id, limit, visibilities=(0, 1, 2, 3)))
    by_account: dict[int, list[int]] = {}
    for target_id, status_id in models.followed_statuses(sess, account_id, limit):
        by_account.setdefault(target_id, []).append(status_id)
    for target in models.following_with_last_status(sess, account_id):
        if len(heap) >= limit and snowflake_at(target["last_status_at"]) < heap[0]:
            continue
        add(sorted(by_account.get(target["id"], ()), reverse=True))
    p = r.pipeline(transaction=True)
    if heap:
        p.zadd(timeline_key, {str(i): i for i in heap})
    p.zremrangebyrank(timeline_key, 0, -(MAX_ITEMS + 1))
    p.zcard(timeline_key)
    return p.execute()[-1]


def precompute(sess: Session, r, account_id: int) -> int:
    """PrecomputeFeedService: populate, then clear the regeneration flag (in an ensure block)."""
    try:
        return populate_home(sess, r, account_id)
    finally:
        r.delete(regeneration_key(account_id))


def home_ids(r, account_id: int, limit: int, max_id=None, since_id=None, min_id=None) -> list[int]:
    """HomeFeed#get → Feed#from_redis."""
    k = key("home", account_id)
    max_s = f"({int(max_id)}" if max_id else "+inf"
    if not min_id:
        since_s = f"({int(since_id)}" if since_id else "-inf"
        ids = r.zrevrangebyscore(k, max_s, since_s, start=0, num=limit)
    else:
        ids = r.zrangebyscore(k, f"({int(min_id)}", max_s, start=0, num=limit)
    return sorted((int(i) for i in ids), reverse=True)
