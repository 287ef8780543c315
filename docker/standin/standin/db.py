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


def to_positional(sql: str) -> tuple[str, int]:
    """psycopg2's %s placeholders → PostgreSQL's $1, $2, ... (for PREPARE)."""
    n = 0
    out = []
    i = 0
    while i < len(sql):
        if sql.startswith("%s", i):
            n += 1
            out.append(f"${n}")
            i += 2
        elif sql.startswith("%%", i):
            out.append("%")
            i += 2
        else:
            out.append(sql[i])
            i += 1
    return "".join(out), n


class Database:
    """Connections of one process. `prepared_statements` mirrors ActiveRecord's default (PREPARED_STATEMENTS,
    true unless "false"): queries are PREPAREd once per connection and EXECUTEd afterwards, so, like Rails,
    the app breaks behind PgBouncer in transaction mode ("prepared statement "a1" does not exist") unless
    PREPARED_STATEMENTS=false."""

    def __init__(self, params: dict, prepared_statements: bool = False):
        self.params = dict(params)
        self.prepared_statements = prepared_statements
        self._local = threading.local()
        self._all: list = []
        self._lock = threading.Lock()
        self._statements: dict[int, dict[str, str]] = {}
        self._counter = 0

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

    def execute(self, conn, cur, sql: str, params=None) -> None:
        if not self.prepared_statements or params is None:
            cur.execute(sql, params)
            return
        cache = self._statements.setdefault(id(conn), {})
        name = cache.get(sql)
        text, n = to_positional(sql)
        if name is None:
            with self._lock:
                self._counter += 1
                name = f"a{self._counter}"
            cur.execute(f"PREPARE {name} AS {text}")
            cache[sql] = name
        cur.execute(f"EXECUTE {name} ({', '.join(['%s'] * n)})" if n else f"EXECUTE {name}",
                    params if n else None)

    def drop_thread_conn(self):
        c = self._thread_conn()
        if c is not None:
            self._statements.pop(id(c), None)
        self._local.conn = None
        if c is not None:
            try:
                c.close()
            except Exception:
                pass

    def close_all(self):
        with self._lock:
            conns, self._all = self._all, []
            self._statements.clear()
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
                self.db.execute(conn, cur, sql, params)
                return [dict(r) for r in cur.fetchall()]
        return self._run(q)

    def rows(self, sql: str, params=None) -> list[tuple]:
        """Plain tuples (cheaper than dicts for large results)."""
        def q(conn):
            with conn.cursor() as cur:
                self.db.execute(conn, cur, sql, params)
                return cur.fetchall()
        return self._run(q)

    def one(self, sql: str, params=None) -> dict | None:
        rows = self.all(sql, params)
        return rows[0] if rows else None

    def scalar(self, sql: str, params=None):
        def q(conn):
            with conn.cursor() as cur:
                self.db.execute(conn, cur, sql, params)
                row = cur.fetchone()
                return row[0] if row else None
        return self._run(q)

    def execute(self, sql: str, params=None) -> int:
        def q(conn):
            with conn.cursor() as cur:
                self.db.execute(conn, cur, sql, params)
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
