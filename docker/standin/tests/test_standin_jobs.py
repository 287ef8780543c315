import json
import random
from collections import Counter

from standin import feeds, jobs


def test_job_json_shape_and_key_order():
    job = jobs.build_job("DistributionWorker", [123], jid="a" * 24, created_at=1.5)
    assert list(job) == ["retry", "queue", "class", "args", "jid", "created_at"]
    assert job == {"retry": True, "queue": "default", "class": "DistributionWorker", "args": [123],
                   "jid": "a" * 24, "created_at": 1.5}
    assert jobs.dump(job) == json.dumps(job, separators=(",", ":"))
    d = jobs.build_job("ActivityPub::DeliveryWorker", ["{}", 1, "https://x.invalid/inbox"])
    assert d["queue"] == "push" and d["retry"] == 16 and d["dead"] is False
    assert len(jobs.new_jid()) == 24


class FakePipe:
    def __init__(self, log):
        self.log = log

    def __getattr__(self, name):
        return lambda *a, **k: self.log.append((name, a))

    def execute(self):
        self.log.append(("execute", ()))


class FakeRedis:
    def __init__(self):
        self.log = []

    def pipeline(self, transaction=True):
        return FakePipe(self.log)


def test_push_is_sadd_then_lpush_with_enqueued_at():
    r = FakeRedis()
    job = jobs.push(r, "FeedInsertWorker", [1, 2, "home", {"update": False}])
    assert [op for op, _ in r.log] == ["sadd", "lpush", "execute"]
    assert r.log[0][1] == ("queues", "default")
    key, payload = r.log[1][1]
    assert key == "queue:default" and json.loads(payload)["enqueued_at"] == job["enqueued_at"]


def test_weighted_queue_order():
    counts = Counter(jobs.weighted_queue_order(rng=random.Random(i))[0] for i in range(3000))
    assert set(jobs.weighted_queue_order()) == {f"queue:{q}" for q in jobs.QUEUES}
    assert counts["queue:default"] > counts["queue:push"] > counts["queue:ingress"] > counts["queue:mailers"]
    assert counts["queue:mailers"] > counts["queue:pull"]


def test_retry_math_and_morgue():
    rng = random.Random(0)
    job = jobs.build_job("Standin::FailingWorker", ["x"], retry=2)
    outcome, at = jobs.record_failure(job, "RuntimeError", "boom", now=100.0, rng=rng)
    assert outcome == "retry" and job["retry_count"] == 0 and job["failed_at"] == 100.0
    assert 15 <= at - 100.0 <= 15 + 9
    outcome, at = jobs.record_failure(job, "RuntimeError", "boom", now=200.0, rng=rng)
    assert outcome == "retry" and job["retry_count"] == 1 and job["retried_at"] == 200.0
    assert 16 <= at - 200.0 <= 16 + 18
    outcome, _ = jobs.record_failure(job, "RuntimeError", "boom", now=300.0, rng=rng)
    assert outcome == "dead" and job["retry_count"] == 2
    nodead = jobs.build_job("ActivityPub::DeliveryWorker", [], )
    nodead["retry_count"] = 15
    assert jobs.record_failure(nodead, "HTTP::ConnectionError", "x")[0] == "discard"
    assert jobs.record_failure(jobs.build_job("X", [], retry=False), "E", "x")[0] == "discard"
    assert jobs.retry_delay(3, random.Random(1)) >= 3 ** 4 + 15


def test_feed_keys():
    assert feeds.key("home", 5) == "feed:home:5"
    assert feeds.key("home", 5, "reblogs") == "feed:home:5:reblogs"
    assert feeds.regeneration_key(5) == "account:5:regeneration"
    assert feeds.MAX_ITEMS == 400
