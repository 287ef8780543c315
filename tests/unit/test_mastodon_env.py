from tasks import mastodon_env

OLD = """LOCAL_DOMAIN=social.test
DB_HOST=localhost
DB_PORT=5432
DB_PASS=s3cr3t-db-password
SECRET_KEY_BASE=abcdef0123456789
REDIS_HOST=localhost
TRUSTED_PROXY_IP=127.0.0.1
S3_ENABLED=false
"""


def test_rewrite_points_the_database_at_the_tunnel_and_trusts_old():
    text = mastodon_env.rewrite_for_new(OLD, 5433, "172.30.99.11")
    values = mastodon_env.parse(text)
    assert values["DB_HOST"] == "127.0.0.1" and values["DB_PORT"] == "5433"
    assert values["TRUSTED_PROXY_IP"] == "127.0.0.1,172.30.99.11"
    assert values["REDIS_HOST"] == "localhost" and values["DB_PASS"] == "s3cr3t-db-password"
    assert text.startswith(mastodon_env.HEADER + "\n")
    assert mastodon_env.rewrite_for_new(text, 5433, "172.30.99.11") == text  # converges


def test_database_url_overrides_are_rewritten_too():
    text = mastodon_env.rewrite_for_new("DATABASE_URL=postgresql://u:pw@db.internal:5432/mastodon\n", 5433,
                                        "10.0.0.1")
    assert mastodon_env.parse(text)["DATABASE_URL"] == "postgresql://u:pw@127.0.0.1:5433/mastodon"
    back = mastodon_env.point_at_local_database(text, "DATABASE_URL=postgresql://u:pw@db.internal/m\n", 5432)
    assert mastodon_env.parse(back)["DATABASE_URL"] == "postgresql://u:pw@127.0.0.1:5432/mastodon"


# Mastodon's install guide: peer authentication over the socket, no password
GUIDE = ("LOCAL_DOMAIN=social.test\nDB_HOST=/var/run/postgresql\nDB_PORT=5432\nDB_NAME=mastodon_production\n"
         "DB_PASS=\n")


def test_after_the_failover_new_connects_the_way_old_did():
    through_tunnel = mastodon_env.rewrite_for_new(GUIDE, 5433, "172.30.99.11")
    assert mastodon_env.parse(through_tunnel)["DB_HOST"] == "127.0.0.1"
    local = mastodon_env.parse(mastodon_env.point_at_local_database(through_tunnel, GUIDE, 5432))
    assert (local["DB_HOST"], local["DB_PORT"], local["DB_PASS"]) == ("/var/run/postgresql", "5432", "")
    copied = mastodon_env.rewrite_for_new(OLD, 5433, "a")
    tcp = mastodon_env.parse(mastodon_env.point_at_local_database(copied, OLD, 5432))
    assert (tcp["DB_HOST"], tcp["DB_PORT"]) == ("localhost", "5432")
    unset = mastodon_env.point_at_local_database(through_tunnel, "LOCAL_DOMAIN=social.test\n", 5432)
    assert "DB_HOST" not in mastodon_env.parse(unset)  # Mastodon's own default, as on old


def test_behind_pgbouncer_new_takes_postgresqls_own_port_after_the_failover():
    pooled = "DB_HOST=127.0.0.1\nDB_PORT=6432\nDB_PASS=pw\nPREPARED_STATEMENTS=false\n"
    assert mastodon_env.database_address(mastodon_env.parse(pooled)) == ("127.0.0.1", 6432)
    assert mastodon_env.database_address({"DATABASE_URL": "postgresql://u@db:6433/m"}) == ("db", 6433)
    assert mastodon_env.database_address({}) == ("localhost", 5432)
    copied = mastodon_env.rewrite_for_new(pooled, 5433, "172.30.99.11")
    local = mastodon_env.parse(mastodon_env.point_at_local_database(copied, pooled, 5432, pooled=True))
    assert (local["DB_HOST"], local["DB_PORT"]) == ("127.0.0.1", "5432")
    assert local["PREPARED_STATEMENTS"] == "false"


def test_missing_keys_are_added_and_trusted_proxies_kept():
    text = mastodon_env.rewrite_for_new("LOCAL_DOMAIN=x.test\nTRUSTED_PROXY_IP=10.1.1.1 10.1.1.2\n", 5433,
                                        "10.9.9.9")
    values = mastodon_env.parse(text)
    assert values["TRUSTED_PROXY_IP"] == "10.1.1.1,10.1.1.2,10.9.9.9"
    assert values["DB_PORT"] == "5433"


def test_diff_shows_no_secret():
    diff = mastodon_env.masked_diff(OLD, mastodon_env.rewrite_for_new(OLD, 5433, "172.30.99.11"),
                                    "old", "new")
    assert "s3cr3t" not in diff and "abcdef" not in diff
    assert "+DB_PORT=5433" in diff and "-DB_PORT=5432" in diff
    assert "DB_PASS=<secret>" in mastodon_env.masked(OLD)


def test_local_media():
    assert mastodon_env.local_media({"S3_ENABLED": "false"})
    assert mastodon_env.local_media({})
    assert not mastodon_env.local_media({"S3_ENABLED": "true"})


def test_an_empty_trusted_proxy_list_keeps_rails_defaults():
    text = mastodon_env.rewrite_for_new("TRUSTED_PROXY_IP=\n", 5433, "203.0.113.7")
    trusted = mastodon_env.parse(text)["TRUSTED_PROXY_IP"].split(",")
    assert trusted[0] == "127.0.0.0/8" and "192.168.0.0/16" in trusted and trusted[-1] == "203.0.113.7"
