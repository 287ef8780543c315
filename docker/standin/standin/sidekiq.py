"""The Sidekiq process (`bundle exec sidekiq -c 25`), following Sidekiq 6.5's launcher, manager and poller.

- N processor threads BRPOP (2 s timeout) the queues in weighted random order (Mastodon's sidekiq.yml
  weights);
- heartbeat every 10 s: SADD processes <identity>; HSET <identity> info/busy/beat/quiet/rss/rtt_us (TTL 60 s);
  <identity>:work rewritten with the running jobs (TTL 60 s); stat:processed/failed counters; RPOP
  <identity>-signals and act on it (the Web UI's quiet/stop);
- scheduled poller: moves due `schedule` and `retry` jobs to their queue (first poll 10-15 s after boot, then
  every 2.5-7.5 s);
- sidekiq-scheduler (only when listening to `scheduler`): recurring jobs pushed onto queue:scheduler;
- a failed job goes to `retry` (count**4 + 15 + rand(10)*(count+1) s later) until its retry limit, then to
  `dead`;
- SIGTSTP: quiet (stop fetching, stop the poller and scheduler; `quiet` becomes "true" at the next heartbeat);
- SIGTERM/SIGINT: quiet, wait up to the timeout (-t, default 25 s) for running jobs, push the unfinished ones
  back onto their queue (RPUSH), remove the process from `processes`, delete <identity>:work, exit 0.
  The dist unit's TimeoutSec=15 is shorter than 25 s: systemd may SIGKILL first, and then the running jobs are
  lost, exactly as with real Mastodon.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import signal
import socket
import sys
import threading
import time
import traceback

import psycopg2
import redis as redis_mod

from . import config as config_mod
from . import jobs, log, workers
from .db import Database
from .redisconn import for_config as redis_for
from .redisconn import redact

SIDEKIQ_VERSION = "6.5.12"
BEAT_PAUSE = 10
FETCH_TIMEOUT = 2
STATS_TTL = 5 * 365 * 24 * 3600
PAUSE_TIME = 0.5
INITIAL_WAIT = 10
POLL_AVERAGE = 5

# sidekiq-scheduler entries of Mastodon's config/sidekiq.yml that the stand-in runs
# (name, class, every seconds)
RECURRING = (
    ("scheduled_statuses_scheduler", "Scheduler::ScheduledStatusesScheduler", 300),
    ("accounts_statuses_cleanup_scheduler", "Scheduler::AccountsStatusesCleanupScheduler", 60),
)


def ruby_error_class(e: BaseException) -> str:
    if isinstance(e, workers.JobError):
        return e.ruby_class
    if isinstance(e, psycopg2.errors.ReadOnlySqlTransaction):
        return "ActiveRecord::StatementInvalid"
    if isinstance(e, (psycopg2.OperationalError, psycopg2.InterfaceError)):
        return "ActiveRecord::ConnectionNotEstablished"
    if isinstance(e, psycopg2.Error):
        return "ActiveRecord::StatementInvalid"
    if isinstance(e, redis_mod.exceptions.ConnectionError):
        return "Redis::CannotConnectError"
    if isinstance(e, redis_mod.exceptions.ReadOnlyError):
        return "Redis::CommandError"
    if isinstance(e, redis_mod.exceptions.RedisError):
        return "Redis::BaseError"
    return "StandardError"


class Launcher:
    def __init__(self, args: argparse.Namespace):
        self.cfg = config_mod.load()
        self.concurrency = args.concurrency or self.cfg.int("SIDEKIQ_CONCURRENCY", 5)
        self.timeout = args.timeout
        self.weights = args.queues or list(jobs.QUEUE_WEIGHTS)
        self.queue_names = [q for q, _ in self.weights]
        self.hostname = socket.gethostname()
        self.identity = f"{self.hostname}:{os.getpid()}:{secrets.token_hex(6)}"
        self.tag = args.tag or os.path.basename(os.getcwd())
        self.started_at = time.time()
        self.redis_url = self.cfg.redis_url("SIDEKIQ_")
        self.r = redis_for(self.cfg, "sidekiq", socket_timeout=FETCH_TIMEOUT + 8,
                           name=f"Sidekiq-server-PID-{os.getpid()}")
        self.base_r = redis_for(self.cfg, "base")
        self.db = Database(self.cfg.db_params(), self.cfg.prepared_statements)
        self.done = threading.Event()         # quiet or stopping: no more fetching
        self.stopping = threading.Event()
        self.wake = threading.Event()
        self.lock = threading.Lock()
        self.work_state: dict[str, dict] = {}   # tid -> {"queue","payload","run_at"}
        self.in_progress: dict[str, tuple[str, str]] = {}
        self.processed = 0
        self.failed = 0
        self.pending_signals: list[str] = []
        self.cleared = False
        self.beat_lock = threading.Lock()
        self.threads: list[threading.Thread] = []
        self.ctx = workers.Context(self.cfg, self.db, self.base_r, self.r, self.stopping.is_set)

    # -- boot ------------------------------------------------------------------------------------------
    def run(self) -> int:
        log.sidekiq(f"Booting Sidekiq {SIDEKIQ_VERSION} with Sidekiq::RedisConnection::RedisAdapter options "
                    f"{{:url=>\"{redact(self.redis_url)}\""
                    + (f", :namespace=>\"{self.cfg.redis_namespace}\"" if self.cfg.redis_namespace else "")
                    + "}")
        log.sidekiq(f"Running in python {sys.version.split()[0]} (stand-in)")
        log.sidekiq(f"Booted Rails 7.1.4 application in {self.cfg.env_name} environment "
                    f"(database {self.cfg.db_label()})")
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGTSTP, signal.SIGTTIN, signal.SIGUSR2):
            signal.signal(sig, self._on_signal)
        log.sidekiq("Starting processing, hit Ctrl-C to stop")
        self._spawn(self._heartbeat_loop, "heartbeat")
        self._spawn(self._poller_loop, "scheduler")
        if "scheduler" in self.queue_names:
            self._spawn(self._recurring_loop, "sidekiq-scheduler")
        self.processors = [self._spawn(self._processor, f"processor-{i}") for i in range(self.concurrency)]
        while True:
            self.wake.wait(1.0)
            self.wake.clear()
            while self.pending_signals:
                sig = self.pending_signals.pop(0)
                if self._handle_signal(sig):
                    return 0

    def _spawn(self, fn, name) -> threading.Thread:
        t = threading.Thread(target=fn, name=name, daemon=True)
        t.start()
        self.threads.append(t)
        return t

    def _on_signal(self, signum, frame) -> None:
        self.pending_signals.append(signal.Signals(signum).name[3:])
        self.wake.set()

    def _handle_signal(self, sig: str) -> bool:
        log.sidekiq(f"Got {sig} signal")
        if sig == "TSTP":
            self.quiet()
        elif sig in ("TERM", "INT"):
            self.stop()
            return True
        elif sig == "TTIN":
            for t in threading.enumerate():
                log.sidekiq(f"Thread TID-{t.ident} {t.name}", "WARN")
        return False

    # -- quiet / stop ----------------------------------------------------------------------------------
    def quiet(self) -> None:
        if self.done.is_set():
            return
        log.sidekiq("Terminating quiet threads for default capsule")
        self.done.set()
        log.sidekiq("Scheduler exiting...")

    def stop(self) -> None:
        deadline = time.monotonic() + self.timeout
        self.quiet()
        self.stopping.set()
        log.sidekiq("Shutting down")
        time.sleep(PAUSE_TIME)
        if self._busy():
            log.sidekiq("Pausing to allow jobs to finish...")
            while self._busy() and time.monotonic() < deadline:
                time.sleep(0.05)
        if self._busy():
            self._hard_shutdown()
        with self.beat_lock:      # no heartbeat may re-add the identity after this
            self.cleared = True
        self._flush_stats()
        try:
            p = self.r.pipeline(transaction=False)
            p.srem("processes", self.identity)
            p.unlink(f"{self.identity}:work")
            p.execute()
        except Exception:
            pass
        log.sidekiq("Bye!")

    def _busy(self) -> bool:
        with self.lock:
            return bool(self.in_progress)

    def _hard_shutdown(self) -> None:
        with self.lock:
            pending = dict(self.in_progress)
            self.in_progress.clear()
            self.work_state.clear()
        log.sidekiq(f"Terminating {len(pending)} busy threads", "WARN")
        log.sidekiq(f"Work still in progress {[p for _, p in pending.values()]}", "WARN")
        by_queue: dict[str, list[str]] = {}
        for q, payload in pending.values():
            by_queue.setdefault(q, []).append(payload)
        try:
            p = self.r.pipeline(transaction=False)
            for q, payloads in by_queue.items():
                p.rpush(f"queue:{q}", *payloads)
            p.execute()
            log.sidekiq(f"Pushed {len(pending)} jobs back to Redis")
        except Exception as e:
            log.sidekiq(f"Failed to requeue {len(pending)} jobs: {e}", "ERROR")

    # -- processors ------------------------------------------------------------------------------------
    def _processor(self) -> None:
        tid = log.tid()
        error_logged = False
        while not self.done.is_set():
            try:
                got = self.r.brpop(jobs.weighted_queue_order(self.weights), timeout=FETCH_TIMEOUT)
                error_logged = False
            except redis_mod.exceptions.RedisError as e:
                if not error_logged:
                    log.sidekiq(f"Error fetching job: {type(e).__name__}: {e}", "ERROR")
                    error_logged = True
                time.sleep(1)
                continue
            if not got:
                continue
            qkey, jobstr = got
            queue = qkey[len("queue:"):]
            if self.done.is_set():          # fetched after quiet: put it back (UnitOfWork#requeue)
                try:
                    self.r.rpush(qkey, jobstr)
                except Exception:
                    pass
                break
            self._process(tid, queue, jobstr)

    def _process(self, tid: str, queue: str, jobstr: str) -> None:
        try:
            job = json.loads(jobstr)
        except ValueError:
            log.sidekiq(f"Invalid JSON for job: {jobstr[:200]}", "ERROR")
            jobs.send_to_morgue(self.r, {"class": "Unknown", "args": [], "error_message": "Invalid JSON",
                                         "raw": jobstr})
            return
        with self.lock:
            self.work_state[tid] = {"queue": queue, "payload": jobstr, "run_at": int(time.time())}
            self.in_progress[tid] = (queue, jobstr)
        fields = {"class": job.get("class"), "jid": job.get("jid")}
        log.sidekiq("start", **fields)
        t0 = time.monotonic()
        try:
            workers.perform(self.ctx, job)
            ok = True
        except Exception as e:
            ok = False
            err = e
        elapsed = time.monotonic() - t0
        with self.lock:
            still_mine = self.in_progress.pop(tid, None) is not None
            self.work_state.pop(tid, None)
            if ok:
                self.processed += 1
            else:
                self.failed += 1
        if not still_mine:
            return   # a hard shutdown already pushed it back
        if ok:
            log.sidekiq("done", elapsed=f"{elapsed:.3f}", **fields)
            return
        klass, message = ruby_error_class(err), str(err).strip() or type(err).__name__
        log.sidekiq("fail", "INFO", elapsed=f"{elapsed:.3f}", **fields)
        log.sidekiq(f"{klass}: {message}", "WARN", **fields)
        if not isinstance(err, workers.JobError):
            log.line("".join(traceback.format_exception(type(err), err, err.__traceback__, limit=6)).rstrip())
        try:
            outcome, at = jobs.record_failure(job, klass, message)
            if outcome == "retry":
                self.r.zadd("retry", {jobs.dump(job): at})
            elif outcome == "dead":
                jobs.send_to_morgue(self.r, job)
                log.sidekiq(f"Adding dead {job.get('class')} job {job.get('jid')}", "INFO")
        except Exception as e:
            log.sidekiq(f"Unable to record the failure of {job.get('jid')}: {e}", "ERROR")

    # -- heartbeat -------------------------------------------------------------------------------------
    def info(self) -> dict:
        return {"hostname": self.hostname, "started_at": self.started_at, "pid": os.getpid(), "tag": self.tag,
                "concurrency": self.concurrency, "queues": self.queue_names, "labels": [],
                "identity": self.identity}

    def _flush_stats(self) -> None:
        with self.lock:
            procd, fails = self.processed, self.failed
            self.processed = self.failed = 0
        if not procd and not fails:
            return
        today = time.strftime("%Y-%m-%d", time.gmtime())
        try:
            p = self.r.pipeline(transaction=True)
            p.incrby("stat:processed", procd)
            p.incrby(f"stat:processed:{today}", procd)
            p.expire(f"stat:processed:{today}", STATS_TTL)
            p.incrby("stat:failed", fails)
            p.incrby(f"stat:failed:{today}", fails)
            p.expire(f"stat:failed:{today}", STATS_TTL)
            p.execute()
        except Exception:
            with self.lock:
                self.processed += procd
                self.failed += fails

    def beat(self) -> None:
        with self.beat_lock:
            if not self.cleared:
                self._beat()

    def _beat(self) -> None:
        self._flush_stats()
        with self.lock:
            curstate = {tid: json.dumps(v, separators=(",", ":")) for tid, v in self.work_state.items()}
        work_key = f"{self.identity}:work"
        p = self.r.pipeline(transaction=True)
        p.unlink(work_key)
        if curstate:
            p.hset(work_key, mapping=curstate)
            p.expire(work_key, 60)
        p.execute()
        t0 = time.monotonic()
        self.r.ping()
        rtt = int((time.monotonic() - t0) * 1_000_000)
        p = self.r.pipeline(transaction=True)
        p.sadd("processes", self.identity)
        p.exists(self.identity)
        p.hset(self.identity, mapping={"info": json.dumps(self.info(), separators=(",", ":")),
                                       "busy": len(curstate), "beat": time.time(), "rtt_us": rtt,
                                       "quiet": "true" if self.done.is_set() else "false", "rss": _rss_kb()})
        p.expire(self.identity, 60)
        p.rpop(f"{self.identity}-signals")
        _, exists, _, _, sig = p.execute()
        if sig:
            self.pending_signals.append(str(sig).upper().replace("SIG", ""))
            self.wake.set()

    def _heartbeat_loop(self) -> None:
        failing = False
        while True:
            try:
                self.beat()
                if failing:
                    log.sidekiq("heartbeat: connection restored")
                failing = False
            except Exception as e:
                if not failing:
                    log.sidekiq(f"heartbeat: {e}", "ERROR")
                failing = True
            time.sleep(BEAT_PAUSE)

    # -- scheduled/retry poller and recurring jobs -------------------------------------------------------
    def _poller_loop(self) -> None:
        if self._sleep_unless_done(INITIAL_WAIT + random.random() * 5):
            return
        self._cleanup_process_set()
        while not self.done.is_set():
            try:
                jobs.enqueue_due(self.r)
            except Exception as e:
                log.sidekiq(f"scheduled poller: {e}", "ERROR")
            if self._sleep_unless_done(POLL_AVERAGE * random.random() + POLL_AVERAGE / 2):
                return

    def _cleanup_process_set(self) -> None:
        """Sidekiq::ProcessSet.cleanup (run once after the poller's initial wait): drop identities whose
        heartbeat hash has expired, i.e. processes that died without clearing their entry."""
        try:
            members = list(self.r.smembers("processes"))
            if not members:
                return
            p = self.r.pipeline(transaction=False)
            for m in members:
                p.hget(m, "info")
            dead = [m for m, info in zip(members, p.execute(), strict=True) if info is None]
            if dead:
                self.r.srem("processes", *dead)
        except Exception as e:
            log.sidekiq(f"process set cleanup: {e}", "ERROR")

    def _recurring_loop(self) -> None:
        while not self.done.is_set():
            now = time.time()
            for name, klass, every in RECURRING:
                slot = int(now // every) * every
                try:
                    if self.r.zadd(f"sidekiq-scheduler:pushed:{name}", {str(slot): slot}, nx=True):
                        self.r.zremrangebyscore(f"sidekiq-scheduler:pushed:{name}", "-inf", slot - 24 * 3600)
                        jobs.push(self.r, klass, [], queue="scheduler")
                        self.r.hset("sidekiq-scheduler:last_times", name, slot)
                    self.r.hset("sidekiq-scheduler:next_times", name, slot + every)
                except Exception:
                    pass
            if self._sleep_unless_done(1.0 + random.random()):
                return

    def _sleep_unless_done(self, seconds: float) -> bool:
        return self.done.wait(seconds)


def _rss_kb() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="sidekiq", add_help=True)
    p.add_argument("-c", "--concurrency", type=int, default=None)
    p.add_argument("-q", "--queue", action="append", default=[], help="QUEUE[,WEIGHT]")
    p.add_argument("-t", "--timeout", type=float, default=25.0)
    p.add_argument("-g", "--tag", default=None)
    p.add_argument("-e", "--environment", default=None)
    p.add_argument("-C", "--config", default=None)
    p.add_argument("-v", "--verbose", action="store_true")
    a = p.parse_args(argv)
    a.queues = None
    if a.queue:
        a.queues = []
        for spec in a.queue:
            name, _, weight = spec.partition(",")
            a.queues.append((name, int(weight) if weight.isdigit() else 1))
    if a.environment:
        os.environ["RAILS_ENV"] = a.environment
    return a


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("STANDIN_PROCESS", "sidekiq")
    args = parse_args(sys.argv[1:] if argv is None else argv)
    launcher = Launcher(args)
    code = launcher.run()
    sys.stdout.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
