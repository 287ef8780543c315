"""runbook: the whole migration as copy-paste Markdown, from the same steps the phases run.

Each phase's step function runs in Plan mode against a Session whose events are collected: the runbook
shows exactly the commands and checks that phase runs, so the two cannot drift. Steps nest as they do in
the code (a step opened inside another is its sub-step). `runbook_commands` and `drift` let a test hold a
real run's log against the runbook.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .command import Event, Plan, Remote, Session
from .executor import two_host_task
from .phases import PHASES, Phase, phase_by_number
from .settings import Settings
from .shell import ssh_line

__all__ = ["PHASES", "drift", "phase_by_number", "plan", "render", "runbook_commands", "runbook_steps"]


def plan(cfg: Settings, phase: Phase) -> list[Event]:
    """The events of one phase planned offline."""
    events: list[Event] = []
    mode = Plan(events.append)
    phase.steps(Session(mode, cfg, {role: Remote(role, alias, mode) for role, alias in cfg.roles.items()}))
    return events


@dataclass
class StepNode:
    """A step of a plan: its heading (None for what comes before the first step) and, in order, its
    events and sub-steps."""

    heading: Event | None
    items: list = field(default_factory=list)  # Event | StepNode

    @property
    def events(self) -> list[Event]:
        return [item for item in self.items if isinstance(item, Event)]

    @property
    def children(self) -> list[StepNode]:
        return [item for item in self.items if isinstance(item, StepNode)]

    @property
    def commands(self) -> list[str]:
        """Its own commands (actions and checks, not its sub-steps') as the run log records them."""
        return [event.cmd.shown() for event in self.events if event.cmd is not None]

    def preorder(self) -> list[StepNode]:
        return [self] + [node for child in self.children for node in child.preorder()]

    def changes_something(self) -> bool:
        return any(e.kind == "run" for e in self.events) or any(c.changes_something() for c in self.children)


def step_tree(events: list[Event]) -> StepNode:
    root = StepNode(None)
    open_steps = [root]
    for event in events:
        if event.kind == "step":
            node = StepNode(event)
            open_steps[-1].items.append(node)
            open_steps.append(node)
        elif event.kind == "end":
            open_steps.pop()
        else:
            open_steps[-1].items.append(event)
    return root


def runbook_steps(phase: int, cfg: Settings) -> list[tuple[str, list[str]]]:
    """Each step's title and its own commands, in plan order (pre-order; "": checks before the first step)."""
    tree = step_tree(plan(cfg, phase_by_number(phase)))
    return [(node.heading.title if node.heading else "", node.commands) for node in tree.preorder()]


def runbook_commands(phase: int, cfg: Settings) -> list[str]:
    """Every command the phase runs (actions and checks), in plan order, as the run log records them."""
    return [command for _, commands in runbook_steps(phase, cfg) for command in commands]


# --- drift: a real run's log against the runbook -------------------------------------------------

# Parts of a planned command that a real run fills in differently: values read on the hosts (shown as
# <...> in plans), and times and random probe names made up when the command is built.
_WILDCARDS = re.compile(
    r"<[A-Za-z][^<>\n]*>"  # <new's tunnel public key>, <secret: ...>
    r"|\d{8}T?\d{6}"  # backup suffixes: mig-20261125201032, moved:20261125T201032
    r"|\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:[+-]\d{4})?"  # times in posts and records
    r"|(?<=mig-probe=)[0-9a-f]+"
)


def _pattern(planned: str) -> re.Pattern:
    # a path that holds a placeholder is quoted in a plan (it holds < and >), and not in a run
    parts = (re.escape(part).replace("'", "'?") for part in _WILDCARDS.split(planned))
    return re.compile(r"[\s\S]+?".join(parts))


def drift(steps: list[tuple[str, list[str]]], records: list[dict]) -> list[str]:
    """What one real run of a phase did that its runbook does not show, from the run's log records
    ({"step": title}, {"step_end": title} and {"command": ...}, in order): its steps must come in the
    runbook's order, and each command must be one the runbook shows in the step it ran in (a step may
    repeat its commands: a wait repeats a check, a loop goes over items read on the host)."""
    found, cursor, current, enclosing = [], 0, 0, []
    patterns = [[_pattern(text) for text in commands] for _, commands in steps]
    for record in records:
        if "step" in record:
            later = [i for i in range(cursor + 1, len(steps)) if steps[i][0] == record["step"]]
            enclosing.append(current)
            if later:
                cursor = current = later[0]
            else:
                found.append(f"step {record['step']!r} after step {steps[cursor][0]!r}")
        elif "step_end" in record:
            current = enclosing.pop() if enclosing else 0
        elif "command" in record and not any(p.fullmatch(record["command"]) for p in patterns[current]):
            found.append(f"in step {steps[current][0]!r}: {record['command']}")
    return found


# --- Markdown ------------------------------------------------------------------------------------


def _text(text: str) -> str:
    """Prose for Markdown: characters that would start markup (or vanish as an HTML tag) are escaped."""
    return re.sub(r"([\\`*<>\[\]])", r"\\\1", text)


def _prose(text: str) -> str:
    """Prose in which `code` spans stay code; the rest is escaped."""
    parts = re.split(r"(`[^`]+`)", text)
    return "".join(
        part if part.startswith("`") and part.endswith("`") and len(part) > 1 else _text(part)
        for part in parts
    )


def _sentence(label: str, text: str) -> str:
    text = _prose(text)
    return f"{label}: {text}" + ("" if text.endswith((".", ":", "!", "?", "`")) else ".")


def _fence(lines: list[str], language: str = "sh") -> str:
    return f"```{language}\n" + "\n".join(lines) + "\n```"


def _shown(event: Event) -> str:
    """The copy-pasteable command; masked again as a whole, so no part can carry a secret."""
    return event.cmd.mask(ssh_line(event.alias, event.cmd))


def _undo(heading: Event, node: StepNode) -> str:
    text = heading.undo
    if not node.changes_something() and (not text or text.startswith("not needed")):
        return "Read-only: nothing to undo."
    if not text:
        return "Undo: not documented for this step."
    if text.startswith(("ssh ", "fab ")):
        return "Undo:\n\n" + _fence([text])
    return _sentence("Undo", text)


@dataclass
class _Context:
    """What rendering remembers across steps: where placeholders were printed, which secrets are explained."""

    printed_by: dict[str, str] = field(default_factory=dict)  # "<new's tunnel public key>" -> "1.5.1"
    explained: set[str] = field(default_factory=set)


def _run_block(group: list[Event], ctx: _Context) -> list[str]:
    """Consecutive actions: one shell block that stops at its first failure; where its values come from."""
    shown = [_shown(event) for event in group]
    out = ["Run:\n\n" + _fence(["(", "set -e", *shown, ")"])]
    text = "\n".join(shown)
    for placeholder, number in ctx.printed_by.items():
        if placeholder in text:
            out.append(f"Paste for {_text(placeholder)} what the check in {number} printed.")
    for event in group:
        for secret in event.cmd.secrets:
            if secret.how and str(secret) not in ctx.explained:
                ctx.explained.add(str(secret))
                out.append(_sentence(_text(str(secret)), secret.how))
    return out


def _check(event: Event, number: str, ctx: _Context) -> list[str]:
    out = ["Check:\n\n" + _fence([_shown(event)])]
    if event.passes:
        out.append(_sentence("Expect", event.passes + (f"; {event.then}" if event.then else "")))
    if event.planned:
        ctx.printed_by[event.planned] = number
    return out


def _events(events: list[Event], number: str, ctx: _Context) -> list[str]:
    out, group = [], []

    def close():
        if group:
            out.extend(_run_block(group, ctx))
        group.clear()

    for event in events:
        if event.kind == "run":
            group.append(event)
            continue
        close()
        if event.kind == "check":
            out.extend(_check(event, number, ctx))
        elif event.kind == "repeat":
            out.append(f"Repeat the check above until {_prose(event.title)}, at most {event.timeout:.0f} s.")
        elif event.kind == "text":
            out.append(_fence(event.title.splitlines(), "text"))
        elif "\n" in event.title:
            out.append(_fence(event.title.splitlines(), "text"))
        else:
            out.append(_sentence("Note", event.title))
    close()
    return out


def _step(node: StepNode, number: str, ctx: _Context) -> list[str]:
    heading = node.heading
    level = "#" * min(2 + number.count("."), 6)
    out = [f"{level} {number} {_text(heading.title)}"]
    if heading.why:
        out.append(_sentence("Why", heading.why))
    out.append(_undo(heading, node))
    pending: list[Event] = []
    children = 0
    for item in node.items:
        if isinstance(item, Event):
            pending.append(item)
            continue
        out += _events(pending, number, ctx)
        pending = []
        children += 1
        out += _step(item, f"{number}.{children}", ctx)
    if pending and children:
        out.append(f"Then, still in {number}:")
    out += _events(pending, number, ctx)
    return out


def render_phase(cfg: Settings, phase: Phase) -> str:
    out = [
        f"## Phase {phase.number}: {phase.name}",
        f"`{phase.command(cfg)}`",
        _sentence("Purpose", phase.purpose()),
        f"Preconditions: {phase.preconditions}",
    ]
    tree, ctx = step_tree(plan(cfg, phase)), _Context()
    index = 0
    pending: list[Event] = []
    for item in tree.items:
        if isinstance(item, Event):
            pending.append(item)
            continue
        out += _events(pending, str(phase.number), ctx)
        pending = []
        index += 1
        out += _step(item, f"{phase.number}.{index}", ctx)
    out += _events(pending, str(phase.number), ctx)
    return "\n\n".join(out)


def render(cfg: Settings, only: int = 0) -> str:
    chosen = [phase_by_number(only)] if only else list(PHASES)
    intro = (
        f"# Runbook: moving {cfg.domain} from {cfg.old_ssh} to {cfg.new_ssh}\n\n"
        f"Rendered by `fab -H {cfg.old_ssh},{cfg.new_ssh} runbook` from the steps the phases run, with the "
        f"settings in `{cfg.path}`. Run a phase with its `fab` command, or by hand with the commands below: "
        "they are the ones the phase runs, as `ssh HOST -- '...'` with any input as a here-document.\n\n"
        '- A check only reads. Under it, "Expect" says what its answer looks like and what the phase does '
        "with it: an action that is already done is skipped, so a phase can be run again.\n"
        "- A run block is a subshell with `set -e`: it stops at the first command that fails, and your own "
        "shell stays open. Paste a block whole.\n"
        '- "Repeat the check above until ..." is a wait: run the check again every few seconds, up to the '
        "time given.\n"
        "- `<secret: WHAT>` stands for a secret; secrets never appear here. Where the phase makes one up, "
        "the runbook says how to make your own. Other values in angle brackets are read on the hosts when "
        "the phase runs (a key, a file's contents): the runbook names the check that prints them.\n"
        "- Backup names carry the time they are made; the time shown is when this runbook was rendered."
    )
    return "\n\n".join([intro, *(render_phase(cfg, phase) for phase in chosen)]) + "\n"


@two_host_task(help={"phase": "render only this phase (1-4, or 5: cleanup)"})
def runbook(s: Session, phase=0):
    """Render the migration as Markdown (connects to nothing): fab -H old,new runbook > RUNBOOK.md"""
    s.show(render(s.settings, int(phase)).rstrip("\n"))
