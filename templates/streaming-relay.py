#!/usr/bin/python3
"""Mastodon migration: the streaming relay, on new (written by mastodon-migration, phase 2).

Old's streaming server keeps the WebSockets its users opened before the proxy switch, but it hears only
old's Redis, and new's Mastodon publishes on new's. This process, for as long as it runs:
- publishes on old's Redis every message that new's Mastodon publishes on a streaming channel
  (`<namespace>:timeline:*` on new's Redis);
- copies old's presence keys (`<namespace>:subscribed:*`, which old's streaming server sets for each
  timeline it listens to) into new's Redis with their remaining time to live: new's Sidekiq pushes a
  home-timeline update only for a timeline that has that key.
It tells systemd READY only once a probe published on new's Redis has reached old's through it.
Settings, from the environment (a 0600 file): NEW_REDIS_URL, OLD_REDIS_URL, REDIS_PREFIX.
"""

import os
import socket
import sys
import threading
import time
import uuid

import redis

PRESENCE_EVERY = 5  # seconds; old's streaming server renews its keys every 360 s, for 1080 s
PROBE_TIMEOUT = 10


def notify(state: str) -> None:
    """sd_notify(3) without libsystemd."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.connect("\0" + path[1:] if path.startswith("@") else path)
        sock.sendall(state.encode())


def copy_presence(old: redis.Redis, new: redis.Redis, prefix: str) -> int:
    copied = 0
    for key in old.scan_iter(match=prefix + "subscribed:*", count=500):
        value, ttl = old.get(key), old.pttl(key)
        if value is not None and ttl > 0:
            new.set(key, value, px=ttl)
            copied += 1
    return copied


def prove(old: redis.Redis, new: redis.Redis, prefix: str) -> None:
    """A probe published on new's streaming channels must arrive on old's Redis within PROBE_TIMEOUT."""
    channel, token = prefix + "timeline:mastodon-migration-relay-probe", uuid.uuid4().hex
    watch = old.pubsub(ignore_subscribe_messages=True)
    watch.subscribe(channel)
    deadline = time.monotonic() + PROBE_TIMEOUT
    while time.monotonic() < deadline:
        new.publish(channel, token)
        message = watch.get_message(timeout=1)
        while message is not None:
            if message["data"] == token.encode():
                watch.close()
                return
            message = watch.get_message(timeout=0.1)
    raise SystemExit(f"a probe published on new's Redis did not reach old's within {PROBE_TIMEOUT} s")


def keep_presence(old: redis.Redis, new: redis.Redis, prefix: str) -> None:
    try:
        while True:
            time.sleep(PRESENCE_EVERY)
            copy_presence(old, new, prefix)
    except Exception as error:  # the unit restarts the whole relay: both halves or neither
        print(f"presence copy failed: {type(error).__name__}: {error}", file=sys.stderr, flush=True)
        os._exit(1)


def main() -> None:
    new = redis.Redis.from_url(os.environ["NEW_REDIS_URL"], health_check_interval=30)
    old = redis.Redis.from_url(os.environ["OLD_REDIS_URL"], health_check_interval=30)
    prefix = os.environ.get("REDIS_PREFIX", "")
    listen = new.pubsub()
    listen.psubscribe(prefix + "timeline:*")
    while (confirmed := listen.get_message(timeout=5)) is None or confirmed["type"] != "psubscribe":
        pass
    copied = copy_presence(old, new, prefix)
    threading.Thread(target=prove_then_ready, args=(old, new, prefix, copied), daemon=True).start()
    for message in listen.listen():
        if message["type"] == "pmessage":
            old.publish(message["channel"], message["data"])


def prove_then_ready(old: redis.Redis, new: redis.Redis, prefix: str, copied: int) -> None:
    try:
        prove(old, new, prefix)
    except BaseException as error:
        print(f"not relaying: {error}", file=sys.stderr, flush=True)
        os._exit(1)
    print(f"relaying; {copied} presence keys copied from old", flush=True)
    notify("READY=1")
    keep_presence(old, new, prefix)


if __name__ == "__main__":
    try:
        main()
    except redis.RedisError as error:
        sys.exit(f"relay stopped: {type(error).__name__}: {error}")
