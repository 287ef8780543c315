"""Line logging to stdout (systemd puts it in the journal), one lock so threads don't interleave."""

from __future__ import annotations

import os
import sys
import threading
import time

_lock = threading.Lock()


def line(msg: str, stream=None) -> None:
    stream = stream or sys.stdout
    with _lock:
        try:
            stream.write(msg.rstrip("\n") + "\n")
            stream.flush()
        except (BrokenPipeError, ValueError):
            pass


def rails(msg: str) -> None:
    """Ruby's Logger::Formatter, as Mastodon's production logger prints: `I, [time #pid]  INFO -- : msg`."""
    ts = (time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
          + f".{int(time.time() * 1_000_000) % 1_000_000:06d}")
    line(f"I, [{ts} #{os.getpid()}]  INFO -- : {msg}")


def puma(msg: str) -> None:
    line(f"[{os.getpid()}] {msg}")


def sidekiq(msg: str, level: str = "INFO", **fields) -> None:
    ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + f".{int(time.time() * 1000) % 1000:03d}Z"
    ctx = " ".join(f"{k}={v}" for k, v in fields.items() if v is not None)
    line(f"{ts} pid={os.getpid()} tid={_tid()}{(' ' + ctx) if ctx else ''} {level}: {msg}")


def _tid() -> str:
    # Sidekiq's tid: the thread's object id in base 36
    n = threading.get_ident() ^ os.getpid()
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    n &= 0xFFFFFFFFFF
    while n:
        n, r = divmod(n, 36)
        out = digits[r] + out
    return out or "0"


def tid() -> str:
    return _tid()
