"""Host state of the fresh pair, asserted through `docker exec` (not through Fabric)."""

import pytest

pytestmark = [pytest.mark.docker, pytest.mark.fresh_pair]

UNITS = ("mastodon-web", "mastodon-sidekiq", "mastodon-streaming")


def systemctl(pair, host, verb, unit):
    return pair.exec(host, "systemctl", verb, unit).stdout.strip()


@pytest.mark.parametrize("unit", UNITS)
def test_units_enabled_and_active_on_old(pair, unit):
    assert systemctl(pair, "old", "is-active", unit) == "active"
    assert systemctl(pair, "old", "is-enabled", unit) == "enabled"


@pytest.mark.parametrize("unit", UNITS)
def test_units_installed_but_stopped_and_disabled_on_new(pair, unit):
    assert pair.exec("new", "systemctl", "cat", f"{unit}.service").returncode == 0
    assert systemctl(pair, "new", "is-active", unit) in ("inactive", "unknown")
    assert systemctl(pair, "new", "is-enabled", unit) == "disabled"


@pytest.mark.parametrize("host", ["old", "new"])
@pytest.mark.parametrize("unit", ["ssh", "postgresql@15-main", "nginx", "redis-server"])
def test_base_services_running(pair, host, unit):
    assert systemctl(pair, host, "is-active", unit) == "active"


def test_hosts_have_distinct_ssh_host_keys(pair):
    keys = [pair.exec(h, "cat", "/etc/ssh/ssh_host_ed25519_key.pub", check=True).stdout.split()[1]
            for h in ("old", "new")]
    assert keys[0] != keys[1]


def test_hosts_reach_each_other_on_the_private_network(pair):
    old_ip = pair.info["hosts"]["old"]["address"]
    new_ip = pair.info["hosts"]["new"]["address"]
    assert pair.exec("old", "ip", "-4", "-o", "addr").stdout.count(old_ip) == 1
    # new -> old's sshd over the private subnet (the path the migration's tunnel takes)
    r = pair.sh("new", f"timeout 5 bash -c 'exec 3<>/dev/tcp/{old_ip}/22; head -c 7 <&3'")
    assert r.stdout == "SSH-2.0", r
    r = pair.sh("old", f"timeout 5 bash -c 'exec 3<>/dev/tcp/{new_ip}/22; head -c 7 <&3'")
    assert r.stdout == "SSH-2.0", r


def test_admin_user_has_passwordless_sudo(pair):
    for host in ("old", "new"):
        assert pair.exec(host, "sudo", "-n", "true", user="admin").returncode == 0


def test_env_production_on_old(pair):
    st = pair.exec("old", "stat", "-c", "%a %U %G", "/home/mastodon/live/.env.production", check=True)
    assert st.stdout.split() == ["600", "mastodon", "mastodon"]
    text = pair.exec("old", "cat", "/home/mastodon/live/.env.production", check=True).stdout
    env = dict(line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#"))
    assert env["LOCAL_DOMAIN"] == pair.domain
    assert env["DB_PORT"] == "5432"
    assert env["DB_NAME"] == "mastodon_production"
    assert env["DB_USER"] == "mastodon"
    assert env["REDIS_HOST"] == "127.0.0.1" and env["REDIS_PORT"] == "6379"
    assert "TRUSTED_PROXY_IP" in env
    assert env["S3_ENABLED"] == "false"
    login = ["runuser", "-u", "mastodon", "--", "psql", "-w", "-d", "mastodon_production", "-tAc",
             "select current_user"]
    if pair.info["profile"] == "default":  # the install guide's: peer over the socket, no password at all
        assert (env["DB_HOST"], env["DB_PASS"]) == ("/var/run/postgresql", "")
        peer = pair.exec("old", *login[:5], "-h", "/var/run/postgresql", *login[5:])
        assert peer.stdout.strip() == "mastodon", peer
        tcp = pair.exec("old", *login[:5], "-h", "127.0.0.1", *login[5:])
        assert tcp.returncode != 0 and "no password supplied" in tcp.stderr, tcp
        password = pair.exec("old", "runuser", "-u", "postgres", "--", "psql", "-tAc",
                             "select rolpassword is null from pg_authid where rolname = 'mastodon'").stdout
        assert password.strip() == "t"
    else:  # the password works over TCP, as the app connects
        assert env["DB_HOST"] in ("127.0.0.1", "localhost") and len(env["DB_PASS"]) >= 16
        r = pair.exec("old", "env", f"PGPASSWORD={env['DB_PASS']}", *login[3:5], "-h", "127.0.0.1", "-U",
                      "mastodon", *login[5:])
        assert r.stdout.strip() == "mastodon", r.stderr


def test_old_is_a_seeded_postgres_primary(pair):
    q = pair.exec("old", "runuser", "-u", "postgres", "--", "psql", "-tAc",
                  "select pg_is_in_recovery(), current_setting('wal_level'), "
                  "current_setting('max_wal_senders'), current_setting('server_version_num')::int / 10000",
                  check=True).stdout.strip()
    assert q.startswith("f|replica|") and q.endswith("|15")


def test_old_is_tuned_above_new_in_every_hot_standby_setting(pair):
    names = ("max_connections", "max_worker_processes", "max_wal_senders", "max_prepared_transactions",
             "max_locks_per_transaction")
    query = f"select name, setting::int from pg_settings where name in {names} order by name"
    settings = {}
    for host in ("old", "new"):
        rows = pair.exec(host, "runuser", "-u", "postgres", "--", "psql", "-tAc", query, check=True).stdout
        settings[host] = dict(line.split("|") for line in rows.split())
    if pair.info["profile"] == "default":
        assert all(int(settings["old"][n]) > int(settings["new"][n]) for n in names), settings
        assert int(settings["old"]["max_connections"]) >= 200
    n = pair.exec("old", "runuser", "-u", "postgres", "--", "psql", "-d", "mastodon_production", "-tAc",
                  "select (select count(*) from accounts), (select count(*) from statuses), "
                  "(select count(*) from follows)", check=True).stdout.strip()
    accounts, statuses, follows = map(int, n.split("|"))
    assert accounts > 1 and statuses > 0 and follows > 0


def test_certificate_is_certbot_style(pair):
    d = pair.domain
    for f in ("fullchain", "privkey", "cert", "chain"):
        link = pair.exec("old", "readlink", f"/etc/letsencrypt/live/{d}/{f}.pem", check=True).stdout.strip()
        assert link == f"../../archive/{d}/{f}1.pem"
    st = pair.exec("old", "stat", "-L", "-c", "%a", f"/etc/letsencrypt/live/{d}/privkey.pem", check=True)
    assert st.stdout.strip() == "600"
    conf = pair.exec("old", "cat", f"/etc/letsencrypt/renewal/{d}.conf", check=True).stdout
    assert f"fullchain = /etc/letsencrypt/live/{d}/fullchain.pem" in conf


def test_both_hosts_trust_the_test_ca(pair):
    # old: its own site on loopback; new: old's site over the private network (no -k: the system trust store)
    targets = {"old": "127.0.0.1", "new": pair.info["hosts"]["old"]["address"]}
    for host, ip in targets.items():
        r = pair.exec(host, "curl", "-fsS", "--max-time", "5", "--resolve", f"{pair.domain}:443:{ip}",
                      f"https://{pair.domain}/health")
        assert (r.returncode, r.stdout.strip()) == (0, "OK"), (host, r.stderr)


def test_nginx_site_on_old(pair):
    d = pair.domain
    assert pair.exec("old", "test", "-L", f"/etc/nginx/sites-enabled/{d}").returncode == 0
    conf = pair.exec("old", "nginx", "-T", check=True).stdout
    for needle in ("map $http_upgrade $connection_upgrade", "server 127.0.0.1:3000", "server 127.0.0.1:4000",
                   "listen 443 ssl http2", "location ^~ /api/v1/streaming", "client_max_body_size 99m",
                   "root /home/mastodon/live/public",
                   f"ssl_certificate     /etc/letsencrypt/live/{d}/fullchain.pem"):
        assert needle in conf, needle


def test_new_is_fresh(pair):
    assert pair.exec("new", "test", "-e", "/home/mastodon/live/.env.production").returncode == 1
    assert pair.exec("new", "test", "-e", "/etc/letsencrypt/live").returncode == 1
    assert pair.exec("new", "test", "-e", "/home/mastodon/live/public/assets").returncode == 1
    assert pair.exec("new", "test", "-L", "/etc/nginx/sites-enabled/default").returncode == 0
    assert pair.exec("new", "redis-cli", "dbsize", check=True).stdout.strip() == "0"
    dbs = pair.exec("new", "runuser", "-u", "postgres", "--", "psql", "-tAc",
                    "select datname from pg_database order by 1", check=True).stdout.split()
    assert dbs == ["postgres", "template0", "template1"]


def test_same_standin_code_on_both_hosts(pair):
    cmd = ("cd /home/mastodon/live && find . -path ./public -prune -o -path ./log -prune -o -path ./tmp "
           "-prune -o -name .env.production -prune -o -name __pycache__ -prune -o -type f -print0 "
           "| sort -z | xargs -0 sha256sum | sha256sum")
    assert pair.sh("old", cmd, check=True).stdout == pair.sh("new", cmd, check=True).stdout


def test_health_through_nginx_with_test_ca(pair):
    status, headers, body = pair.request("GET", "/health")
    assert (status, body.strip()) == (200, b"OK")
    status, headers, body = pair.request("GET", "/api/v1/streaming/health")
    assert (status, body.strip()) == (200, b"OK")
