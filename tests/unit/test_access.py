"""Database access for new's Mastodon: needed only where old's logs in without a password, and planned as
the runbook shows it (a password made up on the spot, old given only its SCRAM verifier)."""
from tasks import access, phases, runbook
from tasks.command import Plan, Remote, Session


def test_needed_only_without_a_password():
    assert access.needed({"DB_HOST": "/var/run/postgresql", "DB_PASS": ""})  # the install guide's
    assert access.needed({})
    assert not access.needed({"DB_HOST": "127.0.0.1", "DB_PASS": "s3cret"})
    assert not access.needed({"DATABASE_URL": "postgresql://mastodon:s3cret@127.0.0.1/mastodon_production"})
    assert access.needed({"DATABASE_URL": "postgresql:///mastodon_production?host=/var/run/postgresql"})
    assert access.needed(None)  # a plan shows the step


def test_the_plan_sets_a_verifier_on_old_and_the_password_on_new_only(example_settings):
    events = []
    mode = Plan(events.append)
    session = Session(mode, example_settings, {role: Remote(role, role, mode) for role in ("old", "new")})
    access.ensure_access(session)
    runs = [(e.alias, e.cmd) for e in events if e.kind == "run"]
    on_old = [cmd.shown() for alias, cmd in runs if alias == "old"]
    on_new = [cmd.shown() for alias, cmd in runs if alias == "new"]
    assert any("host <DB_NAME> <DB_USER> 127.0.0.1/32 scram-sha-256" in c for c in on_old)
    assert any("PASSWORD '<secret: SCRAM verifier of that password>'" in c for c in on_old)
    assert any("127.0.0.1:5433:<DB_NAME>:<DB_USER>:<secret: the new password of Mastodon's role>" in c
               for c in on_new)
    assert not any("the new password" in c for c in on_old)


def test_phase1_and_cleanup_carry_the_access_steps(example_settings):
    titles = [title for title, _ in runbook.runbook_steps(1, example_settings)]
    assert titles.index("database access for new's Mastodon") > titles.index("base backup")
    assert "hot-standby settings on new" in titles
    cleanup = [title for title, _ in runbook.runbook_steps(5, example_settings)]
    ending = cleanup.index("end database access through the tunnel")
    assert ending < cleanup.index("remove replication leftovers")
    assert phases.PHASES[0].steps is phases.replicate


def test_the_standby_drop_in_keeps_its_lines_and_adds_the_lower_ones():
    from tasks import postgres

    text = ("# mastodon-migration: new is old's hot standby, which needs these at least as high as on old.\n"
            "max_connections = 200\nmax_worker_processes = 16\n")
    assert postgres.drop_in_values(text) == {"max_connections": "200", "max_worker_processes": "16"}
    assert postgres.drop_in_values(None) == {}
