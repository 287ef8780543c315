"""A user's streaming WebSocket through the pair's public endpoint, as Mastodon's web client keeps one: it
counts the `update` events it receives, reconnects when dropped, and then catches up through the REST API.
"""
from __future__ import annotations

import json
import socket
import threading
import time


def followed_by_follower(accounts) -> set[str]:
    """The tokens of the accounts that the first seeded user (tokens.follower_pair's follower) follows: the
    seed makes user i follow the next ten."""
    return {a.token for a in accounts if 1 < int(a.username[4:]) <= 11}


class Stream(threading.Thread):
    """One user's streaming WebSocket, opened through whichever host DNS names; reconnects when dropped and
    then, as Mastodon's web client does, fetches the home timeline since the newest status it had."""

    def __init__(self, pair, token: str, route=None, hosts: dict[int, str] | None = None):
        super().__init__(daemon=True)
        self.pair, self.token = pair, token
        self.route = route or (lambda: pair.https_port("old"))
        self.hosts = hosts or {pair.https_port(h): h for h in ("old", "new")}
        self.received: set[str] = set()  # through the WebSocket
        self.fetched: set[str] = set()  # by the catch-up after a reconnect
        self.reconnects = 0  # connections opened after the first
        self.drops = 0  # open connections that ended while the client still listened
        self.errors: list[str] = []  # why a connection dropped or did not open
        self.connected_at = 0.0  # epoch seconds when its first WebSocket opened
        self.connected = threading.Event()
        self.stop = threading.Event()

    def expected(self, traffic, followed: set[str]) -> set[str]:
        """The statuses its user's stream must carry: the acknowledged writes of the accounts it follows,
        made after its first WebSocket opened."""
        return {r.status_id for r in traffic.requests if r.kind == "write" and r.ok and r.token in followed
                and r.wall_started >= self.connected_at}

    def catch_up(self, port: int) -> None:
        newest = max(self.received | self.fetched, key=int, default=None)
        while newest:  # min_id pages forward from the newest status the client had
            page = self.pair.json("GET", f"/api/v1/timelines/home?min_id={newest}&limit=40",
                                  host=self.hosts[port], token=self.token)
            self.fetched.update(str(status["id"]) for status in page)
            newest = max((str(status["id"]) for status in page), key=int, default=None)

    def run(self) -> None:
        from websockets.sync.client import connect

        while not self.stop.is_set():
            opened = False
            try:
                port = self.route()
                raw = socket.create_connection(("127.0.0.1", port), timeout=10)
                uri = f"wss://{self.pair.domain}:{port}/api/v1/streaming?stream=user&access_token={self.token}"
                with connect(uri, sock=raw, ssl=self.pair.ssl_context(), server_hostname=self.pair.domain,
                             proxy=None, open_timeout=10, compression=None) as ws:
                    opened = True
                    if not self.connected.is_set():
                        self.connected_at = time.time()
                        self.connected.set()
                    else:  # subscribed again: what was published meanwhile is in the timeline
                        self.reconnects += 1
                        self.catch_up(port)
                    while not self.stop.is_set():
                        try:
                            message = json.loads(ws.recv(timeout=0.5))
                        except TimeoutError:
                            continue
                        if message.get("event") == "update":
                            self.received.add(str(json.loads(message["payload"])["id"]))
            except Exception as error:  # dropped (a restart on the way) or refused: again, as a browser does
                self.drops += opened
                self.errors.append(f"{time.strftime('%H:%M:%S')} {type(error).__name__}: {error}"[:300])
                time.sleep(0.5)
