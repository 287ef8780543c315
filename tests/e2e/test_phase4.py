"""Phase 4 on the pair, then cleanup: DNS moves from old to new while a live client re-resolves the
domain each second through the provider and follows it, with zero failed requests; then cleanup
leaves no tunnel, key, pg_hba block or slot behind.

Runs after test_phase3 (new promoted). DNS is a real BIND on 127.0.0.1 (RFC 2136), then the fake
Cloudflare API on 127.0.0.1 (proxied record: verified by read-back and new's origin).
"""
import subprocess
import sys
import time

import dns.message
import dns.query
import pytest

from tests.fakes.bind import Bind
from tests.fakes.cloudflare_api import FakeCloudflare

from . import state
from .conftest import REPO, fab
from .test_phase1 import PSQL, wait_until
from .tokens import active_accounts
from .traffic import Traffic, missing_ids

pytestmark = pytest.mark.docker

OLD, NEW = "172.30.99.11", "172.30.99.12"
ZONE = """$TTL 2
@       IN SOA  ns1 hostmaster 1 3600 600 86400 2
@       IN NS   ns1
ns1     IN A    127.0.0.1
@       IN A    172.30.99.11
"""


@pytest.fixture(scope="module")
def tokens(pair):
    """A pair this tool failed over, fresh: one that faults went through has jobs retrying on new, and the
    re-run checks below compare Redis before and after."""
    for command in ("down", "up"):
        subprocess.run([sys.executable, "docker/pair.py", command], cwd=REPO, capture_output=True, check=True)
    for phase in ("phase1-replicate", "phase2-proxy", "phase3-failover"):
        assert fab("-H", "old,new", phase, timeout=900).returncode == 0, phase
    return [account.token for account in active_accounts(pair)]


def settings_file(tmp_path, **keys):
    path = tmp_path / "dns.env"
    extra = {"LOG_DIR": str(tmp_path / "logs"), **keys}
    path.write_text((REPO / "env" / "demo.env").read_text() + "".join(f"{k}={v}\n" for k, v in extra.items()))
    return path


def port_for(pair, address):
    return pair.https_port({OLD: "old", NEW: "new"}[address])


def resolver(pair, bind, seen: set | None = None):
    """The client's resolver: the authoritative answer, asked each second; the port of the host it names
    (each address it saw goes into `seen`)."""
    def route():
        if not hasattr(route, "at") or time.monotonic() - route.at > 1:
            answer = dns.query.udp(dns.message.make_query("social.test", "A"), "127.0.0.1",
                                   port=bind.port, timeout=2)
            route.address, route.at = answer.answer[0][0].address, time.monotonic()
            (seen if seen is not None else set()).add(route.address)
        return port_for(pair, route.address)
    return route


def record_of(bind) -> str:
    """The A record as BIND holds it, TTL included."""
    query = dns.message.make_query("social.test", "A")
    return dns.query.udp(query, "127.0.0.1", port=bind.port, timeout=2).answer[0].to_text()


def run_across(pair, tokens, route, *args, env):
    traffic = Traffic(pair, tokens, writes_per_second=10, reads_per_second=5, route=route).start()
    time.sleep(3)
    result = fab("-H", "old,new", *args, env=env, timeout=300)
    time.sleep(4)
    traffic.stop()
    return result, traffic


def test_rfc2136_cutover_moves_the_live_client_with_zero_failures(pair, tokens, tmp_path):
    bind = Bind(tmp_path / "bind", zone="social.test", zone_text=ZONE)
    (tmp_path / "bind").mkdir()
    bind.start()
    try:
        env = {"MIGRATION_ENV": str(settings_file(
            tmp_path, DNS_PROVIDER="rfc2136", RFC2136_SERVER="127.0.0.1", RFC2136_PORT=bind.port,
            RFC2136_KEY_NAME="migration.key", RFC2136_KEY_FILE=bind.key_file,
            DNS_VERIFY_SERVERS=bind.server))}
        seen = set()

        route = resolver(pair, bind, seen)
        result, traffic = run_across(pair, tokens, route, "phase4-dns", env=env)
        assert result.returncode == 0, result.stdout + result.stderr
        assert seen == {OLD, NEW}, seen
        assert traffic.failures == [], traffic.summary()
        assert missing_ids(pair, "new", traffic.acknowledged) == []
        assert "run cleanup after" in result.stdout
        before, answer = state.both(pair), record_of(bind)
        again = fab("-H", "old,new", "dns", env=env)
        assert again.returncode == 0 and "unchanged" in again.stdout
        assert state.changes(before, state.both(pair)) == [] and record_of(bind) == answer
    finally:
        bind.stop()


def test_cloudflare_cutover_keeps_the_record_proxied(pair, tokens, tmp_path):
    token = tmp_path / "cf.token"
    token.write_text("e2e-cloudflare-token-value\n")
    token.chmod(0o600)
    with FakeCloudflare("e2e-cloudflare-token-value", zone="social.test") as cloudflare:
        cloudflare.add_record("social.test", "A", OLD, ttl=1, proxied=True)
        env = {"MIGRATION_ENV": str(settings_file(
            tmp_path, DNS_PROVIDER="cloudflare", CLOUDFLARE_API_TOKEN_FILE=token,
            CLOUDFLARE_BASE_URL=cloudflare.base_url))}

        def route():  # the edge follows the record's content: the client lands where it points
            return port_for(pair, cloudflare.record("social.test", "A")["content"])

        result, traffic = run_across(pair, tokens, route, "phase4-dns", env=env)
        assert result.returncode == 0, result.stdout + result.stderr
        assert traffic.failures == [], traffic.summary()
        record = cloudflare.record("social.test", "A")
        assert record["content"] == NEW and record["proxied"] is True
        assert [call["method"] for call in cloudflare.calls() if call["method"] not in ("GET",)] == ["PATCH"]
        assert "e2e-cloudflare-token-value" not in result.stdout + result.stderr


RELAY = "mastodon-migration-streaming-relay"


def test_cleanup_shows_a_plan_then_leaves_nothing_behind(pair, tokens):
    plan = fab("-H", "old,new", "cleanup")
    assert plan.returncode == 0 and "nothing is changed without --apply" in plan.stdout
    assert pair.exec("new", "systemctl", "is-active", "mastodon-migration-tunnel").stdout.strip() == "active"
    applied = fab("-H", "old,new", "cleanup", "--apply", timeout=300)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert pair.exec("new", "test", "-e",
                     "/etc/systemd/system/mastodon-migration-tunnel.service").returncode != 0
    # old's nginx stays by default, and with it old's streaming server and the relay that feeds it: the
    # relay's tunnel key is the one key of the migration that old still accepts
    keys = pair.exec("old", "cat", "/var/lib/postgresql/.ssh/authorized_keys").stdout
    assert [x.split()[-1] for x in keys.splitlines() if "mastodon-migration" in x] == [
        "mastodon-migration-redis-tunnel"]
    assert pair.exec("new", "systemctl", "is-active", RELAY).stdout.strip() == "active"
    assert pair.exec("old", "systemctl", "is-active", "mastodon-streaming").stdout.strip() == "active"
    assert "mastodon-migration" not in pair.exec("old", "cat", "/home/mastodon/.ssh/authorized_keys").stdout
    hba = pair.exec("old", "cat", "/etc/postgresql/15/main/pg_hba.conf").stdout
    assert "# BEGIN mastodon-migration fence" in hba  # old must never serve clients again
    assert "mastodon-migration replication" not in hba and "mastodon-access" not in hba
    assert "mig_replicator" not in pair.exec("new", "cat", "/var/lib/postgresql/.pgpass").stdout
    assert pair.exec("old", "ls", "-A", "/var/lib/postgresql/15/main/pg_replslot").stdout.strip() == ""
    # new, the primary now, received the replication role through replication: it goes there too
    role = "SELECT rolname FROM pg_roles WHERE rolname = 'mig_replicator'"
    roles = pair.exec("new", *PSQL, "-c", role).stdout
    slots = pair.exec("new", *PSQL, "-c", "SELECT slot_name FROM pg_replication_slots").stdout
    assert (roles.strip(), slots.strip()) == ("", "")
    assert [x for x in pair.exec("new", "ls", "/var/lib/postgresql/.ssh/").stdout.split()
            if "mastodon-migration" in x and "redis-tunnel" not in x] == []
    before = state.both(pair)
    again = fab("-H", "old,new", "cleanup", "--apply", timeout=300)
    assert again.returncode == 0
    assert state.changes(before, state.both(pair)) == []
    # once DNS has settled, old retires: its nginx, its streaming server, the relay and the relay's tunnel
    retired = fab("-H", "old,new", "cleanup", "--apply", "--stop-old-nginx", timeout=300)
    assert retired.returncode == 0, retired.stdout + retired.stderr
    assert "mastodon-migration" not in pair.exec("old", "cat",
                                                 "/var/lib/postgresql/.ssh/authorized_keys").stdout
    assert pair.exec("new", "ls", "/var/lib/postgresql/.ssh/").stdout.count("mastodon-migration") == 0
    for folder in ("/etc/mastodon-migration", "/usr/local/lib/mastodon-migration"):
        assert pair.exec("new", "test", "-e", folder).returncode != 0, folder
    for host, unit in (("old", "nginx"), ("old", "mastodon-streaming"), ("new", RELAY),
                       ("new", "mastodon-migration-redis-tunnel")):
        assert pair.exec(host, "systemctl", "is-active", unit).stdout.strip() != "active", unit
    # the instance still works on new, through PgBouncer, even on connections made after cleanup (web
    # restarted: it boots again)
    pair.exec("new", "systemctl", "restart", "mastodon-web", check=True)

    def posted():
        try:
            return pair.request("POST", "/api/v1/statuses", host="new", token=tokens[0],
                                body={"status": "after cleanup"})[0] == 200
        except OSError:  # web still boots
            return False

    wait_until(posted, 60, "a post on new after cleanup")
    status, _, _ = pair.request("GET", "/api/v1/timelines/home", host="new", token=tokens[0])
    assert status == 200
    # new's Mastodon logs in the way old's did (same host form and password), at PgBouncer's port
    old_env = pair.exec("old", "cat", "/home/mastodon/live/.env.production", check=True).stdout
    new_env = pair.exec("new", "cat", "/home/mastodon/live/.env.production", check=True).stdout
    for key in ("DB_HOST", "DB_PASS"):
        assert [x for x in new_env.splitlines() if x.startswith(key + "=")] == \
            [x for x in old_env.splitlines() if x.startswith(key + "=")], key
    assert {"DB_PORT=6432", "PREPARED_STATEMENTS=false"} <= set(new_env.splitlines())
    if pair.info["profile"] == "default":  # PgBouncer needs the tunnel's password no more
        assert "mastodon" not in pair.exec("new", "cat", "/etc/pgbouncer/userlist.txt").stdout
    if pair.info["profile"] == "default":  # old's role had no password: new's has none after cleanup
        no_password = "SELECT rolpassword IS NULL FROM pg_authid WHERE rolname = 'mastodon'"
        assert pair.exec("new", *PSQL, "-c", no_password).stdout.strip() == "t"
        assert "mastodon" not in pair.exec("new", "cat", "/home/mastodon/.pgpass").stdout
