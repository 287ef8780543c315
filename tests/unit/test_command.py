import io
import json
import subprocess

import pytest

from tasks.command import UNKNOWN, Cmd, CommandFailed, Event, Live, Plan, Remote, RunLog, Secret, Session
from tasks.facts import UnitState
from tasks.shell import ssh_line, whole_file


class ScriptedChannel:
    """The part of a paramiko channel that the command layer uses, replaying one answer."""

    def __init__(self, answer, calls):
        self.exited, stdout, stderr = answer
        self.out, self.err = [stdout.encode()], [stderr.encode()]
        self.calls, self.stdin = calls, b""
        self.eof_received, self.closed = True, False

    def exec_command(self, line):
        self.calls.append([line, None])

    def sendall(self, data):
        self.stdin += data

    def shutdown_write(self):
        self.calls[-1][1] = self.stdin.decode() if self.stdin else None

    def recv_ready(self):
        return bool(self.out and self.out[0])

    def recv_stderr_ready(self):
        return bool(self.err and self.err[0])

    def recv(self, _):
        return self.out.pop(0)

    def recv_stderr(self, _):
        return self.err.pop(0)

    def exit_status_ready(self):
        return True

    def recv_exit_status(self):
        return self.exited

    def close(self):
        pass


class ScriptedConnection:
    """Stands in for a Fabric Connection in unit tests: records commands, replays answers."""

    def __init__(self, *answers):
        self.answers = list(answers)
        self.calls = []
        self.is_connected = True
        self.client = self
        self.transport = self

    def get_transport(self):
        return self

    def open_session(self):
        return ScriptedChannel(self.answers.pop(0) if self.answers else (0, "", ""), self.calls)

    def close(self):
        self.is_connected = False


def test_lines_for_each_user():
    assert Cmd("pg_isready -p 5433", user="postgres").line() == "sudo -H -u postgres pg_isready -p 5433"
    assert Cmd("nginx -t").line() == "sudo nginx -t"
    assert Cmd("true", user=None).line() == "true"
    assert Cmd("nginx -t").line(interactive=False) == "sudo -n nginx -t"
    scripted = Cmd("cd /srv && ls", user="mastodon")
    assert scripted.line() == "sudo -H -u mastodon sh -s"
    assert scripted.input() == "cd /srv && ls\n"


def test_a_script_with_data_carries_the_data_as_its_here_document():
    cmd = Cmd("cat > /tmp/x && chmod 600 /tmp/x", user="postgres", stdin="DATA\nline\n")
    text = ssh_line("new", cmd)
    assert text == ("ssh new -- 'sudo -H -u postgres sh -s' <<'EOF'\n"
                    "{ cat > /tmp/x && chmod 600 /tmp/x\n} <<'DATA_'\nDATA\nline\nDATA_\nEOF")
    subprocess.run(["bash", "-n"], input=text, text=True, check=True)


def test_a_script_with_data_really_runs(tmp_path):
    target = tmp_path / "out"
    cmd = Cmd(f"cat > {target} && chmod 600 {target}", user=None, stdin="line one\nEOF\n")
    subprocess.run(["sh", "-s"], input=cmd.input(), text=True, check=True)
    assert target.read_text() == "line one\nEOF\n"


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
    cmd = Cmd("psql", user="postgres", stdin="ALTER ROLE r PASSWORD 'hunter2-very-secret';",
              secrets=(password,))
    text = ssh_line("old", cmd)
    assert "hunter2" not in text
    assert "<secret: new:~postgres/.pgpass>" in text
    assert "hunter2" not in str(password) and "hunter2" not in repr(password)


def test_plan_mode_records_and_touches_nothing():
    events = []
    remote = Remote("new", "new", Plan(events.append), connection=None)
    assert remote.fact(UnitState("x")) is UNKNOWN
    assert remote.run(Cmd("systemctl start x")).ok
    remote.write_file("/etc/x.conf", "a=1\n", owner="postgres", mode="0600")
    assert [e.kind for e in events] == ["check", "run", "run"]
    assert events[2].cmd.line() == "sudo sh -s"
    script = events[2].cmd.script
    assert "chown postgres:postgres" in script and 'mv -f "$t" /etc/x.conf' in script
    assert events[2].cmd.stdin.startswith("a=1\n")


def test_live_mode_runs_logs_and_masks(tmp_path):
    log = RunLog(tmp_path / "run.log")
    connection = ScriptedConnection((0, "ok hunter2-very-secret\n", ""), (1, "", "boom hunter2-very-secret"))
    remote = Remote("old", "old", Live(log, echo=open(tmp_path / "echo", "w")), connection)
    password = Secret("hunter2-very-secret", "a file")
    cmd = Cmd("psql", user="postgres", stdin="PASSWORD 'hunter2-very-secret'", secrets=(password,))
    assert remote.run(cmd).stdout.startswith("ok")
    assert connection.calls[0] == ["sudo -n -H -u postgres psql", "PASSWORD 'hunter2-very-secret'"]
    with pytest.raises(CommandFailed) as error:
        remote.run(cmd)
    assert "hunter2" not in str(error.value) and "boom" in str(error.value)
    records = [json.loads(x) for x in (tmp_path / "run.log").read_text().splitlines()]
    assert [r["exit"] for r in records] == [0, 1]
    assert records[0]["command"] == "sudo -H -u postgres psql\nPASSWORD '<secret: a file>'"
    assert "hunter2" not in (tmp_path / "run.log").read_text()
    assert "hunter2" not in (tmp_path / "echo").read_text()


def test_a_step_is_a_scope_and_steps_nest(example_settings):
    events = []
    session = Session(Plan(events.append), example_settings)
    session.hosts["new"] = Remote("new", "new", session.mode)
    with session.step("tunnel", "carry replication"):
        with session.step("tunnel key"):
            session.new.run(Cmd("ssh-keygen"))
        session.say("done")
    assert [(e.kind, e.title, e.depth) for e in events] == [
        ("step", "tunnel", 0), ("step", "tunnel key", 1), ("run", "", 2), ("end", "tunnel key", 1),
        ("note", "done", 1), ("end", "tunnel", 0)]
    assert events[0] == Event("step", title="tunnel", why="carry replication")


def test_steps_are_logged_with_their_end_and_say_goes_to_the_console(example_settings, tmp_path):
    echo = io.StringIO()
    mode = Live(RunLog(tmp_path / "run.log"), echo=echo)
    session = Session(mode, example_settings,
                      {"new": Remote("new", "new", mode, ScriptedConnection((0, "", "")))})
    with pytest.raises(RuntimeError):
        with session.step("outer"):
            with session.step("inner"):
                session.say("found it")
                session.new.run(Cmd("true"))
                raise RuntimeError("interrupted")
    records = [json.loads(x) for x in (tmp_path / "run.log").read_text().splitlines()]
    assert [r.get("step") or r.get("step_end") or r["command"] for r in records] == [
        "outer", "inner", "sudo true", "inner", "outer"]
    assert [("step" in r, "step_end" in r) for r in records][-2:] == [(False, True), (False, True)]
    assert echo.getvalue() == "==> outer\n  --> inner\n    found it\n      new$ sudo true\n"


def test_marked_lines_and_blocks_converge(tmp_path):
    """The file-editing scripts really run (here with sh, as the hosts do) and are idempotent."""
    from tasks import system
    target = tmp_path / "pgpass"
    target.write_text("keep:me\nold:5433:*:role:stale\n")
    for _ in range(2):
        cmd = system.replace_lines(str(target), "old:5433:*:role:", "old:5433:*:role:fresh\n", user=None)
        subprocess.run(["sh", "-s"], input=cmd.input(), text=True, check=True)
    assert target.read_text() == "keep:me\nold:5433:*:role:fresh\n"
    assert oct(target.stat().st_mode & 0o777) == "0o600"
    hba = tmp_path / "pg_hba.conf"
    hba.write_text("local all postgres peer\n")
    for stamp in ("b1", "b2"):
        cmd = system.put_block(str(hba), "replication", ["host replication r 127.0.0.1/32 scram-sha-256"],
                               user=None, backup_suffix=stamp)
        subprocess.run(["sh", "-s"], input=cmd.input(), text=True, check=True)
    assert hba.read_text() == ("# BEGIN mastodon-migration replication\n"
                               "host replication r 127.0.0.1/32 scram-sha-256\n"
                               "# END mastodon-migration replication\n"
                               "local all postgres peer\n")
    assert (tmp_path / "pg_hba.conf.b1").read_text() == "local all postgres peer\n"


def test_a_whole_file_that_is_a_secret_is_masked_wherever_the_command_is_shown(tmp_path):
    """.env.production is written from stdin; it ends with a newline, as the secret that stands for it."""
    text = "LOCAL_DOMAIN=x\nSECRET_KEY_BASE=abcdef123456\n"
    cmd = Cmd("install -D -m 0600 -o m -g m /dev/stdin /p", stdin=text, secrets=(Secret(text, "env"),))
    assert "abcdef123456" not in cmd.shown() and "<secret: env>" in cmd.shown()
    log, echo = RunLog(tmp_path / "run.log"), io.StringIO()
    Remote("new", "new", Live(log, echo=echo), ScriptedConnection((0, "", ""))).run(cmd)
    assert "abcdef123456" not in echo.getvalue() + (tmp_path / "run.log").read_text()


def test_a_real_run_shows_a_long_input_cut_after_masking_and_logs_it_whole(tmp_path):
    key = Secret("key line a\nkey line b\n", "the key")
    text = "line 1\n" + key.reveal() + "".join(f"line {n}\n" for n in range(2, 41))
    cmd = Cmd("tee /etc/x", stdin=text, secrets=(key,))  # no shell syntax: the input is the file itself
    assert cmd.shown(3).split("\n") == [
        "sudo tee /etc/x", "line 1", "<secret: the key>line 2", "line 3",
        "... 37 more lines, which `fab --dry` prints in full"]
    log, echo = RunLog(tmp_path / "run.log"), io.StringIO()
    Remote("new", "new", Live(log, echo=echo), ScriptedConnection((0, "", ""))).run(cmd)
    assert "line 30\n" in echo.getvalue() and "line 31" not in echo.getvalue()
    assert "line 40" in json.loads((tmp_path / "run.log").read_text())["command"]
    assert "key line" not in echo.getvalue() + (tmp_path / "run.log").read_text()


def _write_with_sh(tmp_path, text, cut_after=None):
    """Run `whole_file`'s script as a host would (`sh -s`, the file as its here-document)."""
    import getpass
    import subprocess

    user = getpass.getuser()
    script, data = whole_file(str(tmp_path / "etc" / "x.conf"), text, owner=user, mode="0600")
    feed = Cmd(script, stdin=data).input()
    cut_at = feed.index(cut_after) + len(cut_after) if cut_after else None
    return subprocess.run(["sh", "-s"], input=feed[:cut_at], text=True, capture_output=True)


def test_a_whole_file_arrives_byte_for_byte_with_its_mode(tmp_path):
    for text in ("a=1\nb=2\n", "no newline at the end", "", "x\n\n\n"):
        assert _write_with_sh(tmp_path, text).returncode == 0
        written = tmp_path / "etc" / "x.conf"
        assert written.read_text() == text and oct(written.stat().st_mode & 0o777) == "0o600"
    assert [p.name for p in (tmp_path / "etc").iterdir()] == ["x.conf"]


def test_a_file_cut_short_in_transfer_leaves_the_old_one(tmp_path):
    assert _write_with_sh(tmp_path, "[pgbouncer]\nlisten_port = 6432\n").returncode == 0
    cut = _write_with_sh(tmp_path, "[pgbouncer]\nlisten_port = 6432\npool_mode = transaction\n",
                         cut_after="pool_")
    assert cut.returncode != 0 and "arrived cut short" in cut.stderr
    assert (tmp_path / "etc" / "x.conf").read_text() == "[pgbouncer]\nlisten_port = 6432\n"
    assert [p.name for p in (tmp_path / "etc").iterdir()] == ["x.conf"]
