"""What an interrupted run leaves, and what the next one makes of it: the guard around the fence, the
executor's last word, the failover's stages."""
import io
import json

import pytest
from invoke.exceptions import Exit

from tasks import executor, postgres
from tasks.command import Live, Remote, RunLog, Session, StepFailed
from tasks.facts import Cluster

from .test_command import ScriptedConnection

PLACE = Cluster(15, "main", "/var/lib/postgresql/15/main", "/etc/postgresql/15/main/pg_hba.conf")


def live_session(settings, tmp_path, **answers):
    mode = Live(RunLog(tmp_path / "run.log"), echo=io.StringIO())
    connections = {role: ScriptedConnection(*answers.get(role, ())) for role in ("old", "new")}
    session = Session(mode, settings, {role: Remote(role, role, mode, c) for role, c in connections.items()})
    return session, connections


@pytest.mark.parametrize("interruption", [KeyboardInterrupt(), StepFailed("new did not catch up"),
                                          OSError("Socket is closed")])
def test_anything_that_stops_the_fenced_section_lifts_the_fence(example_settings, tmp_path, interruption):
    s, hosts = live_session(example_settings, tmp_path)
    with pytest.raises(StepFailed) as error:
        with postgres.fence_lifted_on_failure(s, PLACE):
            raise interruption
    lifted = [line + "\n" + (stdin or "") for line, stdin in hosts["old"].calls]
    assert "mv /etc/postgresql/15/main/start.conf.mig-before-fence" in lifted[0]
    assert "systemctl unmask postgresql@15-main" in lifted[1]
    assert "/^# BEGIN mastodon-migration fence$/" in lifted[2]
    assert "systemctl start postgresql@15-main" in lifted[3]
    assert "fence was lifted" in str(error.value) and "phase3-failover again" in str(error.value)
    assert [line + (stdin or "") for line, stdin in hosts["new"].calls] == [
        "sudo -n rm -f /var/lib/mastodon-migration/failover.json"]  # no failover under way any more


def test_once_pg_promote_was_sent_only_the_next_run_decides(example_settings, tmp_path):
    s, hosts = live_session(example_settings, tmp_path)
    with pytest.raises(StepFailed) as error:
        with postgres.fence_lifted_on_failure(s, PLACE) as progress:
            progress["promoting"] = True
            raise KeyboardInterrupt()
    assert hosts["old"].calls == []  # old stays fenced
    assert "under way" in str(error.value) and "phase3-failover again" in str(error.value)


def test_a_fence_that_cannot_be_lifted_says_so_and_what_to_run(example_settings, tmp_path):
    s, _ = live_session(example_settings, tmp_path, old=[(1, "", "Failed to unmask")])
    with pytest.raises(StepFailed) as error:
        with postgres.fence_lifted_on_failure(s, PLACE):
            raise KeyboardInterrupt()
    assert "Lifting the fence failed too" in str(error.value)
    assert "Run phase3-failover again" in str(error.value)


@pytest.mark.parametrize("raised,code,said", [
    (KeyboardInterrupt(), 130, "was interrupted"),
    (ValueError("expected 7 fields from psql"), 1, "did not expect (ValueError: expected 7 fields"),
])
def test_no_traceback_reaches_the_operator(example_settings, tmp_path, raised, code, said):
    s, _ = live_session(example_settings, tmp_path)

    def body(session):
        raise raised

    with pytest.raises(Exit) as error:
        executor._run_body(body, s, "phase3-failover", {})
    assert error.value.code == code and said in error.value.message
    assert "fab -H old,new phase3-failover" in error.value.message
    records = [json.loads(x) for x in (tmp_path / "run.log").read_text().splitlines()]
    assert records[-1]["event"] == "failed"
    if code == 1:
        assert "Traceback" in records[-2]["traceback"]
