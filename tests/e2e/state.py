"""What the migration can change on a host, read through `docker exec` (not through the tool under test),
so that "a re-run changes nothing" is judged from the hosts themselves: the files the migration touches
(checksum, mode, owner), the units, PostgreSQL's roles, slots and settings, Redis' key counts, and the
row count of every Mastodon table. Sidekiq's `schedule` and `retry` are left out: Sidekiq itself takes from
them whenever a job falls due (a job that failed while old was fenced is retried a while later).
"""
from __future__ import annotations

PATHS = ("/etc/postgresql", "/etc/nginx", "/etc/letsencrypt", "/etc/systemd/system",
         "/var/lib/mastodon-migration", "/etc/mastodon-migration", "/usr/local/lib/mastodon-migration",
         "/var/lib/postgresql/.ssh", "/var/lib/postgresql/.pgpass", "/home/mastodon/.ssh",
         "/home/mastodon/live/.env.production", "/var/lib/postgresql/15/main/postgresql.auto.conf",
         "/home/mastodon/live/public/system")
UNITS = ("mastodon-web", "mastodon-sidekiq", "mastodon-streaming", "nginx", "mastodon-migration-tunnel",
         "mastodon-migration-redis-tunnel", "mastodon-migration-streaming-relay", "postgresql@15-main",
         "redis-server")
FILES_SCRIPT = ("find " + " ".join(PATHS) + " -xdev \\( -type f -o -type l \\) -printf '%p %m %u %s %l\\n' "
                "2>/dev/null | sort; find " + " ".join(PATHS[:-1]) + " -xdev -type f -print0 2>/dev/null "
                "| xargs -0 -r sha256sum | sort -k2")
REDIS_SCRIPT = """r() { redis-cli --raw "$@"; }
echo "feeds $(r --scan --pattern 'feed:home:*' | wc -l)"
echo "moved $(r --scan --pattern 'mastodon-migration:moved:*' | wc -l)"
echo "dead $(r ZCARD dead)"
for q in $(r SMEMBERS queues); do echo "queue:$q $(r LLEN queue:$q)"; done"""
ROLES = ("SELECT rolname, rolcanlogin, rolreplication, md5(coalesce(rolpassword, '')) FROM pg_authid "
         "WHERE rolname NOT LIKE 'pg\\_%' ORDER BY 1")
SLOTS = "SELECT slot_name, slot_type FROM pg_replication_slots ORDER BY 1"
SETTINGS = "SELECT name, setting FROM pg_settings WHERE source = 'configuration file' ORDER BY 1"
ROW_COUNTS = ("SELECT string_agg(format('SELECT %L, count(*) FROM %I', table_name, table_name), "
              "' UNION ALL ' ORDER BY table_name) FROM information_schema.tables "
              "WHERE table_schema = 'public' AND table_type = 'BASE TABLE'")


def _psql(pair, host: str, query: str, database: str = "postgres") -> str:
    result = pair.exec(host, "sudo", "-u", "postgres", "psql", "-XAtq", "-d", database, "-c", query)
    return result.stdout if result.returncode == 0 else f"(not answering: {result.stderr.strip()[-80:]})"


def snapshot(pair, host: str) -> dict[str, str]:
    units = ("for u in " + " ".join(UNITS)
             + '; do echo "$u $(systemctl is-active $u) $(systemctl is-enabled $u)"; done')
    state = {"files": pair.sh(host, FILES_SCRIPT).stdout, "units": pair.sh(host, units).stdout,
             "redis": pair.sh(host, REDIS_SCRIPT).stdout,
             "roles": _psql(pair, host, ROLES), "slots": _psql(pair, host, SLOTS),
             "settings": _psql(pair, host, SETTINGS)}
    counting = _psql(pair, host, ROW_COUNTS, "mastodon_production").strip()
    counted = counting.startswith("SELECT")  # a replica or primary answers; a stopped cluster does not
    state["rows"] = _psql(pair, host, counting, "mastodon_production") if counted else counting
    return state


def both(pair) -> dict[str, dict[str, str]]:
    return {host: snapshot(pair, host) for host in ("old", "new")}


def changes(before: dict, after: dict) -> list[str]:
    """What differs, line by line, for a readable assertion message."""
    found = []
    for host in before:
        for part, text in before[host].items():
            old_lines, new_lines = set(text.splitlines()), set(after[host][part].splitlines())
            found += [f"{host} {part}: - {line}" for line in sorted(old_lines - new_lines)]
            found += [f"{host} {part}: + {line}" for line in sorted(new_lines - old_lines)]
    return found
