"""Live traffic through the pair's public endpoint: a steady writer and a reader, recording every request.

Each request opens its own TLS connection to a published 127.0.0.1 port with SNI and Host = the domain,
verified against the test CA, as a browser after DNS resolution would. Which port a request goes to is
decided per request by `route()` (old's by default; the DNS test re-resolves each second).
"""
from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from dataclasses import dataclass, field


@dataclass
class Request:
    kind: str  # "write" or "read"
    started: float
    ended: float
    status: int  # 0: no HTTP answer (connection refused, reset, timeout)
    wall_started: float = 0.0  # epoch seconds, to compare with times the tool prints
    wall_ended: float = 0.0
    error: str = ""
    status_id: str = ""
    token: str = ""  # whose request it was

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


@dataclass
class Traffic:
    """Runs until stop(); `requests` holds every attempt, `acknowledged` the ids of accepted writes."""

    pair: object
    tokens: list[str]
    writes_per_second: float = 20
    reads_per_second: float = 5
    route: callable = None
    requests: list[Request] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    started: float = 0.0

    def _port(self) -> int:
        return self.route() if self.route else self.pair.https_port("old")

    def _call(self, method: str, path: str, token: str, body: dict | None = None) -> tuple[int, bytes, str]:
        raw = socket.create_connection(("127.0.0.1", self._port()), timeout=15)
        try:
            sock = self.pair.ssl_context().wrap_socket(raw, server_hostname=self.pair.domain)
            conn = http.client.HTTPConnection(self.pair.domain, timeout=15)
            conn.sock = sock
            headers = {"Host": self.pair.domain, "Authorization": f"Bearer {token}", "Connection": "close"}
            data = None
            if body is not None:
                data = json.dumps(body).encode()
                headers["Content-Type"] = "application/json"
            conn.request(method, path, body=data, headers=headers)
            response = conn.getresponse()
            return response.status, response.read(), ""
        finally:
            raw.close()

    def _loop(self, kind: str, rate: float) -> None:
        interval, number = 1.0 / rate, 0
        next_at = time.monotonic()
        while not self._stop.is_set():
            number += 1
            token = self.tokens[number % len(self.tokens)]
            started = time.monotonic()
            request = Request(kind, started, started, 0, wall_started=time.time(), token=token)
            try:
                if kind == "write":
                    status, body, _ = self._call("POST", "/api/v1/statuses", token,
                                                 {"status": f"live traffic {number} {time.time_ns()}",
                                                  "visibility": "public"})
                    if 200 <= status < 300:
                        request.status_id = str(json.loads(body)["id"])
                else:
                    status, body, _ = self._call("GET", "/api/v1/timelines/home?limit=5", token)
                request.status = status
                if not request.ok:
                    request.error = body[:200].decode(errors="replace")
            except Exception as error:  # whatever ends a request is a failed request, never a dead thread
                request.error = f"{type(error).__name__}: {error}"
            request.ended, request.wall_ended = time.monotonic(), time.time()
            with self._lock:
                self.requests.append(request)
            next_at = max(next_at + interval, time.monotonic())  # a slow answer delays, it does not bunch up
            self._stop.wait(next_at - time.monotonic())

    def start(self) -> "Traffic":
        self.started = time.monotonic()
        for kind, rate in (("write", self.writes_per_second), ("read", self.reads_per_second)):
            thread = threading.Thread(target=self._loop, args=(kind, rate), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self, stalls: bool = False) -> "Traffic":
        """`stalls`: the run under test may hold requests for long (a restart while web boots), and the
        client's pace is not checked."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)
        if not stalls:
            self.expect_at_least(time.monotonic() - self.started)
        return self

    @property
    def failures(self) -> list[Request]:
        return [r for r in self.requests if not r.ok]

    @property
    def acknowledged(self) -> list[str]:
        return [r.status_id for r in self.requests if r.kind == "write" and r.ok]

    def expect_at_least(self, seconds: float, share: float = 0.5) -> None:
        """A stalled client cannot pass as "no failures": each kind made at least `share` of the requests
        its rate promises over `seconds` (the time the traffic ran)."""
        for kind, rate in (("write", self.writes_per_second), ("read", self.reads_per_second)):
            made = len([r for r in self.requests if r.kind == kind])
            assert made >= share * rate * seconds, f"only {made} {kind}s in {seconds:.0f} s at {rate}/s"

    def summary(self) -> str:
        writes = [r for r in self.requests if r.kind == "write"]
        return (f"{len(self.requests)} requests ({len(writes)} writes), {len(self.failures)} failed"
                + (f"; first failures: {[(r.status, r.error[:80]) for r in self.failures[:3]]}"
                   if self.failures else ""))


def missing_ids(pair, host: str, ids: list[str]) -> list[str]:
    """Acknowledged status ids that are not in `host`'s database (checked id by id, in batches)."""
    missing = []
    for i in range(0, len(ids), 500):
        batch = ids[i:i + 500]
        query = ("SELECT id FROM statuses WHERE id IN (" + ",".join(str(int(x)) for x in batch) + ")")
        found = pair.exec(host, "sudo", "-u", "postgres", "psql", "-XAtq", "-d", "mastodon_production",
                          "-c", query, check=True).stdout.split()
        missing += sorted(set(batch) - set(found))
    return missing
