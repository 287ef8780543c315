"""The run log and the state next to it are private: a 0700 folder, 0600 files whatever the umask, and a
run refuses to add to what others can read."""
import os
import stat

import pytest

from tasks.command import RunLog
from tasks.files import NotPrivate, write_private

from .conftest import fab


def mode(path):
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def open_umask():
    previous = os.umask(0)
    yield
    os.umask(previous)


def test_the_log_and_its_folder_are_private_whatever_the_umask(tmp_path, open_umask):
    log = RunLog(tmp_path / "logs" / "migration.log")
    log.write(task="preflight", event="start")
    write_private(tmp_path / "logs" / "migration.dns.json", "{}\n")
    assert mode(tmp_path / "logs") == 0o700
    assert mode(tmp_path / "logs" / "migration.log") == 0o600
    assert mode(tmp_path / "logs" / "migration.dns.json") == 0o600


def test_a_log_that_others_can_read_is_refused_with_the_fix(tmp_path):
    (tmp_path / "logs").mkdir(mode=0o700)
    shared = tmp_path / "logs" / "migration.log"
    shared.write_text("")
    shared.chmod(0o644)
    with pytest.raises(NotPrivate, match=rf"can be read by others \(mode 0644\).*chmod 600 {shared}"):
        RunLog(shared)
    (tmp_path / "logs").chmod(0o755)
    with pytest.raises(NotPrivate, match="chmod 700"):
        RunLog(tmp_path / "logs" / "other.log")


def test_fab_says_what_to_change_instead_of_running(tmp_path):
    from tests.unit.conftest import EXAMPLE

    logs = tmp_path / "logs"
    logs.mkdir(mode=0o755)
    env = tmp_path / "migration.env"
    env.write_text(EXAMPLE.read_text() + f"\nLOG_DIR={logs}\n")
    result = fab("-H", "old,new", "preflight", env_file=env)
    assert result.returncode == 2 and f"chmod 700 {logs}" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
