"""The streaming server (Mastodon's `node ./streaming`), on aiohttp.

- GET /api/v1/streaming/health → 200 text/plain "OK" (no database, no Redis);
- WebSocket at /api/v1/streaming (?stream=user, or subscribe messages); token from the `access_token` query
  parameter, `Authorization: Bearer`, or `Sec-WebSocket-Protocol` (echoed back as the chosen protocol);
  401 before the upgrade without a valid token;
- Server-Sent Events at /api/v1/streaming/user (and /user/notification, /public, /public/local);
- streams map to Redis channels: user → timeline:<account_id> and timeline:<account_id>:notifications;
  public → timeline:public; public:local → timeline:public:local;
- while a channel has listeners, `subscribed:<channel>` is SET with EX 1080 every 360 s (FeedManager only
  enqueues PushUpdateWorker for timelines with that key);
- frames: {"stream":["user"],"event":"update","payload":"<status JSON as a string>"};
- with REDIS_NAMESPACE=<ns>, as Mastodon's `redisPrefix`: channels `<ns>:timeline:<id>`, keys
  `<ns>:subscribed:timeline:<id>` (what Rails publishes through redis-namespace).
One Redis subscriber connection for the process (reconnects and resubscribes by itself, like ioredis).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import queue
import signal
import sys
import threading
import time

from aiohttp import WSMsgType, web

from . import config as config_mod
from . import log, models, remote_ip
from .db import Database
from .namespace import channel as ns_channel
from .redisconn import client as redis_client

PRESENCE_INTERVAL = 6 * 60
ALLOWED_SCOPES = {"read", "read:statuses", "read:notifications"}


class Subscriber:
    """Owns the Redis pub/sub connection in a thread; dispatches messages to asyncio callbacks."""

    def __init__(self, url: str, loop: asyncio.AbstractEventLoop, namespace: str | None = None):
        self.url = url
        # streaming/index.js `redisPrefix`: `<REDIS_NAMESPACE>:` before every channel and presence key (the
        # clients stay plain, as ioredis' keyPrefix would not apply to SUBSCRIBE); callers use bare names
        self.ns = namespace
        self.loop = loop
        self.listeners: dict[str, set] = {}
        self.commands: "queue.Queue[tuple[str, str]]" = queue.Queue()
        self.lock = threading.Lock()
        self.presence_r = redis_client(url)
        self.presence_due: dict[str, float] = {}
        self.stop = threading.Event()
        threading.Thread(target=self._run, name="redis-subscriber", daemon=True).start()

    def add(self, channel: str, callback) -> None:
        with self.lock:
            first = channel not in self.listeners or not self.listeners[channel]
            self.listeners.setdefault(channel, set()).add(callback)
            self.presence_due[channel] = 0.0
        if first:
            self.commands.put(("subscribe", channel))

    def remove(self, channel: str, callback) -> None:
        with self.lock:
            cbs = self.listeners.get(channel)
            if not cbs:
                return
            cbs.discard(callback)
            last = not cbs
            if last:
                del self.listeners[channel]
                self.presence_due.pop(channel, None)
        if last:
            self.commands.put(("unsubscribe", channel))

    def _run(self) -> None:
        backoff = 0.5
        while not self.stop.is_set():
            r = redis_client(self.url, socket_timeout=None)
            ps = r.pubsub(ignore_subscribe_messages=True)
            try:
                # drop queued commands first: the current set of channels is authoritative after a (re)connect
                while not self.commands.empty():
                    self.commands.get_nowait()
                with self.lock:
                    channels = list(self.listeners)
                if channels:
                    ps.subscribe(*(ns_channel(self.ns, c) for c in channels))
                else:
                    ps.subscribe(ns_channel(self.ns, "streaming:keepalive"))
                backoff = 0.5
                while not self.stop.is_set():
                    while not self.commands.empty():
                        op, ch = self.commands.get_nowait()
                        (ps.subscribe if op == "subscribe" else ps.unsubscribe)(ns_channel(self.ns, ch))
                    msg = ps.get_message(timeout=0.05)
                    if msg and msg.get("type") == "message":
                        self._dispatch(self._bare(msg["channel"]), msg["data"])
                    self._presence()
            except Exception as e:
                log.line(f"streaming: Redis subscriber error: {type(e).__name__}: {e}; reconnecting")
                time.sleep(backoff)
                backoff = min(backoff * 2, 5)
            finally:
                try:
                    ps.close()
                    r.close()
                except Exception:
                    pass

    def _presence(self) -> None:
        now = time.monotonic()
        with self.lock:
            due = [c for c, t in self.presence_due.items() if t <= now]
            for c in due:
                self.presence_due[c] = now + PRESENCE_INTERVAL
        for c in due:
            try:
                self.presence_r.set(ns_channel(self.ns, f"subscribed:{c}"), "1", ex=PRESENCE_INTERVAL * 3)
            except Exception:
                with self.lock:
                    if c in self.presence_due:
                        self.presence_due[c] = now + 1.0

    def _bare(self, channel: str) -> str:
        prefix = ns_channel(self.ns, "")
        return channel[len(prefix):] if prefix and channel.startswith(prefix) else channel

    def _dispatch(self, channel: str, data: str) -> None:
        try:
            parsed = json.loads(data)
        except ValueError:
            return
        with self.lock:
            cbs = list(self.listeners.get(channel, ()))
        for cb in cbs:
            self.loop.call_soon_threadsafe(cb, channel, parsed)


def channels_for(stream: str, account_id: int | None) -> tuple[list[str], set | None] | None:
    """channelNameToIds: Redis channels and allowed events (None = all) for a stream name."""
    if stream == "user" and account_id:
        return [f"timeline:{account_id}", f"timeline:{account_id}:notifications"], None
    if stream == "user:notification" and account_id:
        return [f"timeline:{account_id}:notifications"], {"notification"}
    if stream == "public":
        return ["timeline:public"], None
    if stream == "public:local":
        return ["timeline:public:local"], None
    return None


def encode_payload(payload) -> str:
    return payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))


class Streaming:
    def __init__(self):
        self.cfg = config_mod.load_streaming()
        self.db = Database(self.cfg.db_params())
        self.proxies = self.cfg.trusted_proxies()
        self.connected = 0

    def token_from(self, request: web.Request) -> tuple[str | None, bool]:
        q = request.query.get("access_token")
        if q:
            return q, False
        auth = request.headers.get("Authorization", "")
        if auth.lower().startswith("bearer "):
            return auth[7:].strip(), False
        proto = request.headers.get("Sec-WebSocket-Protocol")
        if proto:
            return proto.split(",")[0].strip(), True
        return None, False

    def client_ip(self, request: web.Request) -> str:
        peer = request.transport.get_extra_info("peername") if request.transport else None
        addr = peer[0] if peer else "127.0.0.1"
        try:
            return remote_ip.calculate_ip(addr, request.headers.get("X-Forwarded-For"), None, self.proxies,
                                          False)
        except Exception:
            return addr

    async def authenticate(self, request: web.Request):
        token, from_protocol = self.token_from(request)
        if not token:
            return None, from_protocol, web.json_response({"error": "Missing access token"}, status=401)
        loop = asyncio.get_running_loop()
        try:
            row = await loop.run_in_executor(None, lambda: models.token_owner(self.db.session(), token))
        except Exception as e:
            # Mastodon: `err.status ?? 401` on the WebSocket upgrade, `err.status || 500` for HTTP (SSE)
            log.line(f"streaming: database error during authentication: {type(e).__name__}: {e}")
            status = 401 if request.headers.get("Upgrade", "").lower() == "websocket" else 500
            return None, from_protocol, web.json_response({"error": "Internal Server Error"}, status=status)
        if row is None:
            return None, from_protocol, web.json_response({"error": "Invalid access token"}, status=401)
        scopes = set((row.get("scopes") or "").split())
        if not scopes & ALLOWED_SCOPES:
            return None, from_protocol, web.json_response(
                {"error": "Access token does not have the required scopes"}, status=401)
        return (row, token), from_protocol, None

    # -- routes ------------------------------------------------------------------------------------------
    async def health(self, request: web.Request) -> web.Response:
        return web.Response(text="OK", content_type="text/plain",
                            headers={"Cache-Control": "private, no-store"})

    async def websocket(self, request: web.Request):
        if request.headers.get("Upgrade", "").lower() != "websocket":
            return web.json_response({"error": "Not found"}, status=404)
        auth, from_protocol, err = await self.authenticate(request)
        ip = self.client_ip(request)
        if err is not None:
            log.line(f"streaming: WebSocket refused ({err.status}) remote_ip={ip}")
            return err
        row, token = auth
        ws = web.WebSocketResponse(protocols=[token] if from_protocol else (), heartbeat=30)
        await ws.prepare(request)
        self.connected += 1
        log.line(f"streaming: WebSocket connected account_id={row['account_id']} remote_ip={ip}")
        subs: dict[str, tuple[list, object]] = {}
        loop = asyncio.get_running_loop()
        out: asyncio.Queue = asyncio.Queue()

        def subscribe(stream: str):
            if stream in subs:
                return
            mapped = channels_for(stream, row["account_id"])
            if mapped is None:
                out.put_nowait(json.dumps({"error": "Unknown stream type", "status": 400}))
                return
            channels, allowed = mapped

            def on_message(channel, msg, stream=stream, allowed=allowed):
                event = msg.get("event")
                if allowed is not None and event not in allowed:
                    return
                frame = {"stream": [stream], "event": event, "payload": encode_payload(msg.get("payload"))}
                out.put_nowait(json.dumps(frame, separators=(",", ":")))

            for c in channels:
                self.subscriber.add(c, on_message)
            subs[stream] = (channels, on_message)

        def unsubscribe(stream: str):
            item = subs.pop(stream, None)
            if item:
                for c in item[0]:
                    self.subscriber.remove(c, item[1])

        initial = request.query.get("stream")
        if initial:
            subscribe(initial)

        async def sender():
            while True:
                data = await out.get()
                await ws.send_str(data)

        send_task = loop.create_task(sender())
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    try:
                        m = json.loads(msg.data)
                    except ValueError:
                        continue
                    stream = m.get("stream")
                    if m.get("type") == "subscribe" and stream:
                        subscribe(stream)
                    elif m.get("type") == "unsubscribe" and stream:
                        unsubscribe(stream)
                elif msg.type in (WSMsgType.ERROR, WSMsgType.CLOSE):
                    break
        finally:
            send_task.cancel()
            for stream in list(subs):
                unsubscribe(stream)
            self.connected -= 1
            log.line(f"streaming: WebSocket closed account_id={row['account_id']} remote_ip={ip}")
        return ws

    async def sse(self, request: web.Request):
        name = request.match_info.get("name", "").strip("/").replace("/", ":")
        auth, _, err = await self.authenticate(request)
        if err is not None and name.startswith("user"):
            return err
        account_id = auth[0]["account_id"] if auth else None
        mapped = channels_for(name, account_id)
        if mapped is None:
            return web.json_response({"error": "Unknown stream type"}, status=400)
        channels, allowed = mapped
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                           "Cache-Control": "private, no-store",
                                           "Transfer-Encoding": "chunked"})
        await resp.prepare(request)
        out: asyncio.Queue = asyncio.Queue()

        def on_message(channel, msg):
            event = msg.get("event")
            if allowed is not None and event not in allowed:
                return
            out.put_nowait(f"event: {event}\ndata: {encode_payload(msg.get('payload'))}\n\n")

        for c in channels:
            self.subscriber.add(c, on_message)
        try:
            await resp.write(b":)\n")
            while True:
                try:
                    data = await asyncio.wait_for(out.get(), timeout=15)
                except asyncio.TimeoutError:
                    data = ":thump\n"
                await resp.write(data.encode())
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            for c in channels:
                self.subscriber.remove(c, on_message)
        return resp

    async def not_found(self, request: web.Request):
        return web.json_response({"error": "Not found"}, status=404)

    # -- run -------------------------------------------------------------------------------------------
    def run(self) -> None:
        bind = os.environ.get("BIND", "127.0.0.1")
        port = int(os.environ.get("PORT", "4000"))
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self.subscriber = Subscriber(self.cfg.redis_url(""), loop, self.cfg.redis_namespace)
        app = web.Application()
        app.router.add_get("/api/v1/streaming/health", self.health)
        app.router.add_get("/api/v1/streaming", self.websocket)
        app.router.add_get("/api/v1/streaming/", self.websocket)
        app.router.add_get("/api/v1/streaming/{name:.+}", self.sse)
        # aiohttp >= 3.9 takes shutdown_timeout on the runner (Debian 13: 3.11), 3.8 on the site (Debian 12)
        on_runner = "shutdown_timeout" in inspect.signature(web.BaseRunner.__init__).parameters
        runner = web.AppRunner(app, access_log=None, handle_signals=False,
                               **({"shutdown_timeout": 2} if on_runner else {}))
        loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, bind, port, backlog=1024, reuse_address=True,
                           **({} if on_runner else {"shutdown_timeout": 2}))
        log.line(f"streaming: Starting streaming API server worker (pid {os.getpid()}, "
                 f"NODE_ENV={self.cfg.env_name}, database {self.cfg.db_label()})")
        loop.run_until_complete(site.start())
        log.line(f"streaming: Streaming API now listening on http://{bind}:{port}")
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        loop.run_until_complete(stop.wait())
        log.line("streaming: Shutting down")
        self.subscriber.stop.set()
        loop.run_until_complete(runner.cleanup())
        sys.stdout.flush()
        os._exit(0)


def main() -> None:
    os.environ.setdefault("STANDIN_PROCESS", "streaming")
    Streaming().run()


if __name__ == "__main__":
    main()
