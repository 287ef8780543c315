"""Configuration as Mastodon reads it: process environment first, then dotenv files.

Rails (dotenv-rails) loads, for RAILS_ENV=production, `.env.production.local`, `.env.local`, `.env.production`
and `.env`, in that order of precedence, and never overrides a variable that the process environment already
has. Without RAILS_ENV the environment is `development`, which does NOT read `.env.production` and defaults to
the `mastodon_development` database: exactly what happens to a real `bin/tootctl` run without
`RAILS_ENV=production`. The streaming server (Node) reads `.env.production` only when NODE_ENV=production.

Nothing here mutates os.environ: a hot restart (SIGUSR1) re-execs with the original environment and reads the
files again, like Puma's `ENV.replace(previous_env)` before its exec.
"""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from urllib.parse import quote

APP_ROOT = Path(os.environ.get("STANDIN_APP_ROOT") or Path(__file__).resolve().parent.parent)

_LINE = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_.]*)\s*=\s*(.*)?\s*$")

# Rails' ActionDispatch::RemoteIp::TRUSTED_PROXIES, as listed in Mastodon's docs for TRUSTED_PROXY_IP.
DEFAULT_TRUSTED_PROXIES = ("127.0.0.0/8", "::1/128", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",
                           "fc00::/7")


def parse_dotenv(text: str) -> dict[str, str]:
    """Parse a dotenv file the way the dotenv gem does for the cases Mastodon's files use.

    KEY=value, optional `export `, comments, single quotes (literal), double quotes (\\n escapes),
    unquoted values with a trailing ` # comment`, and ${VAR} / $VAR expansion from earlier keys.
    """
    out: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        m = _LINE.match(line)
        if not m:
            continue
        key, value = m.group(1), (m.group(2) or "").strip()
        if len(value) >= 2 and value[0] == value[-1] == "'":
            value = value[1:-1]
        elif len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1].replace("\\n", "\n").replace('\\"', '"')
            value = _expand(value, out)
        else:
            value = re.sub(r"\s+#.*$", "", value)
            value = _expand(value, out)
        out[key] = value
    return out


def _expand(value: str, known: dict[str, str]) -> str:
    def sub(m: re.Match) -> str:
        name = m.group(1) or m.group(2)
        return os.environ.get(name, known.get(name, ""))

    return re.sub(r"(?<!\\)\$\{([A-Za-z_][A-Za-z0-9_]*)\}|(?<!\\)\$([A-Za-z_][A-Za-z0-9_]*)", sub, value)


def dotenv_files(env_name: str, root: Path = APP_ROOT) -> list[Path]:
    names = [f".env.{env_name}.local"]
    if env_name != "test":
        names.append(".env.local")
    names += [f".env.{env_name}", ".env"]
    return [root / n for n in names]


class Config:
    """Merged settings. `get` follows Ruby's ENV[...] semantics: process env wins over the files."""

    def __init__(self, values: dict[str, str], env_name: str, files: list[Path], root: Path = APP_ROOT):
        self.values = values
        self.env_name = env_name
        self.files = files
        self.root = root

    @property
    def production(self) -> bool:
        return self.env_name == "production"

    def get(self, key: str, default: str | None = None) -> str | None:
        v = self.values.get(key)
        return default if v is None else v

    def present(self, key: str) -> str | None:
        """Ruby's `ENV[key].presence`: None for unset, empty or blank."""
        v = self.values.get(key)
        return v if v is not None and v.strip() else None

    def int(self, key: str, default: int) -> int:
        v = self.present(key)
        try:
            return int(v) if v is not None else default
        except ValueError:
            return default

    def float(self, key: str, default: float) -> float:
        v = self.present(key)
        try:
            return float(v) if v is not None else default
        except ValueError:
            return default

    def truthy(self, key: str, default: bool = False) -> bool:
        v = self.present(key)
        if v is None:
            return default
        return v.strip().lower() in ("1", "true", "yes", "on", "t", "y")

    # -- Mastodon settings ------------------------------------------------------------------------------
    @property
    def local_domain(self) -> str:
        return self.present("LOCAL_DOMAIN") or "localhost"

    @property
    def web_domain(self) -> str:
        return self.present("WEB_DOMAIN") or self.local_domain

    def permitted_hosts(self) -> list[str]:
        """config.hosts in Mastodon's production.rb: LOCAL_DOMAIN, WEB_DOMAIN and ALTERNATE_DOMAINS."""
        hosts = [self.local_domain, self.web_domain]
        alt = self.present("ALTERNATE_DOMAINS")
        if alt:
            hosts += [h.strip() for h in alt.split(",") if h.strip()]
        seen: list[str] = []
        for h in hosts:
            if h.lower() not in seen:
                seen.append(h.lower())
        return seen

    def trusted_proxies(self) -> list[ipaddress._BaseNetwork]:
        """Mastodon: `TRUSTED_PROXY_IP.split(/(?:\\s*,\\s*|\\s+)/).map { IPAddr.new }` if present.

        Rails then uses that list INSTEAD of its defaults (loopback and private ranges are no longer trusted
        unless listed), which Mastodon's docs spell out.
        """
        raw = self.present("TRUSTED_PROXY_IP")
        return parse_trusted_proxies(raw)

    @property
    def s3_enabled(self) -> bool:
        return (self.get("S3_ENABLED") or "") == "true"

    @property
    def boot_seconds(self) -> float:
        return max(0.0, self.float("BOOT_SECONDS", 0.0))

    # -- connections -----------------------------------------------------------------------------------
    def db_params(self) -> dict:
        """config/database.yml, merged with DATABASE_URL (whose values win, as in Rails)."""
        if self.production:
            params = {
                "dbname": self.present("DB_NAME") or "mastodon_production",
                "user": self.present("DB_USER") or "mastodon",
                "password": self.get("DB_PASS") or "",
                "host": self.present("DB_HOST") or "localhost",
                "port": self.present("DB_PORT") or "5432",
            }
        else:
            params = {"dbname": self.present("DB_NAME") or f"mastodon_{self.env_name}"}
            for key, name in (("user", "DB_USER"), ("password", "DB_PASS"), ("host", "DB_HOST"),
                              ("port", "DB_PORT")):
                if self.present(name):
                    params[key] = self.present(name)
        params["sslmode"] = self.present("DB_SSLMODE") or "prefer"
        params["connect_timeout"] = "15"
        # no application_name: Rails and Node's pg leave it empty, so nothing may rely on it
        url = self.present("DATABASE_URL")
        if url:
            from psycopg2.extensions import parse_dsn

            params.update({k: v for k, v in parse_dsn(url).items() if v not in (None, "")})
        return params

    @property
    def prepared_statements(self) -> bool:
        """database.yml: `prepared_statements: ENV['PREPARED_STATEMENTS'] || 'true'`."""
        return (self.present("PREPARED_STATEMENTS") or "true").strip().lower() != "false"

    def replica_params(self) -> dict | None:
        """Mastodon 4.3's read replica: enabled when REPLICA_DB_NAME or REPLICA_DATABASE_URL is set; each
        REPLICA_DB_* falls back to the DB_* value. None when not enabled."""
        if not (self.present("REPLICA_DB_NAME") or self.present("REPLICA_DATABASE_URL")):
            return None
        params = self.db_params()
        for key, name in (("host", "HOST"), ("port", "PORT"), ("dbname", "NAME"), ("user", "USER"),
                          ("password", "PASS")):
            if self.present(f"REPLICA_DB_{name}"):
                params[key] = self.present(f"REPLICA_DB_{name}")
        url = self.present("REPLICA_DATABASE_URL")
        if url:
            from psycopg2.extensions import parse_dsn

            params.update({k: v for k, v in parse_dsn(url).items() if v not in (None, "")})
        return params

    def db_label(self) -> str:
        p = self.db_params()
        return f"{p.get('user', '')}@{p.get('host', 'socket')}:{p.get('port', '5432')}/{p['dbname']}"

    def redis_url(self, prefix: str = "") -> str:
        """lib/mastodon/redis_configuration.rb of Mastodon 4.3, for prefix "" (base), "SIDEKIQ_" or "CACHE_":

        - `<prefix>REDIS_URL`, when set, is used alone (even empty, which fails as it does in Mastodon);
        - else `redis://[user][:password@]host:port/db` from `<prefix>REDIS_HOST` (base default `localhost`),
          `_PORT` (base default 6379), `_DB` (base default 0), `_USER`, `_PASSWORD`. A prefixed config takes
          nothing from the base one: `SIDEKIQ_REDIS_HOST` alone means port 6379, db 0, no password;
        - a prefixed config without URL and without a (non-blank) HOST is the base config, entirely.
        `<prefix>REDIS_SENTINELS` + `<prefix>REDIS_SENTINEL_MASTER` are not supported by the stand-in.
        """
        p = f"{prefix}REDIS_"
        url = self.get(f"{p}URL")       # ENV.fetch: an empty value is a value
        if url is not None:
            return url
        if self.present(f"{p}SENTINELS") and self.present(f"{p}SENTINEL_MASTER"):
            raise ValueError(f"{p}SENTINELS: Redis Sentinel is not supported by the stand-in")
        defaults = {} if prefix else {"HOST": "localhost", "PORT": "6379", "DB": "0"}
        host = self.get(f"{p}HOST", defaults.get("HOST"))
        if host is None or not host.strip():
            if prefix:
                return self.redis_url("")
            raise ValueError("REDIS_HOST is empty")   # Mastodon recurses until SystemStackError here
        port = self.get(f"{p}PORT", defaults.get("PORT")) or "6379"   # redis-rb's default for `host:`
        db = self.get(f"{p}DB", defaults.get("DB")) or "0"
        user = self.present(f"{p}USER")
        password = self.present(f"{p}PASSWORD")
        auth = ""
        if user or password:
            auth = quote(user or "", safe="") + (f":{quote(password, safe='')}" if password else "") + "@"
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"redis://{auth}{host}:{port}/{db}"

    @property
    def redis_namespace(self) -> str | None:
        """REDIS_NAMESPACE (deprecated in 4.3, still honoured): redis-namespace around the base and Sidekiq
        connections, so every key and channel is `<ns>:<key>`. None when unset or blank."""
        return self.present("REDIS_NAMESPACE")

    @property
    def cache_namespace(self) -> str:
        """The Rails cache store's namespace: `<REDIS_NAMESPACE>_cache`, or `cache`."""
        ns = self.redis_namespace
        return f"{ns}_cache" if ns else "cache"


def parse_trusted_proxies(raw: str | None) -> list:
    if not raw or not raw.strip():
        return [ipaddress.ip_network(n) for n in DEFAULT_TRUSTED_PROXIES]
    nets = []
    for item in re.split(r"(?:\s*,\s*|\s+)", raw.strip()):
        if not item:
            continue
        nets.append(ipaddress.ip_network(item, strict=False))
    return nets


def rails_env() -> str:
    return os.environ.get("RAILS_ENV") or os.environ.get("RACK_ENV") or "development"


def load(env_name: str | None = None, root: Path = APP_ROOT, files: list[Path] | None = None) -> Config:
    env_name = env_name or rails_env()
    files = files if files is not None else dotenv_files(env_name, root)
    merged: dict[str, str] = {}
    for path in files:  # earlier files take precedence, like dotenv's non-overriding load
        try:
            text = path.read_text()
        except (FileNotFoundError, PermissionError, IsADirectoryError):
            continue
        for k, v in parse_dotenv(text).items():
            merged.setdefault(k, v)
    merged.update({k: v for k, v in os.environ.items()})
    return Config(merged, env_name, files, root)


def load_streaming(root: Path = APP_ROOT) -> Config:
    """streaming/index.js: dotenv from `.env.production` when NODE_ENV=production, else `.env`."""
    env_name = os.environ.get("NODE_ENV") or "development"
    name = ".env.production" if env_name == "production" else ".env"
    return load(env_name, root, [root / name])


def mastodon_version(root: Path = APP_ROOT) -> str:
    try:
        text = (root / "lib" / "mastodon" / "version.rb").read_text()
    except OSError:
        return "0.0.0"
    parts = []
    for name in ("major", "minor", "patch"):
        m = re.search(rf"def {name}\s*\n?\s*(\d+)", text)
        parts.append(m.group(1) if m else "0")
    return ".".join(parts)
