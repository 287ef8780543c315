"""status on the pair: a fresh pair has started nothing; after phase 1, phase 1 is done and phase 2 is
next. Read-only; how long each call takes is printed (the goal is under 3 s).

Self-contained: other files leave the pair in other states, so it is recreated first. DNS is a real
BIND on 127.0.0.1 that answers old's address (DNS_VERIFY_SERVERS).
"""
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.fakes.bind import Bind

from . import state
from .conftest import PAIR_PY, REPO, fab
from .test_phase4 import ZONE  # social.test A: old's address

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def fresh(pair, tmp_path_factory):
    """A newly provisioned pair, and settings for status that add the zone's authoritative server."""
    for action in ("down", "up"):
        subprocess.run([sys.executable, str(PAIR_PY), action], cwd=REPO, capture_output=True, check=True)
    workdir = tmp_path_factory.mktemp("status")
    bind = Bind(workdir / "bind", zone="social.test", zone_text=ZONE)
    bind.dir.mkdir()
    bind.start()
    env = workdir / "status.env"
    env.write_text((REPO / "env" / "demo.env").read_text()
                   + f"\nDNS_VERIFY_SERVERS={bind.server}\nLOG_DIR={workdir / 'logs'}\nDNS_PROVIDER=rfc2136\n"
                   f"RFC2136_SERVER=127.0.0.1\nRFC2136_PORT={bind.port}\nRFC2136_KEY_NAME=migration.key\n"
                   f"RFC2136_KEY_FILE={bind.key_file}\n")
    yield {"MIGRATION_ENV": str(env)}
    bind.stop()


def status(env, *flags):
    started = time.monotonic()
    result = fab("-H", "old,new", "status", *flags, env=env)
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stdout + result.stderr
    # a measurement (the goal is 3 s), not an assertion
    print(f"\nstatus {' '.join(flags)} took {elapsed:.2f} s")
    return result.stdout


def states(found):
    return {p["name"]: p["state"] for p in found["phases"]}


def test_a_fresh_pair_has_started_nothing(fresh):
    found = json.loads(status(fresh, "--json"))
    assert set(states(found).values()) == {"not started"}, found
    assert found["next"] == "fab -H old,new phase1-replicate"
    assert [(a["source"].split(":")[0], a["answer"], a["holds"]) for a in found["dns"]] == [
        ("127.0.0.1", "172.30.99.11", "old")]


def test_after_phase1_phase2_is_next(fresh):
    assert fab("-H", "old,new", "phase1-replicate", timeout=600).returncode == 0
    found = json.loads(status(fresh, "--json"))
    assert states(found) == {"replicate": "done", "proxy": "not started", "failover": "not started",
                             "dns": "not started", "cleanup": "not started"}
    assert found["next"] == "fab -H old,new phase2-proxy"
    assert found["replication"]["healthy"] and found["replication"]["new"]["receiver_status"] == "streaming"
    table = status(fresh)
    assert "1 replicate  done         tunnel mastodon-migration-tunnel on new: active" in table
    assert "new streams from old, lag " in table and table.endswith("next: fab -H old,new phase2-proxy\n")


def test_status_changes_nothing(pair, fresh):
    before = state.both(pair)
    shown = status(fresh)
    assert state.changes(before, state.both(pair)) == []
    assert "$ " not in shown  # every action is echoed as `  HOST$ COMMAND`; status ran none
    own_log = Path(fresh["MIGRATION_ENV"]).parent / "logs" / "status.log"
    logged = [json.loads(line) for line in own_log.read_text().splitlines()]
    assert [r for r in logged if "command" in r] and not [r for r in logged if "step" in r]


def test_each_later_phase_is_seen_when_it_is_done(fresh):
    expected = {"replicate": "done", "proxy": "not started", "failover": "not started", "dns": "not started",
                "cleanup": "not started"}
    for name, command in (("proxy", "phase2-proxy"), ("failover", "phase3-failover"), ("dns", "phase4-dns"),
                          ("cleanup", "cleanup --apply")):
        assert fab("-H", "old,new", *command.split(), env=fresh, timeout=900).returncode == 0, command
        expected[name] = "done"
        found = json.loads(status(fresh, "--json"))
        assert states(found) == expected, (command, found)
