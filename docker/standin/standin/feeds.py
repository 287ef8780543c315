"""FeedManager: home feeds in Redis, as Mastodon keeps them.

feed:home:<account_id>   ZSET, score = member = status id, at most MAX_ITEMS (400), trimmed with ZREMRANGEBYRANK
account:<id>:regeneration  exists while a feed is being rebuilt; the home timeline API answers 206 meanwhile
subscribed:timeline:<id>   set by the streaming server while someone listens; only then is a PushUpdateWorker
                           enqueued to PUBLISH the update on `timeline:<id>`
"""

from __future__ import annotations

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
    """FeedManager#populate_home: own newest 200, then each followed account's newest 200 (skipping accounts
    that cannot reach a full feed), trimming to 400 as it goes. Adds to the existing feed; returns its size."""
    limit = MAX_ITEMS // 2
    timeline_key = key("home", account_id)
    own = models.account_status_ids(sess, account_id, limit, visibilities=(0, 1, 2, 3))
    if own:
        r.zadd(timeline_key, {str(i): i for i in own})
    for target in models.following_with_last_status(sess, account_id):
        if r.zcard(timeline_key) >= limit:
            oldest = r.zrange(timeline_key, 0, 0, withscores=True)
            if oldest and snowflake_at(target["last_status_at"]) < int(oldest[0][1]):
                continue
        ids = models.account_status_ids(sess, target["id"], limit, visibilities=(0, 1, 2))
        if ids:
            r.zadd(timeline_key, {str(i): i for i in ids})
        trim(r, account_id)
    trim(r, account_id)
    return r.zcard(timeline_key)


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
