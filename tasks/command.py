"""The one command layer: every remote action of every task goes through `Remote`.

A command is described once (`Cmd`) and then, depending on the mode of the run:
  * executed over ssh (the real run), recorded in the run log with secrets masked;
  * printed as a copy-pasteable `ssh ALIAS -- '...'` line (`fab --dry`), connecting to nothing;
  * collected for the Markdown runbook (the same plan as --dry, rendered differently).
Read-only checks (`Remote.fact`) print as `# check: ...` in the last two modes and return UNKNOWN,
so a step planned offline always shows the action it would take.
"""
from __future__ import annotations

import json
import re
import shlex
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, TypeVar

from paramiko import BadHostKeyException, SSHException

from .facts import Output
from .settings import Settings

T = TypeVar("T")


class Secret:
    """A value that must never be printed, logged or put on a command line."""

    def __init__(self, value: str, where: str):
        self._value = value
        self.where = where  # where the secret is kept; shown instead of the value

    def reveal(self) -> str:
        return self._value

    def __str__(self) -> str:
        return f"<secret: {self.where}>"

    __repr__ = __str__


class _Unknown:
    """The value of a fact in a run that connects to nothing."""

    def __bool__(self):
        return False

    def __repr__(self):
        return "UNKNOWN"


UNKNOWN = _Unknown()


def known(value) -> bool:
    """False for a fact's value in a plan: code that skips work must skip only on known facts."""
    return value is not UNKNOWN

_SHELL_SYNTAX = re.compile(r"[|&;<>()$`\n*?~]|^\s*cd\s")


@dataclass(frozen=True)
class Cmd:
    """A command for one host. `user`: None runs as the ssh user, otherwise through sudo.

    `stdin` travels on standard input (how files and secrets reach a host: never on the command
    line); `secrets` are masked wherever the command or its output is shown; `secret_output` keeps
    what the command prints out of logs and messages; `stream` shows the command's own output live
    (progress of long work).
    """

    script: str
    user: str | None = "root"
    stdin: str | None = None
    secrets: tuple[Secret, ...] = ()
    secret_output: bool = False
    stream: bool = False

    @property
    def scripted(self) -> bool:
        """Shell syntax (pipes, &&, redirects, $) runs as a script on `sh -s`'s stdin: no nested quoting."""
        return bool(_SHELL_SYNTAX.search(self.script))

    def line(self, interactive: bool = True) -> str:
        """The command line run on the host. Real runs use `sudo -n` so nothing waits for a password."""
        program = "sh -s" if self.scripted else self.script
        if self.user is None:
            return program
        sudo = "sudo" if interactive else "sudo -n"
        if self.user != "root":
            sudo += f" -H -u {self.user}"
        return f"{sudo} {program}"

    def input(self) -> str | None:
        """What the command reads on stdin: the data, or the script (with the data as its here-document)."""
        if not self.scripted:
            return self.stdin
        if self.stdin is None:
            return self.script + "\n"
        delimiter, body = heredoc(self.stdin, "DATA")
        return f"{{ {self.script}\n}} <<'{delimiter}'\n{body}{delimiter}\n"

    def mask(self, text: str) -> str:
        for secret in self.secrets:
            if secret.reveal():  # an empty value would "match" between every two characters
                text = text.replace(secret.reveal(), str(secret))
        return text

    def shown(self) -> str:
        """The command as shown to people and logs: the line, then its input; secrets masked."""
        return self.mask(self.line() + ("" if self.input() is None else "\n" + self.input().rstrip("\n")))


def heredoc(text: str, delimiter: str = "EOF") -> tuple[str, str]:
    """A here-document delimiter that does not occur in `text`, and the body ending in a newline."""
    while delimiter in text.splitlines():
        delimiter += "_"
    return delimiter, text if text.endswith("\n") or not text else text + "\n"


def quote(text: str) -> str:
    """Shell quoting that stays readable: double quotes when the text has single quotes but
    nothing that double quotes would expand."""
    if "'" in text and not re.search(r'[$`"\\!]', text):
        return f'"{text}"'
    return shlex.quote(text)


def ssh_line(alias: str, cmd: Cmd) -> str:
    """The copy-pasteable form: `ssh ALIAS -- 'CMD'`, with stdin as a quoted here-document."""
    text = f"ssh {alias} -- {quote(cmd.line())}"
    stdin = cmd.input()
    if stdin is None:
        return text
    delimiter, body = heredoc(cmd.mask(stdin))
    return f"{text} <<'{delimiter}'\n{body}{delimiter}"


class CommandFailed(Exception):
    """A command that changes state failed. The message names host, command and reason."""

    def __init__(self, alias: str, cmd: Cmd, out: Output):
        if cmd.secret_output:
            out = Output(out.exited, "", out.stderr)
        self.out = out
        super().__init__(f"on {alias}: `{cmd.shown()}` failed ({cmd.mask(out.why())})")


class HostUnreachable(Exception):
    """ssh to a host failed (network, authentication or host key)."""


class StepFailed(Exception):
    """A step could not reach its goal (a wait timed out, a verification failed); the message says
    what state the hosts are in and what to do."""


# --- events: what a planned run shows ------------------------------------------------------------

@dataclass(frozen=True)
class Event:
    """One entry of a plan: a step heading, an action, a check or a note."""

    kind: str  # "step", "run", "check", "note"
    alias: str = ""
    cmd: Cmd | None = None
    title: str = ""
    why: str = ""
    undo: str = ""


def print_event(event: Event, out=None) -> None:
    """The --dry rendering: shell lines, with checks and headings as comments."""
    out = out or sys.stdout
    if event.kind == "step":
        print(f"\n# == {event.title}" + (f": {event.why}" if event.why else ""), file=out)
    elif event.kind == "note":
        print(f"# {event.title}", file=out)
    elif event.kind == "check":
        print("# check: " + ssh_line(event.alias, event.cmd).replace("\n", "\n# "), file=out)
    else:
        print(ssh_line(event.alias, event.cmd), file=out)


# --- the run log -------------------------------------------------------------------------------

class RunLog:
    """Appends one JSON line per executed command (and per task start/end) to a file."""

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, **record) -> None:
        record = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **record}
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")


# --- modes ---------------------------------------------------------------------------------------

class Plan:
    """Offline mode (--dry, runbook): records events, hands each to `emit`, touches no host."""

    def __init__(self, emit: Callable[[Event], None] = print_event):
        self.emit = emit


class Live:
    """The real run: commands go over ssh and into the run log."""

    def __init__(self, log: RunLog, echo=None):
        self.log = log
        self.echo = echo or sys.stdout


class Progress:
    """One line of progress for a wait: in a terminal it is rewritten in place with the seconds waited
    so far; otherwise (a log, a pipe) a new line is printed only when the text changes."""

    def __init__(self, out):
        self.out, self.tty = out, getattr(out, "isatty", lambda: False)()
        self.started, self.shown = time.monotonic(), None

    def show(self, text: str) -> None:
        if self.tty:
            print(f"\r\033[K{text} ({time.monotonic() - self.started:.0f} s)", end="", file=self.out, flush=True)
        elif text != self.shown:
            print(text, file=self.out, flush=True)
        self.shown = text

    def end(self) -> None:
        """Leave the line rewritten in place, so what follows starts on a line of its own."""
        if self.tty and self.shown is not None:
            print(file=self.out, flush=True)


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

    @property
    def planning(self) -> bool:
        return isinstance(self.mode, Plan)

    def run(self, cmd: Cmd) -> Output:
        """An action: run it (or plan it). A failure raises CommandFailed."""
        if self.planning:
            self.mode.emit(Event("run", self.alias, cmd))
            return Output(0)
        print(f"  {self.alias}$ " + cmd.shown().replace("\n", "\n    "), file=self.mode.echo, flush=True)
        out = self._execute(cmd)
        if not out.ok:
            raise CommandFailed(self.alias, cmd, out)
        return out

    def fact(self, cmd: Cmd, parse: Callable[[Output], T], planned=UNKNOWN) -> T | _Unknown:
        """A read-only check: the parsed output. When planning: `planned` (a stand-in value for
        text that later commands show, never for decisions), else UNKNOWN."""
        if self.planning:
            self.mode.emit(Event("check", self.alias, cmd))
            return planned
        return parse(self._execute(cmd))

    def wait_for(self, cmd: Cmd, parse: Callable[[Output], T], done: Callable[[T], bool], *,
                 what: str, timeout: float, interval: float = 1.0, show=str) -> T | _Unknown:
        """Repeat a check until `done(value)`; show progress when the value changes; StepFailed on timeout."""
        if self.planning:
            self.mode.emit(Event("check", self.alias, cmd))
            self.mode.emit(Event("note", title=f"repeat the check above until {what} (at most {timeout:.0f} s)"))
            return UNKNOWN
        deadline, progress, shown = time.monotonic() + timeout, Progress(self.mode.echo), None
        try:
            while True:
                value = parse(self._execute(cmd))
                if done(value):
                    return value
                shown = show(value)
                progress.show(f"  {self.alias}: waiting until {what}: {shown}")
                if time.monotonic() > deadline:
                    raise StepFailed(f"on {self.alias}: gave up after {timeout:.0f} s waiting until {what} "
                                     f"(last seen: {shown})")
                time.sleep(interval)
        finally:
            progress.end()

    def write_file(self, path: str, text: str, *, owner: str = "root", mode: str = "0644",
                   secrets: tuple[Secret, ...] = ()) -> Output:
        """Write a whole file from stdin; `install` creates it with its final owner and mode."""
        script = f"install -D -m {mode} -o {owner} -g {owner} /dev/stdin {shlex.quote(path)}"
        return self.run(Cmd(script, stdin=text, secrets=secrets))

    def _execute(self, cmd: Cmd) -> Output:
        started = time.monotonic()
        try:
            out = _exec(self._connected(), cmd, self.mode.echo)
        except BadHostKeyException as error:
            raise HostUnreachable(
                f"{self.alias}: the host key CHANGED (now {error.key.fingerprint}); refusing to connect. If the "
                f"host was reinstalled, verify the new key and replace its line in {self._known_hosts_file}") from None
        except SSHException as error:
            if "not found in known_hosts" not in str(error):
                raise HostUnreachable(f"{self.alias}: ssh failed: {error}") from None
            raise HostUnreachable(
                f"{self.alias}: unknown host key (not in {self._known_hosts_file}); connect once with "
                f"`ssh {self.alias}` and verify the key, or set SSH_ACCEPT_NEW_HOST_KEYS=yes") from None
        except (OSError, EOFError) as error:
            raise HostUnreachable(f"{self.alias}: ssh failed: {error}") from None
        self.mode.log.write(host=self.alias, role=self.role, command=cmd.shown(),
                            exit=out.exited, seconds=round(time.monotonic() - started, 3),
                            stdout=f"<secret output, {len(out.stdout)} characters>" if cmd.secret_output
                            else cmd.mask(out.stdout)[-4000:], stderr=cmd.mask(out.stderr)[-4000:])
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


def _exec(client, cmd: Cmd, echo) -> Output:
    """Run one command on an ssh channel: stdin is fed alongside (a command that exits without reading
    it is no error), output is collected (and echoed live for `stream`), the exit status returned."""
    channel = client.get_transport().open_session()
    channel.exec_command(cmd.line(interactive=False))
    data = cmd.input()
    feeder = threading.Thread(target=_feed, args=(channel, (data or "").encode()), daemon=True)
    feeder.start()
    stdout, stderr = bytearray(), bytearray()
    while not channel.exit_status_ready() or channel.recv_ready() or channel.recv_stderr_ready():
        progressed = False
        for ready, receive, buffer in ((channel.recv_ready, channel.recv, stdout),
                                       (channel.recv_stderr_ready, channel.recv_stderr, stderr)):
            if ready():
                chunk = receive(65536)
                buffer += chunk
                progressed = True
                if cmd.stream:
                    echo.write(chunk.decode(errors="replace"))
                    echo.flush()
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


def note(remote_or_mode, text: str) -> None:
    """A remark in a plan (nothing happens in a real run)."""
    mode = getattr(remote_or_mode, "mode", remote_or_mode)
    if isinstance(mode, Plan):
        mode.emit(Event("note", title=text))


@dataclass
class Session:
    """The hosts of one task run, by role, and the run's mode."""

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

    def step(self, title: str, why: str = "", undo: str = "") -> None:
        """Announce a step: a heading in plans, a progress line in real runs."""
        if self.planning:
            self.mode.emit(Event("step", title=title, why=why, undo=undo))
        else:
            print(f"==> {title}", file=self.mode.echo, flush=True)
            self.mode.log.write(step=title)

    def planned(self) -> "Session":
        """The same hosts in Plan mode: what a run would do, printed, with nothing contacted."""
        mode = Plan()
        return Session(mode, self.settings, {role: Remote(role, r.alias, mode) for role, r in self.hosts.items()})

    def close(self) -> None:
        for remote in self.hosts.values():
            remote.close()
