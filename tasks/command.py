"""The one command layer: every remote action of every task goes through `Remote`.

A command is described once (`Cmd`) and then, depending on the mode of the run:
  * executed over ssh (the real run), recorded in the run log with secrets masked;
  * printed as a copy-pasteable `ssh ALIAS -- '...'` line (`fab --dry`), connecting to nothing;
  * collected for the Markdown runbook (the same plan as --dry, rendered differently).
Read-only checks (`Remote.fact`) print as `# check: ...` in the last two modes and return UNKNOWN,
so a step planned offline always shows the action it would take.
"""
from __future__ import annotations

import io
import json
import re
import shlex
import sys
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

_SHELL_SYNTAX = re.compile(r"[|&;<>()$`\n*?~]|^\s*cd\s")


@dataclass(frozen=True)
class Cmd:
    """A command for one host. `user`: None runs as the ssh user, otherwise through sudo.

    `stdin` travels on standard input (how files and secrets reach a host: never on the command
    line); `secrets` are masked wherever the command or its output is shown; `stream` shows the
    command's own output live (progress of long work).
    """

    script: str
    user: str | None = "root"
    stdin: str | None = None
    secrets: tuple[Secret, ...] = ()
    stream: bool = False

    def line(self, interactive: bool = True) -> str:
        """The command line as run on the host. Real runs use `sudo -n` so nothing waits for a password."""
        if self.user is None:
            return self.script
        sudo = "sudo" if interactive else "sudo -n"
        if self.user != "root":
            sudo += f" -H -u {self.user}"
        if _SHELL_SYNTAX.search(self.script):
            return f"{sudo} sh -c {shlex.quote(self.script)}"
        return f"{sudo} {self.script}"

    def mask(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret.reveal(), str(secret))
        return text

    def shown_stdin(self) -> str | None:
        return None if self.stdin is None else self.mask(self.stdin)


def heredoc(text: str) -> tuple[str, str]:
    """A here-document delimiter that does not occur in `text`, and the body ending in a newline."""
    delimiter = "EOF"
    while delimiter in text.splitlines():
        delimiter += "_"
    return delimiter, text if text.endswith("\n") else text + "\n"


def quote(text: str) -> str:
    """Shell quoting that stays readable: double quotes when the text has single quotes but
    nothing that double quotes would expand."""
    if "'" in text and not re.search(r'[$`"\\!]', text):
        return f'"{text}"'
    return shlex.quote(text)


def ssh_line(alias: str, cmd: Cmd) -> str:
    """The copy-pasteable form: `ssh ALIAS -- 'CMD'`, with stdin as a quoted here-document."""
    text = f"ssh {alias} -- {quote(cmd.line())}"
    stdin = cmd.shown_stdin()
    if stdin is None:
        return text
    delimiter, body = heredoc(stdin)
    return f"{text} <<'{delimiter}'\n{body}{delimiter}"


class CommandFailed(Exception):
    """A command that changes state failed. The message names host, command and reason."""

    def __init__(self, alias: str, cmd: Cmd, out: Output):
        self.out = out
        super().__init__(f"on {alias}: `{cmd.mask(cmd.line())}` failed ({cmd.mask(out.why())})")


class HostUnreachable(Exception):
    """ssh to a host failed (network, authentication or host key)."""


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
        print(f"  {self.alias}$ {cmd.mask(cmd.line())}", file=self.mode.echo, flush=True)
        out = self._execute(cmd)
        if not out.ok:
            raise CommandFailed(self.alias, cmd, out)
        return out

    def fact(self, cmd: Cmd, parse: Callable[[Output], T]) -> T | _Unknown:
        """A read-only check: the parsed output, or UNKNOWN when planning."""
        if self.planning:
            self.mode.emit(Event("check", self.alias, cmd))
            return UNKNOWN
        return parse(self._execute(cmd))

    def write_file(self, path: str, text: str, *, owner: str = "root", mode: str = "0644",
                   secrets: tuple[Secret, ...] = ()) -> Output:
        """Write a whole file from stdin; `install` creates it with its final owner and mode."""
        script = f"install -D -m {mode} -o {owner} -g {owner} /dev/stdin {shlex.quote(path)}"
        return self.run(Cmd(script, stdin=text, secrets=secrets))

    def _execute(self, cmd: Cmd) -> Output:
        started = time.monotonic()
        try:
            result = self._connected().run(
                cmd.line(interactive=False), warn=True, hide=not cmd.stream, pty=False,
                in_stream=io.StringIO(cmd.stdin) if cmd.stdin is not None else False)
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
        out = Output(result.exited, result.stdout, result.stderr)
        self.mode.log.write(host=self.alias, role=self.role, command=cmd.mask(cmd.line()),
                            exit=out.exited, seconds=round(time.monotonic() - started, 3),
                            stdout=cmd.mask(out.stdout)[-4000:], stderr=cmd.mask(out.stderr)[-4000:])
        return out

    def _connected(self):
        if not self._connection.is_connected and self._known_hosts:
            self._known_hosts_file = self._known_hosts(self._connection)
        return self._connection

    def close(self) -> None:
        if self._connection is not None and self._connection.is_connected:
            self._connection.close()


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

    def close(self) -> None:
        for remote in self.hosts.values():
            remote.close()
