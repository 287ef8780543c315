"""The one command layer: every remote action of every task goes through `Remote`, every word a step
says goes through its `Session`.

A command is described once (`shell.Cmd`) and then, depending on the mode of the run:
  * executed over ssh (the real run), recorded in the run log with secrets masked;
  * printed as a copy-pasteable `ssh ALIAS -- '...'` line (`fab --dry`), connecting to nothing;
  * collected for the Markdown runbook (the same plan as --dry, rendered differently).
Read-only checks (`Remote.fact`, with a `facts.Fact`) print as `# check: ...` in the last two modes and
return UNKNOWN, so a step planned offline always shows the action it would take. Every wait is
`wait_until`, the one polling primitive.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, TypeVar

from paramiko import BadHostKeyException, SSHException

from . import files
from .core import UNKNOWN, Secret, StepFailed, _Unknown, known
from .facts import Fact
from .output import Console, Event, Progress
from .settings import Settings
from .shell import Cmd, Output, whole_file

T = TypeVar("T")
_DEFAULT = object()
# A real run shows at most this many lines of a command's input (a file it writes, a script): the run log
# keeps it whole, and `--dry` and the runbook print it whole for review before the run
SHOWN_INPUT_LINES = 30

__all__ = [
    "UNKNOWN",
    "Cmd",
    "CommandFailed",
    "Event",
    "HostUnreachable",
    "Live",
    "Plan",
    "Progress",
    "Remote",
    "RunLog",
    "Secret",
    "Session",
    "StepFailed",
    "known",
    "wait_until",
]


class CommandFailed(Exception):
    """A command that changes state failed. The message names host, command and reason."""

    def __init__(self, alias: str, cmd: Cmd, out: Output):
        if cmd.secret_output:
            out = Output(out.exited, "", out.stderr)
        self.out = out
        super().__init__(f"on {alias}: `{cmd.shown(SHOWN_INPUT_LINES)}` failed ({cmd.mask(out.why())})")


class HostUnreachable(Exception):
    """ssh to a host failed (network, authentication or host key)."""


# --- the run log -------------------------------------------------------------------------------


class RunLog:
    """Appends one JSON line per executed command (and per task and step start and end) to a file."""

    def __init__(self, path: Path):
        self.path = path
        files.private_dir(path.parent)  # refuses a folder open to others, before anything runs
        if path.exists():
            files.append_private(path, "")

    def write(self, **record) -> None:
        record = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **record}
        files.append_private(self.path, json.dumps(record) + "\n")


# --- modes ---------------------------------------------------------------------------------------


class Plan:
    """Offline mode (--dry, runbook): records events, hands each to `emit`, touches no host."""

    def __init__(self, emit: Callable[[Event], None] | None = None):
        self.emit = emit or Console().event
        self.depth = 0  # steps open around what is emitted now


class Live:
    """The real run: commands go over ssh and into the run log; what steps say goes to the console."""

    def __init__(self, log: RunLog, echo=None):
        self.log = log
        self.console = Console(echo)
        self.depth = 0

    @property
    def echo(self):
        return self.console.stream


# --- waiting: the one primitive ----------------------------------------------------------------------


def wait_until(
    mode: Plan | Live,
    probe: Callable[[], T],
    done: Callable[[T], bool],
    *,
    what: str,
    timeout: float,
    interval: float = 1.0,
    show: Callable[[T], str] = str,
    who: str = "",
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Call `probe` until `done(value)`; show progress when the value changes; StepFailed on timeout.
    In a plan the probe runs once (its checks are shown) and a "repeat until" line follows."""
    if isinstance(mode, Plan):
        probe()
        mode.emit(Event("repeat", title=what, timeout=timeout, depth=mode.depth))
        return UNKNOWN
    prefix = f"  {who}: " if who else "  "
    deadline, progress, shown = clock() + timeout, mode.console.progress(clock), None
    try:
        while True:
            value = probe()
            if done(value):
                return value
            shown = show(value)
            progress.show(f"{prefix}waiting until {what}: {shown}")
            if clock() > deadline:
                raise StepFailed(
                    f"{'on ' + who + ': ' if who else ''}gave up after {timeout:.0f} s waiting until "
                    f"{what} (last seen: {shown})"
                )
            sleep(interval)
    finally:
        progress.end()


# --- the remote handle ---------------------------------------------------------------------------


class Remote:
    """One host of the migration, in one mode. Task code talks to hosts only through this."""

    def __init__(self, role: str, alias: str, mode: Plan | Live, connection=None, known_hosts=None):
        self.role = role
        self.alias = alias
        self.mode = mode
        self._connection = connection
        self._known_hosts = known_hosts  # prepares a connection's host-key checking, returns the file
        self._known_hosts_file = None
        self._stable: dict[Fact, object] = {}  # answers of facts that do not change during a run

    @property
    def planning(self) -> bool:
        return isinstance(self.mode, Plan)

    def run(self, cmd: Cmd) -> Output:
        """An action: run it (or plan it). A failure raises CommandFailed."""
        if self.planning:
            self.mode.emit(Event("run", self.alias, cmd, depth=self.mode.depth))
            return Output(0)
        indent = "  " * self.mode.depth
        shown = cmd.shown(SHOWN_INPUT_LINES)
        self.mode.console.line(f"{indent}  {self.alias}$ " + shown.replace("\n", f"\n{indent}    "))
        out = self._execute(cmd)
        if not out.ok:
            raise CommandFailed(self.alias, cmd, out)
        return out

    def fact(self, fact: Fact[T], *, planned=_DEFAULT, then: str = "") -> T | _Unknown:
        """A read-only check: the parsed answer. When planning: `planned` (a stand-in value for text that
        later commands show, never for decisions), else the fact's own, else UNKNOWN. `then`: what the
        step does with the answer, for the runbook's reader."""
        if fact.stable and fact in self._stable:
            return self._stable[fact]
        if self.planning:
            value = fact.planned if planned is _DEFAULT else planned
            self.mode.emit(
                Event(
                    "check",
                    self.alias,
                    fact.command(),
                    passes=fact.describe(),
                    then=then,
                    planned=value if isinstance(value, str) and value.startswith("<") else "",
                    depth=self.mode.depth,
                )
            )
        else:
            value = fact.parse(self._execute(fact.command()))
        if fact.stable:
            self._stable[fact] = value
        return value

    def wait_for(
        self,
        fact: Fact[T],
        done: Callable[[T], bool],
        *,
        what: str,
        timeout: float,
        interval: float = 1.0,
        show: Callable[[T], str] = str,
    ) -> T | _Unknown:
        """Repeat a fact until `done(answer)` (see wait_until)."""
        return wait_until(
            self.mode,
            lambda: self.fact(fact),
            done,
            what=what,
            timeout=timeout,
            interval=interval,
            show=show,
            who=self.alias,
        )

    def write_file(
        self,
        path: str,
        text: str,
        *,
        owner: str = "root",
        mode: str = "0644",
        secrets: tuple[Secret, ...] = (),
    ) -> Output:
        """Replace a whole file, or create it, with its final owner and mode (see `shell.whole_file`): a
        transfer cut short (a killed run, a dropped connection) leaves the old file in place."""
        script, data = whole_file(path, text, owner=owner, mode=mode)
        return self.run(Cmd(script, stdin=data, secrets=secrets))

    def _execute(self, cmd: Cmd) -> Output:
        started = time.monotonic()
        try:
            out = _exec(self._connected(), cmd, self.mode.console)
        except BadHostKeyException as error:
            raise HostUnreachable(
                f"{self.alias}: the host key CHANGED (now {error.key.fingerprint}); refusing to connect. "
                f"If the host was reinstalled, verify the new key and replace its line in "
                f"{self._known_hosts_file}"
            ) from None
        except SSHException as error:
            if "not found in known_hosts" not in str(error):
                raise HostUnreachable(f"{self.alias}: ssh failed: {_said(error)}") from None
            raise HostUnreachable(
                f"{self.alias}: unknown host key (not in {self._known_hosts_file}); connect once with "
                f"`ssh {self.alias}` and verify the key, or set SSH_ACCEPT_NEW_HOST_KEYS=yes"
            ) from None
        except (OSError, EOFError) as error:
            raise HostUnreachable(f"{self.alias}: ssh failed: {_said(error)}") from None
        self.mode.log.write(
            host=self.alias,
            role=self.role,
            command=cmd.shown(),
            exit=out.exited,
            seconds=round(time.monotonic() - started, 3),
            stdout=f"<secret output, {len(out.stdout)} characters>"
            if cmd.secret_output
            else cmd.mask(out.stdout)[-4000:],
            stderr=cmd.mask(out.stderr)[-4000:],
        )
        return out

    def _connected(self):
        """The paramiko client of this host's connection, opened (with host-key checking) on first use."""
        if not self._connection.is_connected:
            if self._known_hosts:
                self._known_hosts_file = self._known_hosts(self._connection)
            self._connection.open()
            self._connection.transport.set_keepalive(15)
        return self._connection.client

    def close(self) -> None:
        if self._connection is not None and self._connection.is_connected:
            self._connection.close()


def _said(error: BaseException) -> str:
    """An exception's message; paramiko's EOFError and some of its SSHExceptions have none."""
    return str(error) or f"{type(error).__name__}: the connection was closed"


def _exec(client, cmd: Cmd, console: Console) -> Output:
    """Run one command on an ssh channel: stdin is fed alongside (a command that exits without reading
    it is no error), output is collected (and shown live for `stream`), the exit status returned."""
    channel = client.get_transport().open_session()
    channel.exec_command(cmd.line(interactive=False))
    data = cmd.input()
    feeder = threading.Thread(target=_feed, args=(channel, (data or "").encode()), daemon=True)
    feeder.start()
    stdout, stderr = bytearray(), bytearray()
    # sshd may report the exit status before the last output: read on until its EOF (or the channel's end)
    while (
        not (channel.exit_status_ready() and (channel.eof_received or channel.closed))
        or channel.recv_ready()
        or channel.recv_stderr_ready()
    ):
        progressed = False
        for ready, receive, buffer in (
            (channel.recv_ready, channel.recv, stdout),
            (channel.recv_stderr_ready, channel.recv_stderr, stderr),
        ):
            if ready():
                chunk = receive(65536)
                buffer += chunk
                progressed = True
                if cmd.stream:
                    console.chunk(cmd.mask(chunk.decode(errors="replace")))
        if not progressed:
            time.sleep(0.005)
    exited = channel.recv_exit_status()
    feeder.join(timeout=5)
    channel.close()
    return Output(exited, stdout.decode(errors="replace"), stderr.decode(errors="replace"))


def _feed(channel, data: bytes) -> None:
    try:
        if data:
            channel.sendall(data)
        channel.shutdown_write()
    except OSError:
        pass  # the command ended before reading all of its input; its exit status says how it went


# --- the session: hosts, steps, and what a step says -------------------------------------------------


@dataclass
class Session:
    """The hosts of one task run, by role, and the run's mode. Steps speak only through it."""

    mode: Plan | Live
    settings: Settings
    hosts: dict[str, Remote] = field(default_factory=dict)

    @property
    def old(self) -> Remote:
        return self.hosts["old"]

    @property
    def new(self) -> Remote:
        return self.hosts["new"]

    @property
    def planning(self) -> bool:
        return isinstance(self.mode, Plan)

    @contextlib.contextmanager
    def step(self, title: str, why: str = "", undo: str = "") -> Iterator[None]:
        """A step: a heading in plans and a progress line in real runs; the commands run inside it are its
        own, and a step opened inside another is its sub-step."""
        depth = self.mode.depth
        if self.planning:
            self.mode.emit(Event("step", title=title, why=why, undo=undo, depth=depth))
        else:
            self.mode.console.line(("  " * depth) + ("==> " if depth == 0 else "--> ") + title)
            self.mode.log.write(step=title)
        self.mode.depth = depth + 1
        try:
            yield
        finally:
            self.mode.depth = depth
            if self.planning:
                self.mode.emit(Event("end", title=title, depth=depth))
            else:
                self.mode.log.write(step_end=title)

    def say(self, text: str) -> None:
        """What a step found or did, in a sentence: a line in real runs, a note in plans."""
        if self.planning:
            self.mode.emit(Event("note", title=text, depth=self.mode.depth))
        else:
            self.mode.console.line(
                ("  " * self.mode.depth) + text.replace("\n", "\n" + "  " * self.mode.depth)
            )

    def show(self, text: str) -> None:
        """A document shown as it is (a table, JSON, a diff, a script to copy)."""
        if self.planning:
            self.mode.emit(Event("text", title=text, depth=self.mode.depth))
        else:
            self.mode.console.line(text)

    def note(self, text: str) -> None:
        """A remark for the reader of a plan (nothing happens in a real run)."""
        if self.planning:
            self.mode.emit(Event("note", title=text, depth=self.mode.depth))

    def wait_until(
        self,
        probe: Callable[[], T],
        done: Callable[[T], bool],
        *,
        what: str,
        timeout: float,
        interval: float = 1.0,
        show: Callable[[T], str] = str,
    ) -> T | _Unknown:
        """Poll something that is not one fact on one host (several facts, or a question asked from here)."""
        return wait_until(self.mode, probe, done, what=what, timeout=timeout, interval=interval, show=show)

    def planned(self) -> Session:
        """The same hosts in Plan mode: what a run would do, printed, with nothing contacted."""
        mode = Plan()
        return Session(
            mode, self.settings, {role: Remote(role, r.alias, mode) for role, r in self.hosts.items()}
        )

    def close(self) -> None:
        for remote in self.hosts.values():
            remote.close()
