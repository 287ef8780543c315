import json
import subprocess
from types import SimpleNamespace

import pytest

from tasks.command import (Cmd, CommandFailed, Event, Live, Plan, Remote, RunLog, Secret, Session,
                           UNKNOWN, ssh_line)
from tasks.facts import Output


class ScriptedConnection:
    """Stands in for a Fabric Connection in unit tests: records commands, replays answers."""

    def __init__(self, *answers):
        self.answers = list(answers)
        self.calls = []
        self.is_connected = True

    def run(self, line, **kwargs):
        stdin = kwargs["in_stream"].read() if kwargs["in_stream"] else None
        self.calls.append((line, stdin))
        exited, stdout, stderr = self.answers.pop(0) if self.answers else (0, "", "")
        return SimpleNamespace(exited=exited, stdout=stdout, stderr=stderr)

    def close(self):
        self.is_connected = False


def test_lines_for_each_user():
    assert Cmd("pg_isready -p 5433", user="postgres").line() == "sudo -H -u postgres pg_isready -p 5433"
    assert Cmd("nginx -t").line() == "sudo nginx -t"
    assert Cmd("true", user=None).line() == "true"
    assert Cmd("nginx -t").line(interactive=False) == "sudo -n nginx -t"
    assert Cmd("cd /srv && ls", user="mastodon").line() == "sudo -H -u mastodon sh -c 'cd /srv && ls'"


def test_ssh_line_is_copy_pasteable_and_passes_bash_n():
    cmd = Cmd("psql -XAtq -p 5432", user="postgres", stdin="SELECT 'EOF';\nEOF\n")
    text = ssh_line("new", cmd)
    assert text.startswith("ssh new -- 'sudo -H -u postgres psql -XAtq -p 5432' <<'EOF_'\n")
    assert text.endswith("\nEOF_")
    subprocess.run(["bash", "-n"], input=text, text=True, check=True)
    quoted = ssh_line("old", Cmd("ss -Htln 'sport = :5433'"))
    assert quoted == "ssh old -- \"sudo ss -Htln 'sport = :5433'\""
    subprocess.run(["bash", "-n"], input=quoted, text=True, check=True)


def test_secrets_are_masked_in_plans():
    password = Secret("hunter2-very-secret", "new:~postgres/.pgpass")
    cmd = Cmd("psql", user="postgres", stdin="ALTER ROLE r PASSWORD 'hunter2-very-secret';", secrets=(password,))
    text = ssh_line("old", cmd)
    assert "hunter2" not in text
    assert "<secret: new:~postgres/.pgpass>" in text
    assert "hunter2" not in str(password) and "hunter2" not in repr(password)


def test_plan_mode_records_and_touches_nothing():
    events = []
    remote = Remote("new", "new", Plan(events.append), connection=None)
    assert remote.fact(Cmd("systemctl is-active x"), lambda out: out.stdout) is UNKNOWN
    assert remote.run(Cmd("systemctl start x")).ok
    remote.write_file("/etc/x.conf", "a=1\n", owner="postgres", mode="0600")
    assert [e.kind for e in events] == ["check", "run", "run"]
    assert events[2].cmd.line() == "sudo install -D -m 0600 -o postgres -g postgres /dev/stdin /etc/x.conf"
    assert events[2].cmd.stdin == "a=1\n"


def test_live_mode_runs_logs_and_masks(tmp_path):
    log = RunLog(tmp_path / "run.log")
    connection = ScriptedConnection((0, "ok hunter2-very-secret\n", ""), (1, "", "boom hunter2-very-secret"))
    remote = Remote("old", "old", Live(log, echo=open(tmp_path / "echo", "w")), connection)
    password = Secret("hunter2-very-secret", "a file")
    cmd = Cmd("psql", user="postgres", stdin="PASSWORD 'hunter2-very-secret'", secrets=(password,))
    assert remote.run(cmd).stdout.startswith("ok")
    assert connection.calls[0] == ("sudo -n -H -u postgres psql", "PASSWORD 'hunter2-very-secret'")
    with pytest.raises(CommandFailed) as error:
        remote.run(cmd)
    assert "hunter2" not in str(error.value) and "boom" in str(error.value)
    records = [json.loads(x) for x in (tmp_path / "run.log").read_text().splitlines()]
    assert [r["exit"] for r in records] == [0, 1]
    assert records[0]["command"] == "sudo -H -u postgres psql"
    assert "hunter2" not in (tmp_path / "run.log").read_text()
    assert "hunter2" not in (tmp_path / "echo").read_text()


def test_session_step_is_a_heading_in_plans(example_settings):
    events = []
    session = Session(Plan(events.append), example_settings)
    session.step("tunnel", "carry replication")
    assert events == [Event("step", title="tunnel", why="carry replication")]
