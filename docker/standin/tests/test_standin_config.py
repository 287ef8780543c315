from standin import config


def test_parse_dotenv_forms():
    text = """
# comment
export LOCAL_DOMAIN=social.test
DB_PASS='p@ss # not a comment'
QUOTED="a\\nb"
PLAIN=value # trailing comment
EMPTY=
REF=${LOCAL_DOMAIN}/x
"""
    env = config.parse_dotenv(text)
    assert env["LOCAL_DOMAIN"] == "social.test"
    assert env["DB_PASS"] == "p@ss # not a comment"
    assert env["QUOTED"] == "a\nb"
    assert env["PLAIN"] == "value"
    assert env["EMPTY"] == ""
    assert env["REF"] == "social.test/x"


def test_precedence_process_env_then_files(tmp_path, monkeypatch):
    (tmp_path / ".env.production").write_text("DB_HOST=file-host\nDB_PORT=5433\nREDIS_HOST=r\n")
    (tmp_path / ".env.production.local").write_text("DB_PORT=6000\n")
    monkeypatch.setenv("DB_HOST", "env-host")
    monkeypatch.delenv("DB_PORT", raising=False)
    cfg = config.load("production", tmp_path)
    assert cfg.get("DB_HOST") == "env-host"          # process environment wins
    assert cfg.get("DB_PORT") == "6000"              # .env.production.local over .env.production
    assert cfg.db_params()["host"] == "env-host"


def test_development_does_not_read_env_production(tmp_path, monkeypatch):
    (tmp_path / ".env.production").write_text("DB_NAME=prod\n")
    for k in ("DB_NAME", "DATABASE_URL"):
        monkeypatch.delenv(k, raising=False)
    cfg = config.load("development", tmp_path)
    assert cfg.db_params()["dbname"] == "mastodon_development"


def test_database_yml_defaults_and_url_override(tmp_path, monkeypatch):
    for k in ("DB_HOST", "DB_PORT", "DB_NAME", "DB_USER", "DB_PASS", "DATABASE_URL"):
        monkeypatch.delenv(k, raising=False)
    p = config.load("production", tmp_path).db_params()
    assert (p["host"], p["port"], p["dbname"], p["user"], p["password"]) == (
        "localhost", "5432", "mastodon_production", "mastodon", "")
    monkeypatch.setenv("DATABASE_URL", "postgresql://u:pw@db.example:6432/other")
    p = config.load("production", tmp_path).db_params()
    assert (p["host"], p["port"], p["dbname"], p["user"], p["password"]) == (
        "db.example", "6432", "other", "u", "pw")


def test_redis_urls_with_prefix_fallback(tmp_path, monkeypatch):
    for k in list(__import__("os").environ):
        if "REDIS" in k:
            monkeypatch.delenv(k, raising=False)
    (tmp_path / ".env.production").write_text("REDIS_HOST=10.0.0.2\nREDIS_PORT=6380\n"
                                              "REDIS_PASSWORD=s3:cret\n")
    cfg = config.load("production", tmp_path)
    assert cfg.redis_url() == "redis://:s3%3Acret@10.0.0.2:6380/0"
    assert cfg.redis_url("SIDEKIQ_") == cfg.redis_url()
    monkeypatch.setenv("SIDEKIQ_REDIS_HOST", "10.0.0.3")
    # Mastodon 4.3: a prefixed config takes nothing from the base one (port, db, password)
    assert config.load("production", tmp_path).redis_url("SIDEKIQ_") == "redis://10.0.0.3:6379/0"
    monkeypatch.setenv("CACHE_REDIS_URL", "redis://cache:6379/1")
    assert config.load("production", tmp_path).redis_url("CACHE_") == "redis://cache:6379/1"
    monkeypatch.setenv("REDIS_URL", "redis://elsewhere:1/2")
    assert config.load("production", tmp_path).redis_url() == "redis://elsewhere:1/2"


def test_trusted_proxies_default_and_replacement():
    default = [str(n) for n in config.parse_trusted_proxies("")]
    assert "127.0.0.0/8" in default and "172.16.0.0/12" in default and "::1/128" in default
    custom = [str(n) for n in config.parse_trusted_proxies("10.0.0.5, 192.0.2.0/24  2001:db8::1")]
    assert custom == ["10.0.0.5/32", "192.0.2.0/24", "2001:db8::1/128"]   # defaults replaced, as in Rails


def test_permitted_hosts_and_version(tmp_path, monkeypatch):
    for k in ("LOCAL_DOMAIN", "WEB_DOMAIN", "ALTERNATE_DOMAINS"):
        monkeypatch.delenv(k, raising=False)
    (tmp_path / ".env.production").write_text("LOCAL_DOMAIN=Social.Test\nALTERNATE_DOMAINS=a.test, b.test\n")
    assert config.load("production", tmp_path).permitted_hosts() == ["social.test", "a.test", "b.test"]
    assert config.mastodon_version() == "4.3.8"


def test_prepared_statements_and_replica(tmp_path, monkeypatch):
    import os
    for k in list(os.environ):
        if k.startswith(("REPLICA_", "DB_", "DATABASE_URL", "PREPARED")):
            monkeypatch.delenv(k, raising=False)
    (tmp_path / ".env.production").write_text("DB_HOST=primary\nDB_PASS=pw\n")
    cfg = config.load("production", tmp_path)
    assert cfg.prepared_statements is True and cfg.replica_params() is None
    (tmp_path / ".env.production").write_text("DB_HOST=primary\nDB_PASS=pw\nPREPARED_STATEMENTS=false\n"
                                              "REPLICA_DB_HOST=standby\n")
    cfg = config.load("production", tmp_path)
    assert cfg.prepared_statements is False
    assert cfg.replica_params() is None            # 4.3: REPLICA_DB_HOST alone does not enable the replica
    monkeypatch.setenv("REPLICA_DB_NAME", "mastodon_production")
    p = config.load("production", tmp_path).replica_params()
    assert (p["host"], p["dbname"], p["password"]) == ("standby", "mastodon_production", "pw")


def test_to_positional():
    from standin.db import to_positional
    assert to_positional("SELECT * FROM t WHERE a = %s AND b = ANY(%s) AND c LIKE 'x%%'") == (
        "SELECT * FROM t WHERE a = $1 AND b = ANY($2) AND c LIKE 'x%'", 2)
