"""Progress of waits (output.Progress, command.wait_until, Remote.wait_for): rewritten in place in a
terminal, plain lines when the output is a log or a pipe; the clock is injected, so no test depends on
how fast the machine is."""
import io
import itertools

import pytest

from tasks.command import Live, Plan, Remote, RunLog, StepFailed, wait_until
from tasks.facts import FileText
from tasks.output import Progress

from .test_command import ScriptedConnection


class Terminal(io.StringIO):
    def isatty(self):
        return True


class Clock:
    """A clock that moves only when told (each call to `sleep`)."""

    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


def test_plain_output_gets_a_line_per_change_only():
    out = io.StringIO()
    progress = Progress(out)
    for text in ("queues: 3", "queues: 3", "queues: 1"):
        progress.show(text)
    progress.end()
    assert out.getvalue() == "queues: 3\nqueues: 1\n"


def test_a_terminal_gets_one_line_rewritten_with_the_time_waited():
    out, clock = Terminal(), Clock()
    progress = Progress(out, clock)
    progress.show("queues: 3")
    clock.sleep(7)
    progress.show("queues: 3")
    progress.end()
    assert out.getvalue() == "\r\033[Kqueues: 3 (0 s)\r\033[Kqueues: 3 (7 s)\n"


def test_nothing_shown_leaves_no_empty_line():
    out = Terminal()
    Progress(out).end()
    assert out.getvalue() == ""


def test_wait_until_shows_the_time_waited_and_ends_its_line(tmp_path):
    echo, clock = Terminal(), Clock()
    answers = iter(["1", "2", "3"])
    assert wait_until(Live(RunLog(tmp_path / "run.log"), echo=echo), lambda: next(answers),
                      lambda v: v == "3", what="ready", timeout=5, interval=2, who="new", clock=clock,
                      sleep=clock.sleep) == "3"
    assert echo.getvalue() == ("\r\033[K  new: waiting until ready: 1 (0 s)"
                               "\r\033[K  new: waiting until ready: 2 (2 s)\n")


def test_wait_until_gives_up_at_its_deadline_and_says_what_it_saw_last(tmp_path):
    echo, clock = Terminal(), Clock()
    counter = itertools.count()
    with pytest.raises(StepFailed, match=r"gave up after 5 s waiting until ready \(last seen: 3\)"):
        wait_until(Live(RunLog(tmp_path / "run.log"), echo=echo), lambda: next(counter), lambda v: False,
                   what="ready", timeout=5, interval=2, clock=clock, sleep=clock.sleep)
    assert echo.getvalue().endswith("\n")


def test_a_planned_wait_shows_its_check_once_and_how_long_to_repeat_it():
    events = []
    remote = Remote("new", "new", Plan(events.append))
    remote.wait_for(FileText("/run/ready"), bool, what="the file exists", timeout=30)
    assert [(e.kind, e.title, e.timeout) for e in events] == [("check", "", 0.0),
                                                              ("repeat", "the file exists", 30)]


def test_wait_for_repeats_a_fact_on_its_host_until_done(tmp_path):
    echo = io.StringIO()
    remote = Remote("new", "new", Live(RunLog(tmp_path / "run.log"), echo=echo),
                    ScriptedConnection((0, "1", ""), (0, "2", ""), (0, "3", "")))
    assert remote.wait_for(FileText("/run/ready"), lambda v: v == "3", what="ready", timeout=5,
                           interval=0) == "3"
    assert echo.getvalue() == "  new: waiting until ready: 1\n  new: waiting until ready: 2\n"
