"""The output channel: the one place that writes to the operator's terminal.

Step code never prints. It speaks through its session (`s.say`, `s.show`, `s.note`), and the session
hands what it says to this channel in a real run, or to a plan (`fab --dry`, the runbook) as events.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Callable

from .shell import Cmd, ssh_line


@dataclass(frozen=True)
class Event:
    """One entry of a plan.

    kind: "step" (a step begins; `depth` counts the steps around it), "end" (it ends), "run" (an
    action), "check" (a read-only command; `passes` says what its answer looks like, `then` what the
    phase does with it, `planned` the placeholder later commands use for what it prints), "repeat"
    (repeat the checks before it until `title`, at most `timeout` s), "note" (a remark) or "text" (a
    document shown as it is, such as a script to copy).
    """

    kind: str
    alias: str = ""
    cmd: Cmd | None = None
    title: str = ""
    why: str = ""
    undo: str = ""
    depth: int = 0
    passes: str = ""
    then: str = ""
    planned: str = ""
    timeout: float = 0.0


class Console:
    """The operator's terminal (or whatever stdout is): lines, raw streamed output, progress."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stdout

    def line(self, text: str = "") -> None:
        print(text, file=self.stream, flush=True)

    def chunk(self, text: str) -> None:
        """Output streamed from a remote command, as it arrives."""
        self.stream.write(text)
        self.stream.flush()

    def progress(self, clock: Callable[[], float] = time.monotonic) -> Progress:
        return Progress(self.stream, clock)

    def event(self, event: Event) -> None:
        """The --dry rendering of a plan: shell lines, with checks, headings and notes as comments."""
        indent = "  " * event.depth
        if event.kind == "step":
            self.line(f"\n# {indent}== {event.title}" + (f": {event.why}" if event.why else ""))
        elif event.kind in ("note", "repeat"):
            text = (
                event.title
                if event.kind == "note"
                else (f"repeat the check above until {event.title} (at most {event.timeout:.0f} s)")
            )
            self.line("# " + text.replace("\n", "\n# "))
        elif event.kind == "text":
            self.line(event.title)
        elif event.kind == "check":
            self.line("# check: " + ssh_line(event.alias, event.cmd).replace("\n", "\n# "))
            if event.passes:
                self.line(f"#   expect: {event.passes}" + (f"; {event.then}" if event.then else ""))
        elif event.kind == "run":
            self.line(ssh_line(event.alias, event.cmd))


class Progress:
    """One line of progress for a wait: in a terminal it is rewritten in place with the seconds waited
    so far; otherwise (a log, a pipe) a new line is printed only when the text changes."""

    def __init__(self, out, clock: Callable[[], float] = time.monotonic):
        self.out, self.tty = out, getattr(out, "isatty", lambda: False)()
        self.clock = clock
        self.started, self.shown = clock(), None

    def show(self, text: str) -> None:
        if self.tty:
            print(f"\r\033[K{text} ({self.clock() - self.started:.0f} s)", end="", file=self.out, flush=True)
        elif text != self.shown:
            print(text, file=self.out, flush=True)
        self.shown = text

    def end(self) -> None:
        """Leave the line rewritten in place, so what follows starts on a line of its own."""
        if self.tty and self.shown is not None:
            print(file=self.out, flush=True)
