"""Progress of waits (command.Progress, Remote.wait_for): rewritten in place in a terminal, plain lines
when the output is a log or a pipe."""
import io

import pytest

from tasks.command import Cmd, Live, Progress, Remote, RunLog, StepFailed

from .test_command import ScriptedConnection


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_plain_output_gets_a_line_per_change_only():
    out = io.StringIO()
    progress = Progress(out)
    for text in ("queues: 3", "queues: 3", "queues: 1"):
        progress.show(text)
    progress.end()
    assert out.getvalue() == "queues: 3\nqueues: 1\n"


def test_a_terminal_gets_one_line_rewritten_with_the_time_waited():
    out = Terminal()
    progress = Progress(out)
    progress.show("queues: 3")
    progress.show("queues: 3")
    progress.end()
    assert out.getvalue() == "\r\033[Kqueues: 3 (0 s)\r\033[Kqueues: 3 (0 s)\n"


def test_nothing_shown_leaves_no_empty_line():
    out = Terminal()
    Progress(out).end()
    assert out.getvalue() == ""


@pytest.mark.parametrize("echo, expected", [
    (io.StringIO(), "  new: waiting until ready: 1\n  new: waiting until ready: 2\n"),
    (Terminal(), "\r\033[K  new: waiting until ready: 1 (0 s)\r\033[K  new: waiting until ready: 2 (0 s)\n")])
def test_wait_for_ends_its_progress_line_when_done(tmp_path, echo, expected):
    remote = Remote("new", "new", Live(RunLog(tmp_path / "run.log"), echo=echo),
                    ScriptedConnection((0, "1", ""), (0, "2", ""), (0, "3", "")))
    assert remote.wait_for(Cmd("true"), lambda out: out.stdout, lambda v: v == "3", what="ready", timeout=5,
                           interval=0) == "3"
    assert echo.getvalue() == expected


def test_wait_for_ends_its_progress_line_when_it_gives_up(tmp_path):
    echo = Terminal()
    remote = Remote("new", "new", Live(RunLog(tmp_path / "run.log"), echo=echo), ScriptedConnection())
    with pytest.raises(StepFailed, match=r"gave up after 0 s waiting until ready \(last seen: \)"):
        remote.wait_for(Cmd("true"), lambda out: out.stdout, bool, what="ready", timeout=0, interval=0)
    assert echo.getvalue().endswith("\n")
