"""PostgreSQL access with ActiveRecord 7.1's connection behaviour.

Each thread (a Puma thread, a Sidekiq processor) keeps one connection. Every unit of work (a request, a job)
is a checkout: the connection is verified lazily (a cheap query) before its first use, and replaced if it is
dead, so a request that starts after PostgreSQL came back succeeds; a request whose connection dies mid-way
fails (500 / job error) and the broken connection is dropped. Writes are real transactions, committed before
the caller returns.
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from datetime import datetime, timezone

import psycopg2
import psycopg2.extras

CONN_ERRORS = (psycopg2.OperationalError, psycopg2.InterfaceError)


def utcnow() -> datetime:
    """Mastodon stores `timestamp without time zone` in UTC."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


class Database:
    def __init__(self, params: dict):
        self.params = dict(params)
        self._local = threading.local()
        self._all: list = []
        self._lock = threading.Lock()

    def connect(self):
        conn = psycopg2.connect(**self.params)
        conn.autocommit = True
        with self._lock:
            self._all.append(conn)
        return conn

    def session(self) -> "Session":
        return Session(self)

    def _thread_conn(self):
        return getattr(self._local, "conn", None)

    def _set_thread_conn(self, conn):
        self._local.conn = conn

    def drop_thread_conn(self):
        c = self._thread_conn()
        self._local.conn = None
        if c is not None:
            try:
                c.close()
            except Exception:
                pass

    def close_all(self):
        with self._lock:
            conns, self._all = self._all, []
        for c in conns:
            try:
                c.close()
            except Exception:
                pass


class Session:
    def __init__(self, db: Database):
        self.db = db
        self._verified = False

    def conn(self):
        if self._verified:
            c = self.db._thread_conn()
            if c is not None and not c.closed:
                return c
        c = self.db._thread_conn()
        if c is not None and not c.closed:
            try:
                with c.cursor() as cur:
                    cur.execute("SELECT 1")
            except CONN_ERRORS:
                self.db.drop_thread_conn()
                c = None
        else:
            c = None
        if c is None:
            c = self.db.connect()
            self.db._set_thread_conn(c)
        self._verified = True
        return c

    def _run(self, fn):
        try:
            return fn(self.conn())
        except CONN_ERRORS:
            self.db.drop_thread_conn()
            self._verified = False
            raise

    def all(self, sql: str, params=None) -> list[dict]:
        def q(conn):
            with conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
                cur.execute(sql, params)
                return [dict(r) for r in cur.fetchall()]
        return self._run(q)

    def rows(self, sql: str, params=None) -> list[tuple]:
        """Plain tuples (cheaper than dicts for large results)."""
        def q(conn):
            with conn.cursor() as cur:
                cur.execute(sql, params)
                return cur.fetchall()
        return self._run(q)

    def one(self, sql: str, params=None) -> dict | None:
        rows = self.all(sql, params)
        return rows[0] if rows else None

    def scalar(self, sql: str, params=None):
        def q(conn):
            with conn.cursor() as cur:
                cur.execute(sql, params)
                row = cur.fetchone()
                return row[0] if row else None
        return self._run(q)

    def execute(self, sql: str, params=None) -> int:
        def q(conn):
            with conn.cursor() as cur:
                cur.execute(sql, params)
                return cur.rowcount
        return self._run(q)

    @contextmanager
    def transaction(self):
        """BEGIN ... COMMIT on this session's connection; yields a RealDictCursor."""
        conn = self.conn()
        try:
            cur = conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor)
            cur.execute("BEGIN")
            try:
                yield cur
            except BaseException:
                try:
                    cur.execute("ROLLBACK")
                except Exception:
                    pass
                raise
            cur.execute("COMMIT")
            cur.close()
        except CONN_ERRORS:
            self.db.drop_thread_conn()
            self._verified = False
            raise


def wait_for(db_params: dict, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            psycopg2.connect(**db_params).close()
            return
        except psycopg2.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
