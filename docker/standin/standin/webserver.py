"""The web process: Puma in cluster mode with preload_app!, as Mastodon runs it.

- Cold start: boot the app (BOOT_SECONDS, reading .env.production), then bind BIND:PORT (127.0.0.1:3000).
  Connections are refused until the socket is bound, as with Puma's load_and_bind.
- SIGUSR1 (`systemctl reload mastodon-web`): a phased restart is not available with preload_app!, so Puma does
  a hot restart: stop accepting, let in-flight requests finish, then exec itself again (same PID) keeping the
  listening socket open. The new image re-reads .env.production and boots (BOOT_SECONDS); meanwhile new
  connections wait in the socket's backlog: they are delayed, not refused.
- SIGTERM / SIGINT: stop accepting, finish in-flight requests, exit 0.
- Requests are handled by a pool of WEB_CONCURRENCY x MAX_THREADS threads (2 x 5), each with its own database
  connection; `Connection: close` on every response.
"""

from __future__ import annotations

import http.server
import os
import queue
import selectors
import signal
import socket
import sys
import threading
import time

from . import config as config_mod
from . import log
from .webapp import STATUS_TEXT, App, Request, Response

FD_ENV = "STANDIN_PUMA_INHERIT_FD"
# What a hot restart execs (Puma re-runs its own command line). Entry points set this; `python3 -m` is the
# default.
RESTART_ARGV: list[str] | None = None
PUMA_VERSION = "6.4.3"
MAX_BODY = 100 * 1024 * 1024


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "Puma"
    sys_version = ""
    timeout = 30

    def __init__(self, sock, addr, app: App):
        self.app = app
        super().__init__(sock, addr, None)

    def log_message(self, fmt, *args):  # the app logs requests itself
        pass

    def handle_one_request(self):
        try:
            self.raw_requestline = self.rfile.readline(65537)
            if not self.raw_requestline:
                self.close_connection = True
                return
            if len(self.raw_requestline) > 65536:
                self.send_error(414)
                return
            if not self.parse_request():
                return
            self._dispatch()
            self.close_connection = True
        except (TimeoutError, socket.timeout, ConnectionError):
            self.close_connection = True

    def _dispatch(self):
        length = self.headers.get("Content-Length")
        body = b""
        if length:
            try:
                n = int(length)
            except ValueError:
                self.send_error(400)
                return
            if n > MAX_BODY:
                self.send_error(413)
                return
            body = self.rfile.read(n)
        elif (self.headers.get("Transfer-Encoding") or "").lower() == "chunked":
            body = self._read_chunked()
        peer = self.client_address[0] if isinstance(self.client_address, tuple) else "127.0.0.1"
        req = Request(self.command, self.path, self.headers, body, peer)
        try:
            resp = self.app(req)
        except Exception as e:  # last resort; the app normally turns errors into 500 itself
            log.line(f"[{req.request_id}] unhandled {type(e).__name__}: {e}")
            resp = Response(500, b"Internal Server Error", "text/plain")
        self._write(resp, head=self.command == "HEAD")

    def _read_chunked(self) -> bytes:
        out = bytearray()
        while True:
            size_line = self.rfile.readline(1024)
            size = int(size_line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass
                return bytes(out)
            out += self.rfile.read(size)
            self.rfile.readline(1024)
            if len(out) > MAX_BODY:
                raise ConnectionError("body too large")

    def _write(self, resp: Response, head: bool = False):
        reason = STATUS_TEXT.get(resp.status, "")
        lines = [f"HTTP/1.1 {resp.status} {reason}"]
        for k, v in resp.headers:
            lines.append(f"{k}: {v}")
        lines.append(f"Content-Length: {len(resp.body)}")
        lines.append("Connection: close")
        data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace")
        if not head:
            data += resp.body
        self.wfile.write(data)
        self.wfile.flush()


class Server:
    def __init__(self):
        self.cfg = config_mod.load()
        self.threads = max(1, self.cfg.int("MAX_THREADS", 5)) * max(1, self.cfg.int("WEB_CONCURRENCY", 2))
        self.sock: socket.socket | None = None
        self.app: App | None = None
        self.work: queue.Queue = queue.Queue()
        self.busy = 0
        self.busy_lock = threading.Lock()
        self.stop_reason: str | None = None
        self.wakeup_r, self.wakeup_w = os.pipe()
        os.set_blocking(self.wakeup_w, False)

    # -- lifecycle -------------------------------------------------------------------------------------
    def run(self) -> None:
        inherited = os.environ.pop(FD_ENV, None)
        bind = os.environ.get("BIND", "127.0.0.1")
        port = int(os.environ.get("PORT", "3000"))
        mode = "cluster" if self.cfg.int("WEB_CONCURRENCY", 2) > 1 else "single"
        log.puma(f"Puma starting in {mode} mode...")
        log.puma(f"* Puma version: {PUMA_VERSION} (stand-in, python {sys.version.split()[0]}) "
                 f"(\"The Eagle of Durango\")")
        log.puma(f"*  Min threads: {self.cfg.int('MAX_THREADS', 5)}")
        log.puma(f"*  Max threads: {self.cfg.int('MAX_THREADS', 5)}")
        log.puma(f"*  Environment: {self.cfg.env_name}")
        log.puma(f"*   Master PID: {os.getpid()}")
        log.puma(f"*      Workers: {self.cfg.int('WEB_CONCURRENCY', 2)}")
        log.puma("*     Restarts: (\u2714) hot (\u2716) phased")
        if inherited is not None:
            self.sock = socket.socket(fileno=int(inherited))
            log.puma(f"* Inherited {self._sock_url()}")
        signal.signal(signal.SIGUSR1, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGUSR2, self._on_signal)
        signal.signal(signal.SIGHUP, self._on_signal)     # Puma without stdout_redirect: HUP behaves like INT
        log.puma("* Preloading application")
        self._boot()
        if self.sock is None:
            self.sock = self._bind(bind, port)
            log.puma(f"* Listening on {self._sock_url()}")
        log.puma("Use Ctrl-C to stop")
        for _ in range(self.threads):
            threading.Thread(target=self._worker, daemon=True).start()
        self._accept_loop()
        self._drain()
        if self.stop_reason == "restart":
            self._exec_restart()
        log.puma("- Goodbye!")
        sys.stdout.flush()
        os._exit(0)

    def _boot(self) -> None:
        boot = self.cfg.boot_seconds
        deadline = time.monotonic() + boot
        while time.monotonic() < deadline:     # mimic Rails boot time; signals still handled
            time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))
        self.app = App(self.cfg)
        log.puma(f"* Database: {self.cfg.db_label()} "
                 f"(from {', '.join(str(f.name) for f in self.cfg.files if f.exists()) or 'environment'})")

    def _bind(self, host: str, port: int) -> socket.socket:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        s = socket.socket(family, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, port))
        s.listen(1024)
        return s

    def _sock_url(self) -> str:
        host, port = self.sock.getsockname()[:2]
        return f"http://{host}:{port}" if ":" not in host else f"http://[{host}]:{port}"

    def _on_signal(self, signum, frame) -> None:
        if signum == signal.SIGUSR1:
            self.stop_reason = self.stop_reason or "restart"
        elif signum == signal.SIGUSR2:
            self.stop_reason = self.stop_reason or "restart"
        else:
            self.stop_reason = "stop"
        try:
            os.write(self.wakeup_w, b"x")
        except OSError:
            pass

    def _accept_loop(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self.sock, selectors.EVENT_READ)
        sel.register(self.wakeup_r, selectors.EVENT_READ)
        self.sock.setblocking(False)
        while self.stop_reason is None:
            for key, _ in sel.select(timeout=1.0):
                if key.fileobj is self.sock:
                    while True:
                        try:
                            conn, addr = self.sock.accept()
                        except (BlockingIOError, InterruptedError):
                            break
                        conn.setblocking(True)
                        self.work.put((conn, addr))
                else:
                    try:
                        os.read(self.wakeup_r, 64)
                    except OSError:
                        pass
        sel.close()
        if self.stop_reason == "restart":
            log.puma("- phased-restart called but not available, restarting normally.")
            log.puma("* Restarting...")
        else:
            log.puma("- Gracefully stopping, waiting for requests to finish")

    def _worker(self) -> None:
        while True:
            item = self.work.get()
            if item is None:
                return
            conn, addr = item
            with self.busy_lock:
                self.busy += 1
            try:
                conn.settimeout(30)
                _Handler(conn, addr, self.app)
            except Exception:
                pass
            finally:
                try:
                    conn.close()
                except OSError:
                    pass
                with self.busy_lock:
                    self.busy -= 1
                self.work.task_done()

    def _drain(self, timeout: float = 30.0) -> None:
        """In-flight requests (accepted connections) finish; connections still in the backlog stay there."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.busy_lock:
                idle = self.busy == 0
            if idle and self.work.empty():
                break
            time.sleep(0.02)
        if self.app is not None:
            self.app.close()

    def _exec_restart(self) -> None:
        fd = self.sock.fileno()
        self.sock.setblocking(True)
        os.set_inheritable(fd, True)
        env = dict(os.environ)
        env[FD_ENV] = str(fd)
        sys.stdout.flush()
        sys.stderr.flush()
        argv = RESTART_ARGV or [sys.executable, "-m", "standin.webserver"] + sys.argv[1:]
        os.execve(argv[0], argv, env)


def main() -> None:
    os.environ.setdefault("STANDIN_PROCESS", "puma")
    Server().run()


if __name__ == "__main__":
    main()
