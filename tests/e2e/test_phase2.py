"""Phase 2 on the pair: new serves every request through old's nginx, switched under live traffic.

Runs after test_phase1 (new streams from old). The tests build on each other, in file order.
"""
import hashlib
import json
import shutil
import socket
import subprocess
import time
import uuid

import pytest

from . import state
from .conftest import REPO, fab
from .streaming import Stream, followed_by_follower
from .tokens import active_accounts, follower_pair
from .traffic import Traffic, missing_ids

pytestmark = pytest.mark.docker

MEDIA = "/home/mastodon/live/public/system"


@pytest.fixture(scope="module")
def accounts(pair):
    if fab("-H", "old,new", "replication-status").returncode != 0:
        assert fab("-H", "old,new", "phase1-replicate", timeout=600).returncode == 0
    return follower_pair(pair)


@pytest.fixture(scope="module")
def tokens(pair):
    return [account.token for account in active_accounts(pair)]


def media_checksums(pair, host):
    out = pair.sh(host, f"cd {MEDIA} && find . -type f -exec sha256sum {{}} + | sort -k2", check=True).stdout
    return dict(reversed(line.split()) for line in out.splitlines())


def access_log_lines(pair, host):
    return int(pair.sh(host, "wc -l < /var/log/nginx/access.log", check=True).stdout)


def test_a_broken_template_is_rejected_and_old_keeps_serving(pair, accounts, tmp_path):
    broken = tmp_path / "templates"
    shutil.copytree(REPO / "templates", broken)
    (broken / "nginx-proxy.conf.j2").write_text("server { listen 443 ssl; this_is_not_a_directive on; }\n")
    before = pair.exec("old", "cat", "/etc/nginx/sites-available/social.test", check=True).stdout
    result = fab("-H", "old", "render-nginx-proxy", env={"MIGRATION_TEMPLATE_DIR": str(broken)})
    assert result.returncode != 0
    assert 'unknown directive "this_is_not_a_directive"' in result.stderr, result.stderr
    assert "keeps serving as before" in result.stderr
    assert pair.exec("old", "cat", "/etc/nginx/sites-available/social.test", check=True).stdout == before
    author, _ = accounts
    assert pair.request("GET", "/api/v1/timelines/home", token=author.token)[0] == 200


def test_phase2_switches_under_live_traffic_with_zero_failures(pair, accounts, tokens):
    new_requests_before = access_log_lines(pair, "new")
    stream = Stream(pair, accounts[1].token)  # the follower's WebSocket, on old's streaming server
    stream.start()
    assert stream.connected.wait(30), "the WebSocket did not open"
    traffic = Traffic(pair, tokens).start()
    time.sleep(3)
    result = fab("-H", "old,new", "phase2-proxy", timeout=900)
    time.sleep(3)
    traffic.stop()
    time.sleep(2)  # the last statuses' fan-out
    stream.stop.set()
    stream.join(timeout=10)
    assert result.returncode == 0, result.stdout + result.stderr
    assert traffic.failures == [], traffic.summary()
    assert len(traffic.acknowledged) > 50
    assert missing_ids(pair, "old", traffic.acknowledged) == []
    assert access_log_lines(pair, "new") > new_requests_before + 20
    # the WebSocket stayed on old's streaming server, which the relay feeds with what new's Mastodon
    # publishes: no reconnect, and every status of the accounts it follows arrived on it
    assert pair.exec("old", "systemctl", "is-active", "mastodon-streaming").stdout.strip() == "active"
    assert pair.exec("new", "systemctl", "is-active", RELAY).stdout.strip() == "active"
    assert stream.reconnects == 0, stream.errors
    expected = stream.expected(traffic, followed_by_follower(active_accounts(pair)))
    assert len(expected) > 10
    assert sorted(expected - stream.received) == []


def test_the_relay_carries_new_publications_to_old_and_old_presence_to_new(pair, accounts):
    """The relay's tunnel key may forward to old's Redis port and nothing else; its settings file, which
    would hold old's Redis password, is root's alone. A message published on new's Redis reaches a
    subscriber on old's, and a presence key that old's streaming server sets appears in new's Redis."""
    line = pair.sh("old", "grep ' mastodon-migration-redis-tunnel$' /var/lib/postgresql/.ssh/authorized_keys",
                   check=True).stdout
    assert line.startswith('restrict,port-forwarding,permitopen="127.0.0.1:6379",command="/bin/false" ')
    mode = pair.exec("new", "stat", "-c", "%a %U", "/etc/mastodon-migration/streaming-relay.env",
                     check=True).stdout.split()
    assert mode == ["600", "root"]
    channel, marker = "timeline:987654321", f"relayed-{uuid.uuid4()}"
    pair.exec("old", "redis-cli", "SET", f"subscribed:{channel}", "1", "EX", "900", check=True)
    listen = subprocess.Popen(["docker", "exec", pair.container("old"), "timeout", "8", "redis-cli", "--raw",
                               "SUBSCRIBE", channel], stdout=subprocess.PIPE, text=True)
    time.sleep(1)
    for _ in range(5):
        pair.exec("new", "redis-cli", "PUBLISH", channel, marker, check=True)
        time.sleep(0.5)
    heard, _ = listen.communicate(timeout=20)
    assert marker in heard.splitlines()
    deadline = time.monotonic() + 15  # the relay copies presence every 5 s
    while int(pair.exec("new", "redis-cli", "TTL", f"subscribed:{channel}").stdout) <= 0:
        assert time.monotonic() < deadline, "old's presence key did not reach new's Redis"
        time.sleep(1)


RELAY = "mastodon-migration-streaming-relay"


def test_new_mastodon_reaches_its_database_through_pgbouncer_on_new(pair, accounts):
    """PgBouncer on new (the default DATABASE_ENDPOINT), its auth file private, its one database entry at
    old's PostgreSQL through the tunnel; new's Mastodon reaches it over the socket, as old's reached its
    database, with prepared statements off (transaction pooling)."""
    env = pair.exec("new", "cat", "/home/mastodon/live/.env.production", check=True).stdout.splitlines()
    assert {"DB_HOST=/var/run/postgresql", "DB_PORT=6432", "PREPARED_STATEMENTS=false"} <= set(env)
    assert pair.exec("new", "systemctl", "is-active", "pgbouncer").stdout.strip() == "active"
    mode = pair.exec("new", "stat", "-c", "%a %U", "/etc/pgbouncer/userlist.txt", check=True).stdout.split()
    assert mode == ["600", "postgres"]
    databases = pair.exec("new", "sudo", "-u", "postgres", "psql", "-XAtq", "-h", "/var/run/postgresql", "-p",
                          "6432", "-U", "pgbouncer", "pgbouncer", "-c", "SHOW DATABASES", check=True).stdout
    assert "mastodon_production|127.0.0.1|5433|" in databases


def web_log(pair, host):
    return pair.sh(host, "journalctl -u mastodon-web --no-pager | tail -300").stdout


def served_by(pair, token) -> set[str]:
    """Whose Mastodon answered a request through old's public endpoint: the marker is in the path, which
    the web log records (an id that does not exist: the answer is 404)."""
    marker = str(uuid.uuid4().int)[:18]
    pair.request("GET", f"/api/v1/statuses/{marker}", token=token)
    deadline = time.monotonic() + 10  # journald may take a moment to show the line
    while True:
        found = {host for host in ("old", "new") if marker in web_log(pair, host)}
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


def test_requests_through_old_are_served_by_new(pair, accounts):
    author, _ = accounts
    assert served_by(pair, author.token) == {"new"}


def test_new_logs_the_real_client_address(pair, accounts):
    author, _ = accounts
    marker = str(uuid.uuid4().int)[:18]  # an id that does not exist: the path is logged, the answer is 404
    pair.request("GET", f"/api/v1/statuses/{marker}", token=author.token)
    line = [x for x in pair.sh("new", "journalctl -u mastodon-web --no-pager | tail -300").stdout.splitlines()
            if marker in x]
    assert line, "new's web did not log the request"
    assert "remote_ip=172.30.99.1 " in line[-1]  # the test client, as old's nginx saw it (docker's gateway)
    assert pair.info["hosts"]["old"]["address"] not in line[-1].split("peer=")[0]


def test_a_websocket_through_old_receives_a_status_posted_through_old(pair, accounts):
    from websockets.sync.client import connect

    author, follower = accounts
    port = pair.https_port("old")
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    uri = f"wss://{pair.domain}:{port}/api/v1/streaming?stream=user&access_token={follower.token}"
    with connect(uri, sock=raw, ssl=pair.ssl_context(), server_hostname=pair.domain, proxy=None,
                 open_timeout=10, compression=None) as ws:
        posted = pair.json("POST", "/api/v1/statuses", token=author.token,
                           body={"status": f"through the proxy {uuid.uuid4()}", "visibility": "public"})
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            message = json.loads(ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            if (message.get("event") == "update"
                    and str(json.loads(message["payload"])["id"]) == str(posted["id"])):
                return
    pytest.fail("the status did not arrive on the WebSocket opened through old")


def test_media_is_on_new_with_identical_checksums(pair, accounts):
    old = media_checksums(pair, "old")
    assert old, "the seeded pair has media on old"
    new = media_checksums(pair, "new")
    assert {path: new.get(path) for path in old} == old


def test_an_upload_through_old_lands_on_new(pair, accounts):
    author, _ = accounts
    boundary = uuid.uuid4().hex
    png = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000"
                        "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082")
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.png\"\r\n"
            f"Content-Type: image/png\r\n\r\n").encode() + png + f"\r\n--{boundary}--\r\n".encode()
    conn_status, _, answer = pair.request(
        "POST", "/api/v2/media", token=author.token, raw_body=body,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert conn_status in (200, 202), answer
    url = json.loads(answer)["url"]
    path = MEDIA + url.split("/system", 1)[1]
    assert pair.exec("new", "test", "-f", path).returncode == 0
    assert pair.exec("old", "test", "-f", path).returncode != 0
    assert hashlib.sha256(png).hexdigest() in pair.exec("new", "sha256sum", path, check=True).stdout


def test_undo_brings_old_back_with_zero_failures_and_the_phase_runs_again(pair, accounts, tokens):
    traffic = Traffic(pair, tokens).start()
    time.sleep(2)
    undo = fab("-H", "old", "render-nginx-proxy", "--undo")
    time.sleep(3)  # nginx's old workers finish with the proxy; then old's own Mastodon serves again
    undone = served_by(pair, tokens[0])
    redo = fab("-H", "old,new", "phase2-proxy", timeout=600)
    time.sleep(2)
    traffic.stop()
    assert undo.returncode == 0, undo.stdout + undo.stderr
    assert undone == {"old"}
    assert pair.exec("old", "systemctl", "is-active", "mastodon-streaming").stdout.strip() == "active"
    assert redo.returncode == 0, redo.stdout + redo.stderr
    assert traffic.failures == [], traffic.summary()


def test_a_second_run_changes_nothing_and_fails_nothing(pair, accounts):
    before = state.both(pair)
    result = fab("-H", "old,new", "phase2-proxy", timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert state.changes(before, state.both(pair)) == []
