"""Commands as values: what runs on a host, as whom, with what input, and what came back.

Nothing here touches a host. A `Cmd` is described once; the command layer (command.py) runs it,
prints it for `fab --dry`, or hands it to the runbook, all from this one description.
"""

from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass

from .core import Secret

_SHELL_SYNTAX = re.compile(r"[|&;<>()$`\n*?~]|^\s*cd\s")
# A plan's stand-in for a value read on a host (`<DB_USER>`, `<new's tunnel public key>`): not shell syntax,
# so a command is run the same way (a plain line or a script) whether it holds the value or its stand-in.
PLACEHOLDER = re.compile(r"<[A-Za-z][^<>\n]*[^<>\s]>")


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
        return bool(_SHELL_SYNTAX.search(PLACEHOLDER.sub("", self.script)))

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

    def shown(self, most: int | None = None) -> str:
        """The command as shown to people and logs: the line, then its input; secrets masked. The input is
        masked whole before its last newline goes: a secret that is a whole file ends with that newline.
        With `most`, an input of more lines is cut there (after masking, so no secret is cut in two)."""
        data = self.input()
        if data is None:
            return self.mask(self.line())
        lines = self.mask(data).rstrip("\n").split("\n")
        if most is not None and len(lines) > most:
            lines = [*lines[:most], f"... {len(lines) - most} more lines, which `fab --dry` prints in full"]
        return self.mask(self.line() + "\n" + "\n".join(lines))


@dataclass(frozen=True)
class Output:
    """What a remote command returned."""

    exited: int
    stdout: str = ""
    stderr: str = ""

    @property
    def ok(self) -> bool:
        return self.exited == 0

    def why(self) -> str:
        """A one-line reason for a failure, for error messages: the first line that names an error
        (nginx -t ends with a generic line), else the last line."""
        lines = [x.strip() for x in (self.stderr or self.stdout).strip().splitlines() if x.strip()]
        named = [x for x in lines if re.search(r"\[emerg\]|\berror\b|ERROR|FATAL", x)]
        return (named or lines or [f"exit code {self.exited}"])[0 if named else -1]


def heredoc(text: str, delimiter: str = "EOF") -> tuple[str, str]:
    """A here-document delimiter that does not occur in `text`, and the body ending in a newline."""
    while delimiter in text.splitlines():
        delimiter += "_"
    return delimiter, text if text.endswith("\n") or not text else text + "\n"


END_OF_FILE = "# end of file, as sent by mastodon-live-migration"


def whole_file(path: str, text: str, *, owner: str, mode: str) -> tuple[str, str]:
    """The script and its input that replace `path` with `text` only when all of it arrived.

    The input is `text`, a newline, and the END_OF_FILE line. The script saves it in a temporary file
    beside `path`, checks that the last line is END_OF_FILE, cuts the marker and the newline before it
    off, and renames the file over `path`. A shell given a here-document cut short runs it anyway with
    what arrived; the check makes that fail instead. The marker is checked rather than a byte count,
    because a runbook's copy shows placeholders of other lengths where secrets go. The temporary file
    starts with a dot and has no suffix, so nothing that reads a folder's `*.conf` or units picks it up."""
    folder, name = os.path.split(path)
    marker_bytes = len(END_OF_FILE.encode()) + 2  # the newline before the marker line, and its own
    script = (
        f"set -e; mkdir -p {shlex.quote(folder or '.')}\n"
        f"t=$(mktemp {shlex.quote(os.path.join(folder, '.' + name))}.mig-XXXXXX); trap 'rm -f \"$t\"' EXIT\n"
        f'cat > "$t"\n'
        f'if [ "$(tail -n 1 "$t")" != {quoted(END_OF_FILE)} ]; then '
        f"echo {quoted(f'the file arrived cut short; {path} was not changed')} >&2; exit 1; fi\n"
        f'truncate -s -{marker_bytes} "$t"; chown {owner}:{owner} "$t"; chmod {mode} "$t"\n'
        f'mv -f "$t" {shlex.quote(path)}'
    )
    return script, f"{text}\n{END_OF_FILE}\n"


def quote(text: str) -> str:
    """Shell quoting that stays readable: double quotes when the text has single quotes but
    nothing that double quotes would expand."""
    if "'" in text and not re.search(r'[$`"\\!]', text):
        return f'"{text}"'
    return shlex.quote(text)


def quoted(text: str) -> str:
    """Always single-quoted: a plan (with placeholders) and a real run (with values) show the same shape."""
    return "'" + text.replace("'", "'\"'\"'") + "'"


def ssh_line(alias: str, cmd: Cmd) -> str:
    """The copy-pasteable form: `ssh ALIAS -- 'CMD'`, with stdin as a quoted here-document."""
    text = f"ssh {alias} -- {quote(cmd.line())}"
    stdin = cmd.input()
    if stdin is None:
        return text
    delimiter, body = heredoc(cmd.mask(stdin))
    return f"{text} <<'{delimiter}'\n{body}{delimiter}"
