"""runbook: the whole migration as copy-paste Markdown, from the same steps the phases run.

Each phase's step function runs in Plan mode against a Session whose events are collected instead of
printed: the runbook shows exactly the commands and checks that phase runs, so the two cannot drift.
`runbook_commands` and `drift` let a test hold a real run's log against the runbook.
"""
from __future__ import annotations

import contextlib
import inspect
import io
import re
from dataclasses import dataclass
from typing import Callable

from invoke.exceptions import Exit

from . import phases
from .command import Event, Plan, Remote, Session, ssh_line
from .executor import two_host_task
from .settings import Settings


@dataclass(frozen=True)
class Phase:
    number: int
    name: str
    task: str  # the fab task that runs it
    steps: str  # the name of its step function in phases.py
    preconditions: str
    flags: str = ""  # what the task needs to act

    def command(self, cfg: Settings) -> str:
        return f"fab -H {cfg.old_ssh},{cfg.new_ssh} {self.task}" + (f" {self.flags}" if self.flags else "")

    def step_function(self) -> Callable[[Session], None] | None:
        """The function that runs the phase's steps; None while the phase is not built yet."""
        found = getattr(phases, self.steps, None)
        return found if inspect.isfunction(found) else None

    def purpose(self) -> str:
        """What `fab --help TASK` says: the task's docstring."""
        doc = inspect.getdoc(getattr(phases, self.task.replace("-", "_"))) or ""
        return re.sub(r"^Phase \d+: ", "", doc)


PHASES = (
    Phase(1, "replicate", "phase1-replicate", "replicate",
          "ssh and passwordless sudo on both hosts; the same PostgreSQL major version on both; new's data "
          "directory empty (a fresh install) and room for old's databases; the tunnel port free on new."),
    Phase(2, "proxy", "phase2-proxy", "proxy",
          "phase 1 done: new streams from old with a lag under MAX_LAG_BYTES (checked first)."),
    Phase(3, "failover", "phase3-failover", "failover",
          "phase 2 done: old's nginx proxies everything to new (checked first, else stopping old's Mastodon "
          "would be downtime); new's replica streams with a small lag."),
    Phase(4, "dns", "phase4-dns", "move_dns",
          "phase 3 done: new is the primary. `dns --lower-ttl` ran at least the original TTL ago (the "
          "cutover refuses otherwise, unless --force)."),
    Phase(5, "cleanup", "cleanup", "clean_up",
          "phase 4 done, and the time it printed has passed: no resolver still holds old's address.", "--apply"),
)


def phase_by_number(number: int) -> Phase:
    for phase in PHASES:
        if phase.number == number:
            return phase
    raise Exit(f"--phase takes 1 to {len(PHASES)}; got {number}", code=2)


# --- planning: a phase's events, as its real run would show them --------------------------------

class _PrintsAsNotes(io.TextIOBase):
    """What step code prints while planning, kept in place among the events as notes."""

    def __init__(self, events: list[Event]):
        self.events, self.pending = events, ""

    def write(self, text: str) -> int:
        self.pending += text
        return len(text)

    def flush_note(self) -> None:
        if self.pending.strip():
            self.events.append(Event("note", title=self.pending.strip("\n")))
        self.pending = ""


def plan(cfg: Settings, phase: Phase) -> list[Event]:
    """The events of one phase planned offline (empty when the phase is not built yet)."""
    steps = phase.step_function()
    if steps is None:
        return []
    events: list[Event] = []
    printed = _PrintsAsNotes(events)

    def collect(event: Event) -> None:
        printed.flush_note()
        events.append(event)

    mode = Plan(collect)
    session = Session(mode, cfg, {role: Remote(role, alias, mode) for role, alias in cfg.roles.items()})
    with contextlib.redirect_stdout(printed):
        steps(session)
    printed.flush_note()
    return events


@dataclass
class PlannedStep:
    heading: Event  # kind "step"; an untitled one holds the checks made before the first step
    events: list[Event]

    @property
    def commands(self) -> list[str]:
        """Its commands (actions and checks) as the run log records them."""
        return [event.cmd.shown() for event in self.events if event.cmd is not None]


def planned_steps(cfg: Settings, phase: Phase) -> list[PlannedStep]:
    steps = [PlannedStep(Event("step"), [])]
    for event in plan(cfg, phase):
        if event.kind == "step":
            steps.append(PlannedStep(event, []))
        else:
            steps[-1].events.append(event)
    return steps


def runbook_steps(phase: int, cfg: Settings) -> list[tuple[str, list[str]]]:
    """Each step's title and its commands, in plan order ("" first: checks before the first step)."""
    return [(step.heading.title, step.commands) for step in planned_steps(cfg, phase_by_number(phase))]


def runbook_commands(phase: int, cfg: Settings) -> list[str]:
    """Every command the phase runs (actions and checks), in plan order, as the run log records them."""
    return [command for _, commands in runbook_steps(phase, cfg) for command in commands]


# --- drift: a real run's log against the runbook -------------------------------------------------

# Parts of a planned command that a real run fills in differently: values read on the hosts (shown as
# <...> in plans), and times and random probe names made up when the command is built.
_WILDCARDS = re.compile(r"<[A-Za-z][^<>\n]*>"  # <new's tunnel public key>, <secret: ...>
                        r"|\d{8}T?\d{6}"  # backup suffixes: mig-20261125201032, moved:20261125T201032
                        r"|\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:[+-]\d{4})?"  # times in posts and records
                        r"|(?<=mig-probe=)[0-9a-f]+")


def _pattern(planned: str) -> re.Pattern:
    return re.compile(r"[\s\S]+?".join(re.escape(part) for part in _WILDCARDS.split(planned)))


def drift(steps: list[tuple[str, list[str]]], records: list[dict]) -> list[str]:
    """What one real run of a phase did that its runbook does not show, from the run's log records
    ({"step": title} and {"command": ...}, in order): its steps must come in the runbook's order, and
    each command must be one the runbook shows in the same step (a step may repeat its commands: a
    wait repeats a check, a loop goes over items read on the host)."""
    found, index = [], 0
    patterns = [[_pattern(text) for text in commands] for _, commands in steps]
    for record in records:
        if "step" in record:
            later = [i for i in range(index + 1, len(steps)) if steps[i][0] == record["step"]]
            if later:
                index = later[0]
            else:
                found.append(f"step {record['step']!r} after step {steps[index][0]!r}")
        elif "command" in record and not any(p.fullmatch(record["command"]) for p in patterns[index]):
            found.append(f"in step {steps[index][0]!r}: {record['command']}")
    return found


# --- Markdown ------------------------------------------------------------------------------------

def _text(text: str) -> str:
    """Prose for Markdown: characters that would start markup (or vanish as an HTML tag) are escaped."""
    return re.sub(r"([\\`*<>\[\]])", r"\\\1", text)


def _sentence(label: str, text: str) -> str:
    text = _text(text)
    return f"{label}: {text}" + ("" if text.endswith((".", ":", "!", "?")) else ".")


def _fence(lines: list[str], language: str = "sh") -> str:
    return f"```{language}\n" + "\n".join(lines) + "\n```"


def _shown(event: Event) -> str:
    """The copy-pasteable command; masked again as a whole, so no part can carry a secret."""
    return event.cmd.mask(ssh_line(event.alias, event.cmd))


def _undo(text: str) -> str:
    if not text:
        return "Undo: not documented for this step."
    if text.startswith(("ssh ", "fab ")):
        return "Undo:\n\n" + _fence([text])
    return "Undo: " + _text(text)


def _blocks(events: list[Event]) -> list[str]:
    """Consecutive checks form one "Check:" block, consecutive actions one shell block; notes are prose."""
    out, group, kind = [], [], None

    def close():
        if group:
            out.append(("Check:" if kind == "check" else "Run:") + "\n\n" + _fence(group))
        group.clear()

    for event in events:
        if event.kind != kind:
            close()
            kind = event.kind
        if event.kind == "note":
            multiline = "\n" in event.title
            out.append(_fence(event.title.splitlines(), "text") if multiline else _sentence("Note", event.title))
        else:
            group.append(_shown(event))
    close()
    return out


def _steps(cfg: Settings, phase: Phase) -> list[str]:
    out = []
    for index, step in enumerate(planned_steps(cfg, phase)):
        if index:
            out.append(f"### {phase.number}.{index} {_text(step.heading.title)}")
            if step.heading.why:
                out.append(_sentence("Why", step.heading.why))
        out += _blocks(step.events)
        if index:
            read_only = all(event.kind == "check" for event in step.events)
            out.append("Read-only: nothing to undo." if read_only and not step.heading.undo
                       else _undo(step.heading.undo))
    return out


def render_phase(cfg: Settings, phase: Phase) -> str:
    out = [f"## Phase {phase.number}: {phase.name}", f"`{phase.command(cfg)}`"]
    if phase.step_function() is None:
        out.append("Not built yet: this phase has no steps to show.")
        return "\n\n".join(out)
    out += [_sentence("Purpose", phase.purpose()), f"Preconditions: {phase.preconditions}"]
    out += _steps(cfg, phase)
    return "\n\n".join(out)


def render(cfg: Settings, only: int = 0) -> str:
    chosen = [phase_by_number(only)] if only else list(PHASES)
    intro = (f"# Runbook: moving {cfg.domain} from {cfg.old_ssh} to {cfg.new_ssh}\n\n"
             f"Rendered by `fab -H {cfg.old_ssh},{cfg.new_ssh} runbook` from the steps the phases run, with the "
             f"settings in `{cfg.path}`. Run a phase with its `fab` command, or by hand with the commands below: "
             "they are the ones the phase runs, as `ssh HOST -- '...'` with any input as a here-document.\n\n"
             "- A check only reads. The phase looks at its answer to decide whether the action after it is still "
             "needed, so an action that is already done is skipped and a phase can be run again.\n"
             "- `<secret: WHERE>` stands for a secret kept in WHERE; secrets never appear here. Other values in "
             "angle brackets are read on the hosts when the phase runs (a key, a file's contents).\n"
             "- Backup names carry the time they are made; the time shown is when this runbook was rendered.")
    return "\n\n".join([intro, *(render_phase(cfg, phase) for phase in chosen)]) + "\n"


@two_host_task(help={"phase": "render only this phase (1-4, or 5: cleanup)"})
def runbook(s: Session, phase=0):
    """Render the migration as a Markdown runbook (connects to nothing): fab -H old,new runbook > RUNBOOK.md"""
    print(render(s.settings, int(phase)), end="", flush=True)
