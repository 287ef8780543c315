"""bin/tootctl: the subset of Mastodon's CLI that a migration runs.

  tootctl feeds build [USERNAME] [--all] [-c|--concurrency N] [-v|--verbose] [--dry-run]
  tootctl feeds clear
  tootctl version | --version | -v

`feeds build` without USERNAME (or with --all) rebuilds the home feed of every active user's account
(confirmed, signed in within 7 days, not disabled or suspended) with PrecomputeFeedService, in N threads,
showing ruby-progressbar's '%c/%u |%b%i| %e' on a terminal. It prints
`Regenerated feeds for N accounts ` (+ `(DRY RUN)`), or `OK ` for one user; an unknown user gives
`No such account` and exit status 1. Errors on single accounts are reported and do not change the exit status.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import psycopg2

from . import config as config_mod
from . import feeds, models
from .db import Database
from .redisconn import for_config as redis_for

GREEN, RED, RESET = "\033[32m", "\033[31m", "\033[0m"


def say(msg: str, color: str | None = None, stream=None) -> None:
    stream = stream or sys.stdout
    if color and stream.isatty():
        msg = f"{color}{msg}{RESET}"
    stream.write(msg + "\n")
    stream.flush()


class ProgressBar:
    """ruby-progressbar: redrawn in place on a TTY; on a pipe, 'Progress: |====...|' grows, then a newline."""

    def __init__(self, total: int | None, stream=None):
        self.total = total
        self.count = 0
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty()
        self.started = time.monotonic()
        self.lock = threading.Lock()
        self.width = 80
        self.printed_marks = 0
        if self.tty:
            self._draw()
        else:
            self.stream.write("Progress: |")
            self.stream.flush()

    def _eta(self) -> str:
        if not self.total or not self.count:
            return "ETA: ??:??:??"
        el = time.monotonic() - self.started
        rem = el / self.count * (self.total - self.count)
        return "ETA: " + time.strftime("%H:%M:%S", time.gmtime(rem))

    def _draw(self) -> None:
        total = self.total or 0
        bar_w = 40
        done = int(bar_w * self.count / total) if total else bar_w
        bar = "=" * done + " " * (bar_w - done)
        self.stream.write(f"\r{self.count}/{total if self.total is not None else '?'} |{bar}| {self._eta()}")
        self.stream.flush()

    def log(self, msg: str) -> None:
        with self.lock:
            if self.tty:
                self.stream.write("\r\033[K" + msg + "\n")
                self._draw()
            else:
                self.stream.write("\n" + msg + "\n")
            self.stream.flush()

    def increment(self) -> None:
        with self.lock:
            self.count += 1
            if self.tty:
                self._draw()
            else:
                inner = self.width - len("Progress: ||")
                marks = int(inner * self.count / self.total) if self.total else 0
                if marks > self.printed_marks:
                    self.stream.write("=" * (marks - self.printed_marks))
                    self.printed_marks = marks
                    self.stream.flush()

    def stop(self) -> None:
        with self.lock:
            if self.tty:
                self._draw()
                self.stream.write("\n")
            else:
                inner = self.width - len("Progress: ||")
                self.stream.write("=" * max(0, inner - self.printed_marks) + "|\n")
            self.stream.flush()


def _database_error(e: Exception, cfg) -> int:
    dbname = cfg.db_params().get("dbname")
    text = str(e).strip()
    if "does not exist" in text and "database" in text:
        sys.stderr.write(f"We could not find your database: {dbname}. Available database configurations "
                         f"can be found in config/database.yml.\n\n(ActiveRecord::NoDatabaseError)\n")
    else:
        sys.stderr.write(f"ActiveRecord::ConnectionNotEstablished: {text}\n")
    return 1


def feeds_build(args) -> int:
    cfg = config_mod.load()
    dry = " (DRY RUN)" if args.dry_run else ""
    if args.concurrency < 1:
        say("Cannot run with this concurrency setting, must be at least 1", RED)
        return 1
    db = Database(cfg.db_params(), cfg.prepared_statements)
    r = redis_for(cfg, "base")
    try:
        sess = db.session()
        if args.all or not args.username:
            ids = models.active_user_account_ids(sess)
            progress = ProgressBar(len(ids))
            done_count = [0]
            lock = threading.Lock()

            def one(account_id: int):
                try:
                    if args.verbose:
                        progress.log(f"Processing {account_id}")
                    if not args.dry_run:
                        feeds.precompute(db.session(), r, account_id)
                except Exception as e:
                    progress.log(f"Error processing {account_id}: {e}")
                finally:
                    with lock:
                        done_count[0] += 1
                    progress.increment()

            with ThreadPoolExecutor(max_workers=args.concurrency) as pool:
                list(pool.map(one, ids))
            progress.stop()
            say(f"Regenerated feeds for {len(ids)} accounts {dry.strip()}", GREEN)
            return 0
        account = models.find_local_account(sess, args.username)
        if account is None:
            say("No such account", RED)
            return 1
        if not args.dry_run:
            feeds.precompute(sess, r, account["id"])
        say(f"OK {dry.strip()}", GREEN)
        return 0
    except psycopg2.OperationalError as e:
        return _database_error(e, cfg)
    finally:
        db.close_all()


def feeds_clear(args) -> int:
    cfg = config_mod.load()
    r = redis_for(cfg, "base")   # namespaced like Mastodon's `redis.keys('feed:*')`
    keys = list(r.scan_iter("feed:*", count=1000))
    for i in range(0, len(keys), 1000):
        r.delete(*keys[i:i + 1000])
    say("OK", GREEN)
    return 0


USAGE = """Commands:
  tootctl feeds build [USERNAME]  # Build home and list feeds for one or all users
  tootctl feeds clear             # Remove all home and list feeds from Redis
  tootctl help [COMMAND]          # Describe available commands or one specific command
  tootctl version                 # Show version
"""


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("STANDIN_PROCESS", "tootctl")
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("help", "-h", "--help"):
        sys.stdout.write(USAGE)
        return 0
    if argv[0] in ("version", "--version", "-v"):
        print(config_mod.mastodon_version())
        return 0
    if argv[0] != "feeds":
        sys.stderr.write(f'Could not find command "{argv[0]}".\n')
        return 1
    sub = argv[1] if len(argv) > 1 else None
    if sub == "build":
        p = argparse.ArgumentParser(prog="tootctl feeds build", add_help=True)
        p.add_argument("username", nargs="?")
        p.add_argument("--all", action="store_true")
        p.add_argument("-c", "--concurrency", type=int, default=5)
        p.add_argument("-v", "--verbose", action="store_true")
        p.add_argument("--dry-run", dest="dry_run", action="store_true")
        return feeds_build(p.parse_args(argv[2:]))
    if sub == "clear":
        return feeds_clear(None)
    if sub is None or sub in ("help", "-h", "--help"):
        sys.stdout.write("Commands:\n  tootctl feeds build [USERNAME]\n  tootctl feeds clear\n")
        return 0
    sys.stderr.write(f'Could not find command "{sub}" in "feeds" namespace.\n')
    return 1


if __name__ == "__main__":
    sys.exit(main())
