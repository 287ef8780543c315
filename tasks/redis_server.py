"""The Redis servers behind Mastodon's settings: which server answers (so that old and new are known to be
two), and new's taking the password that old's .env.production gives (new runs with a copy of that file).

Each host runs its own Redis; jobs are carried from old's to new's by the drain (see sidekiq). A Redis that
both hosts reach, or one behind Sentinel, is refused by preflight: the move would then read and write the
same keys, or a server this tool cannot name.
"""

from __future__ import annotations

from . import redis_cli
from .command import Remote, Session, StepFailed, known
from .facts import RedisServer
from .mastodon import env_values, read_env


def targets(values: dict[str, str] | None) -> dict[str, redis_cli.Target]:
    """Mastodon's Redis configurations that the migration uses, by what they hold."""
    return {"base": redis_cli.base(values), "Sidekiq": redis_cli.sidekiq(values)}


def give_new_old_password(s: Session) -> None:
    """new's Redis has no password while old's settings give one: new takes it (else the copied
    .env.production would not work there)."""
    with s.step(
        "Redis password on new",
        "new's Mastodon runs with old's .env.production: new's own Redis must take the same password",
        undo="put back the redis.conf.mig-before-password kept next to redis.conf and restart redis-server",
    ):
        values = env_values(read_env(s, s.old))
        for target in {t for t in targets(values).values() if t.password or s.planning}:
            server = s.new.fact(RedisServer(target), then="a password is set only when Redis has none")
            if known(server) and server.no_password and target.user:
                raise StepFailed(
                    f"new's Redis at {target.server} has no user {target.user} (REDIS_USER in old's "
                    ".env.production): create it with old's password (ACL SETUSER), then run phase 2 again"
                )
            if known(server) and not server.no_password:
                if server.problem:
                    raise StepFailed(
                        f"new's Redis at {target.server} does not take the settings of old's .env.production "
                        f"({server.problem}): give it the same user and password as old's Redis, then run "
                        "phase 2 again"
                    )
                continue
            _set_password(s.new, target, server.config_file if known(server) else "<config_file>")


def _set_password(remote: Remote, target: redis_cli.Target, config_file: str) -> None:
    """CONFIG SET with the password on stdin (-x), CONFIG REWRITE so a restart keeps it; redis.conf kept."""
    backup = f"{config_file}.mig-before-password"
    body = (
        f"[ -e {backup} ] || cp -p {config_file} {backup}\n"
        'printf %s "$REDISCLI_AUTH" | REDISCLI_AUTH= r -x CONFIG SET requirepass\n'
        "r CONFIG REWRITE"
    )
    # the script exports the password as REDISCLI_AUTH; printf is the shell's own, so it is on no argv
    remote.run(redis_cli.script(target, body))
