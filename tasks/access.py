"""Database access for new's Mastodon while old's PostgreSQL is the primary.

Mastodon's install guide creates its role without a password and sets DB_HOST to the socket directory:
old's Mastodon logs in by peer authentication. new's Mastodon reaches old's database through the tunnel,
over TCP, where peer authentication cannot work. So, only when old's .env.production has no DB_PASS:
- a generated password goes into new's ~mastodon/.pgpass (0600), for the tunnel's address and port, that
  database and that role only; libpq (Rails' pg, node-postgres) reads it when DB_PASS is empty;
- old's role gets that password as a SCRAM verifier (never the password itself on old), and a pg_hba
  rule admits it only from 127.0.0.1 (the tunnel's end), for that database and role;
- a record on new says the role had no password, so cleanup can put it back that way.
Old's own Mastodon goes on logging in by peer. After the failover, new's Mastodon connects the way old's
did (mastodon.use_local_database), and cleanup removes the password (on new, now the primary) and the rule.
"""

from __future__ import annotations

import json
import secrets

from . import mastodon, postgres, system
from .command import Remote, Secret, Session, StepFailed, known
from .facts import CountLines, HomeDir, JsonFile, psql

RECORD = f"{postgres.STATE_DIR}/database-access.json"
ACCESS_RECORD = JsonFile(RECORD)


def needed(values: dict[str, str] | None) -> bool:
    """old's Mastodon logs in without a password (peer or trust); None (a plan): shown as needed."""
    if values is None:
        return True
    return not values.get("DB_PASS") and "@" not in values.get("DATABASE_URL", "").partition("//")[2]


def names(values: dict[str, str] | None) -> tuple[str, str]:
    """Mastodon's role and database, with database.yml's defaults."""
    if values is None:
        return "<DB_USER>", "<DB_NAME>"
    return values.get("DB_USER") or "mastodon", values.get("DB_NAME") or "mastodon_production"


def pgpass_prefix(cfg, database: str, role: str) -> str:
    """The start of the ~mastodon/.pgpass line that holds the tunnel's password (the password follows)."""
    return f"127.0.0.1:{cfg.tunnel_port}:{database}:{role}:"


def pgpass(s: Session, remote: Remote) -> str:
    return f"{remote.fact(HomeDir(s.settings.mastodon_user), planned='/home/mastodon')}/.pgpass"


def ensure_access(s: Session) -> None:
    cfg = s.settings
    with s.step(
        "database access for new's Mastodon",
        "old's Mastodon logs in by peer over the socket, which does not reach through the tunnel: new's "
        "gets a password of its own (in ~mastodon/.pgpass on new; on old only as a SCRAM verifier) and old "
        "admits it from the tunnel's end only",
        undo="fab -H old,new cleanup --apply removes it after the failover; before it: delete the line from "
        "new's ~mastodon/.pgpass, ALTER ROLE ... PASSWORD NULL on old, and the mastodon-access block from "
        "old's pg_hba.conf",
    ):
        values = mastodon.env_values(mastodon.read_env(s, s.old))
        if not needed(values):
            s.say("old's Mastodon logs in with a password (DB_PASS): new's uses it too, through the tunnel")
            return
        role, database = names(values)
        postgres.put_hba_rule(s, "mastodon-access", f"host {database} {role} 127.0.0.1/32 scram-sha-256")
        has_password = postgres.query(
            s.old,
            f"SELECT rolpassword IS NOT NULL FROM pg_authid WHERE rolname = '{role}';",
            cfg,
            means=f"prints `f` while {role} has no password (peer only), `t` once it has one",
        )
        ours = s.new.fact(ACCESS_RECORD, then="a record means the password is this tool's")
        path = pgpass(s, s.new)
        prefix = pgpass_prefix(cfg, database, role)
        present = s.new.fact(
            CountLines(path, prefix, cfg.mastodon_user), then="with `t` above and 1 here, access is in place"
        )
        if has_password == "t" and not ours:
            raise StepFailed(
                f"role {role} on old has a password, but old's .env.production sets no DB_PASS. Put that "
                "password into DB_PASS there (old's Mastodon keeps working), or remove it (ALTER ROLE "
                f"{role} PASSWORD NULL), then run again. Nothing was changed."
            )
        if known(has_password) and has_password == "t" and present:
            return
        if not ours:
            s.new.write_file(
                RECORD, json.dumps({"role": role, "database": database, "had_password": False}) + "\n"
            )
        password = Secret(
            secrets.token_urlsafe(32),
            "the new password of Mastodon's role",
            how="a new random password: `openssl rand -base64 32`",
        )
        verifier = Secret(
            postgres.scram_verifier(password.reveal()),
            "SCRAM verifier of that password",
            how=f"computed on your own machine: `printf %s PASSWORD | {postgres.SCRAM_ONE_LINER}`",
        )
        s.new.run(
            system.replace_lines(
                path, prefix, prefix + password.reveal() + "\n", user=cfg.mastodon_user, secrets=(password,)
            )
        )
        s.old.run(
            psql(f"ALTER ROLE {role} PASSWORD '{verifier.reveal()}';", cfg.pg_port, secrets=(verifier,))
        )


def login_through_tunnel(s: Session, values: dict[str, str] | None) -> mastodon.CanWrite:
    """What new's Mastodon will do from phase 2 on: log into old's database through the tunnel, as its Unix
    user, with DB_PASS when old's .env.production sets one (else ~mastodon/.pgpass)."""
    cfg = s.settings
    role, database = names(values)
    password = (
        None if values is None else Secret(values.get("DB_PASS", ""), "DB_PASS in old's .env.production")
    )
    return mastodon.CanWrite("127.0.0.1", str(cfg.tunnel_port), role, database, password, cfg.mastodon_user)


def require_login(s: Session) -> None:
    """Phase 2 points new's Mastodon at old's database through the tunnel: it must be able to log in."""
    values = mastodon.env_values(mastodon.read_env(s, s.old))
    if (
        s.new.fact(login_through_tunnel(s, values), then="otherwise stop: run phase1-replicate again")
        is False
    ):
        raise StepFailed(
            "new's Mastodon cannot log into old's database through the tunnel (see fab -H old,new "
            "preflight); run phase1-replicate again, which sets that access up. Nothing was changed."
        )


def remove_access(s: Session) -> None:
    """After the failover: the password goes from new's ~mastodon/.pgpass and from the role on new (now the
    primary: it came with the replica), when the role had none before; old's rule goes with old's blocks."""
    cfg = s.settings
    with s.step(
        "end database access through the tunnel",
        "the password that new's Mastodon used to reach old's database goes; the role logs in by peer again, "
        "as it did on old",
        undo="not needed after the failover: phase 1 would create it again",
    ):
        record = s.new.fact(ACCESS_RECORD, then="nothing: no access was set up, nothing to remove")
        if known(record) and not record:
            return
        role, database = (record["role"], record["database"]) if record else ("<DB_USER>", "<DB_NAME>")
        system.remove_marked_lines(
            s.new, pgpass(s, s.new), pgpass_prefix(cfg, database, role), user=cfg.mastodon_user
        )
        if not record or not record.get("had_password"):
            s.new.run(psql(f"ALTER ROLE {role} PASSWORD NULL;", cfg.pg_port))
        system.remove_files(s.new, RECORD)
