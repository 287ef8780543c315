"""Sidekiq's Redis layout and job JSON (Sidekiq 6.5, the version Mastodon 4.3 ships).

Keys (with REDIS_NAMESPACE=<ns> each is `<ns>:<key>`, through redisconn.NamespacedRedis, as redis-namespace
does in Mastodon <= 4.3; the code here always names them bare):
  queues                  SET of queue names (SADD on every push)
  queue:<name>            LIST of job JSON; LPUSH to enqueue, BRPOP to fetch, RPUSH to requeue
  schedule / retry / dead ZSET, score = epoch seconds (float), member = job JSON
  processes               SET of process identities "<hostname>:<pid>:<12 hex>"
  <identity>              HASH info/busy/beat/quiet/rss/rtt_us, TTL 60 s
  <identity>:work         HASH tid -> {"queue","payload","run_at"}, TTL 60 s
  <identity>-signals      LIST of signal names (Web UI quiet/stop)
  stat:processed, stat:failed, stat:processed:<date>, stat:failed:<date>
"""

from __future__ import annotations

import json
import random
import secrets
import time
from typing import Iterable, Optional

QUEUES = ("default", "push", "ingress", "mailers", "pull", "scheduler")
# config/sidekiq.yml of Mastodon 4.3: [default, 8], [push, 6], [ingress, 4], [mailers, 2], [pull], [scheduler]
QUEUE_WEIGHTS = (("default", 8), ("push", 6), ("ingress", 4), ("mailers", 2), ("pull", 1), ("scheduler", 1))
DEFAULT_MAX_RETRIES = 25
DEAD_MAX_JOBS = 10_000
DEAD_TIMEOUT = 180 * 24 * 3600

# sidekiq_options of the classes the stand-in knows (Mastodon's values where it matters)
WORKER_OPTIONS: dict[str, dict] = {
    "DistributionWorker": {"queue": "default"},
    "FeedInsertWorker": {"queue": "default"},
    "PushUpdateWorker": {"queue": "default"},
    "RegenerationWorker": {"queue": "default"},
    "MergeWorker": {"queue": "default"},
    "UnmergeWorker": {"queue": "default"},
    "PublishScheduledStatusWorker": {"queue": "default"},
    "LocalNotificationWorker": {"queue": "default"},
    "ActivityPub::DistributionWorker": {"queue": "push"},
    "ActivityPub::DeliveryWorker": {"queue": "push", "retry": 16, "dead": False},
    "Web::PushNotificationWorker": {"queue": "push", "retry": 5},
    "ActivityPub::ProcessingWorker": {"queue": "ingress", "retry": 8},
    "ActionMailer::MailDeliveryJob": {"queue": "mailers"},
    "LinkCrawlWorker": {"queue": "pull", "retry": 0},
    "Scheduler::ScheduledStatusesScheduler": {"queue": "scheduler", "retry": 0},
    "Scheduler::AccountsStatusesCleanupScheduler": {"queue": "scheduler", "retry": 0},
    "Scheduler::FeedCleanupScheduler": {"queue": "scheduler", "retry": 0},
    "Standin::SlowWorker": {"queue": "default"},
}


def dump(job: dict) -> str:
    return json.dumps(job, separators=(",", ":"))


def new_jid(rng: Optional[random.Random] = None) -> str:
    return rng.getrandbits(96).to_bytes(12, "big").hex() if rng else secrets.token_hex(12)


def build_job(klass: str, args: list, queue: Optional[str] = None, retry=None, jid: Optional[str] = None,
              created_at: Optional[float] = None, extra: Optional[dict] = None) -> dict:
    """Sidekiq::Client#normalize_item: defaults ("retry", "queue") merged first, then
    class/args/jid/created_at."""
    opts = WORKER_OPTIONS.get(klass, {})
    job: dict = {"retry": opts.get("retry", True) if retry is None else retry,
                 "queue": queue or opts.get("queue", "default")}
    if "dead" in opts:
        job["dead"] = opts["dead"]
    if extra:
        job.update(extra)
    job["class"] = klass
    job["args"] = list(args)
    job["jid"] = jid or new_jid()
    job["created_at"] = time.time() if created_at is None else created_at
    return job


def push(r, klass: str, args: list, queue: Optional[str] = None, **kw) -> dict:
    """perform_async: SADD queues + LPUSH queue:<q>, atomically (MULTI), with enqueued_at set."""
    job = build_job(klass, args, queue=queue, **kw)
    push_payloads(r, [job])
    return job


def push_bulk(r, klass: str, args_list: Iterable[list], queue: Optional[str] = None) -> list[dict]:
    jobs = [build_job(klass, a, queue=queue) for a in args_list]
    if jobs:
        push_payloads(r, jobs)
    return jobs


def push_payloads(r, jobs: list[dict], now: Optional[float] = None) -> None:
    now = time.time() if now is None else now
    by_queue: dict[str, list[str]] = {}
    for job in jobs:
        job["enqueued_at"] = now
        by_queue.setdefault(job["queue"], []).append(dump(job))
    p = r.pipeline(transaction=True)
    for q, payloads in by_queue.items():
        p.sadd("queues", q)
        p.lpush(f"queue:{q}", *payloads)
    p.execute()


def schedule(r, klass: str, args: list, at: float, queue: Optional[str] = None, **kw) -> dict:
    """perform_at: ZADD schedule <at> <json> (no enqueued_at; "at" is not kept in the payload)."""
    job = build_job(klass, args, queue=queue, **kw)
    r.zadd("schedule", {dump(job): at})
    return job


def weighted_queue_order(weights=QUEUE_WEIGHTS, rng: random.Random = random) -> list[str]:
    """BasicFetch#queues_cmd for weighted queues: each queue appears `weight` times, shuffled,
    de-duplicated."""
    expanded = [q for q, w in weights for _ in range(max(1, int(w)))]
    rng.shuffle(expanded)
    seen: list[str] = []
    for q in expanded:
        if q not in seen:
            seen.append(q)
    return [f"queue:{q}" for q in seen]


def max_retries(job: dict) -> int:
    r = job.get("retry", True)
    if r is True:
        return DEFAULT_MAX_RETRIES
    if r is False or r is None:
        return 0
    try:
        return int(r)
    except (TypeError, ValueError):
        return DEFAULT_MAX_RETRIES


def retry_delay(count: int, rng: random.Random = random) -> int:
    """Sidekiq's default backoff: count**4 + 15 + rand(10) * (count + 1) seconds."""
    return count ** 4 + 15 + rng.randrange(10) * (count + 1)


def record_failure(job: dict, error_class: str, error_message: str, now: Optional[float] = None,
                   rng: random.Random = random) -> tuple[str, Optional[float]]:
    """Sidekiq::JobRetry#attempt_retry. Mutates `job`; returns ("retry", at) / ("dead", now) /
    ("discard", None)."""
    now = time.time() if now is None else now
    if job.get("retry") is False:
        return "discard", None
    job["error_message"] = error_message[:10000]
    job["error_class"] = error_class
    if "retry_count" in job:
        job["retried_at"] = now
        job["retry_count"] = int(job["retry_count"]) + 1
    else:
        job["failed_at"] = now
        job["retry_count"] = 0
    count = job["retry_count"]
    if count < max_retries(job):
        return "retry", now + retry_delay(count, rng)
    if job.get("dead") is False:
        return "discard", None
    return "dead", now


def send_to_morgue(r, job: dict, now: Optional[float] = None) -> None:
    now = time.time() if now is None else now
    p = r.pipeline(transaction=True)
    p.zadd("dead", {dump(job): now})
    p.zremrangebyscore("dead", "-inf", now - DEAD_TIMEOUT)
    p.zremrangebyrank("dead", 0, -(DEAD_MAX_JOBS + 1))
    p.execute()


# Scheduled/retry poller: Sidekiq::Scheduled::Enq's ZPOPBYSCORE script, one job at a time
ZPOPBYSCORE = """
local key, now = KEYS[1], ARGV[1]
local jobs = redis.call("zrangebyscore", key, "-inf", now, "limit", 0, 1)
if jobs[1] then
  redis.call("zrem", key, jobs[1])
  return jobs[1]
end
"""


def enqueue_due(r, sorted_sets=("retry", "schedule"), now: Optional[float] = None, limit: int = 1000) -> int:
    script = r.register_script(ZPOPBYSCORE)
    moved = 0
    for zset in sorted_sets:
        while moved < limit:
            t = time.time() if now is None else now
            raw = script(keys=[zset], args=[repr(t)])
            if not raw:
                break
            job = json.loads(raw)
            if job.get("retry_queue"):
                job["queue"] = job["retry_queue"]
            push_payloads(r, [job])
            moved += 1
    return moved
