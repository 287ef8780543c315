"""The runbook: rendered offline from the phases' own steps, every shell block valid, no secret shown;
and the drift check that holds a real run's log against it."""
import re
import subprocess

import pytest

from tasks import phases, postgres, runbook, settings
from tasks.command import Cmd

from .conftest import EXAMPLE, fab


@pytest.fixture
def with_token(tmp_path):
    """The example settings plus a smoke-test token: a secret that phases 2 and 3 send."""
    token = tmp_path / "smoke.token"
    token.write_text("tok-NEVER-SHOWN-1234\n")
    token.chmod(0o600)
    env = tmp_path / "migration.env"
    env.write_text(EXAMPLE.read_text() + f"\nSMOKE_TEST_TOKEN_FILE={token}\nLOG_DIR={tmp_path / 'logs'}\n")
    return settings.load(env)


def shell_blocks(markdown: str) -> list[str]:
    return re.findall(r"```sh\n(.*?)```", markdown, re.S)


def test_every_phase_is_rendered_offline(example_settings):
    text = runbook.render(example_settings)  # the hosts have no connection: any contact would fail
    headings = re.findall(r"^## Phase (\d): (\w+)$", text, re.M)
    assert headings == [("1", "replicate"), ("2", "proxy"), ("3", "failover"), ("4", "dns"), ("5", "cleanup")]
    assert "not documented" not in text
    for command in ("fab -H old,new phase1-replicate", "fab -H old,new phase4-dns",
                    "fab -H old,new cleanup --apply"):
        assert f"`{command}`" in text
    assert "### 1.6 base backup" in text and "Why: copy old's cluster to new through the tunnel" in text
    assert "Undo:\n\n```sh\nssh old -- sudo -u postgres psql -c 'DROP ROLE mig_replicator'\n```" in text


@pytest.mark.parametrize("token", [False, True])
def test_every_shell_block_passes_bash_n(example_settings, with_token, token):
    blocks = shell_blocks(runbook.render(with_token if token else example_settings))
    assert len(blocks) > 50
    for block in blocks:
        checked = subprocess.run(["bash", "-n"], input=block, text=True, capture_output=True)
        assert checked.returncode == 0, f"{checked.stderr}\n{block}"


def test_secrets_appear_only_as_references(with_token):
    text = runbook.render(with_token)
    assert "tok-NEVER-SHOWN-1234" not in text
    assert f"<secret: SMOKE_TEST_TOKEN_FILE ({with_token.smoke_test_token_file})>" in text
    assert "<secret: the new replication password>" in text  # made up while planning: never a real one
    assert ("\\<secret: the new replication password\\>: a new random password: `openssl rand -base64 32`"
            in text)
    for phase in runbook.PHASES:
        for event in runbook.plan(with_token, phase):
            for secret in event.cmd.secrets if event.cmd else ():
                assert not secret.reveal() or secret.reveal() not in text, secret.where


def test_files_written_are_here_documents(example_settings):
    text = runbook.render(example_settings, only=1)
    unit = re.search(r"ssh new -- 'sudo sh -s' <<'EOF'\n\{ set -e; mkdir -p /etc/systemd/system\n.*?"
                     r"mv -f \"\$t\" /etc/systemd/system/mastodon-migration-tunnel.service\n\} <<'DATA'\n"
                     r"(.*?)\n# end of file, as sent by mastodon-live-migration\nDATA\nEOF\n", text, re.S)
    assert unit and "ExecStart=/usr/bin/ssh -N -T" in unit.group(1)


def test_one_phase_from_the_command_line():
    result = fab("-H", "old,new", "runbook", "--phase", "2")
    assert result.returncode == 0, result.stderr
    assert re.findall(r"^## Phase (\d)", result.stdout, re.M) == ["2"]
    assert fab("-H", "old,new", "runbook", "--phase", "7").returncode == 2


def a_phase(steps):
    return phases.Phase(9, "test", phases.phase1_replicate, steps, "none")


def test_what_a_step_says_while_planning_stays_in_place(example_settings):
    def steps(s):
        with s.step("first"):
            s.say("a remark")
            s.old.run(Cmd("true"))
    events = runbook.plan(example_settings, a_phase(steps))
    assert [(e.kind, e.title) for e in events] == [("step", "first"), ("note", "a remark"), ("run", ""),
                                                    ("end", "first")]


def test_a_step_inside_a_step_is_its_sub_step_and_the_rest_stays_in_the_outer_one(example_settings):
    def steps(s):
        with s.step("media sync", "copy"):
            with s.step("media key", "a key", undo="remove it"):
                s.new.run(Cmd("ssh-keygen"))
            s.new.run(Cmd("rsync"))
    text = runbook.render_phase(example_settings, a_phase(steps))
    outer, inner = text.index("### 9.1 media sync"), text.index("#### 9.1.1 media key")
    keygen, rest, rsync = text.index("ssh-keygen"), text.index("Then, still in 9.1:"), text.index("rsync")
    assert outer < inner < keygen < rest < rsync
    assert (runbook.step_tree(runbook.plan(example_settings, a_phase(steps))).children[0].commands
            == ["sudo rsync"])


def run_blocks(markdown: str) -> list[str]:
    return [block for block in re.findall(r"Run:\n\n```sh\n(.*?)```", markdown, re.S)]


def test_every_run_block_stops_at_the_first_failure_and_every_check_says_what_passes(with_token):
    text = runbook.render(with_token)
    blocks = run_blocks(text)
    assert blocks and all(block.startswith("(\nset -e\n") and block.endswith("\n)\n") for block in blocks)
    checks = text.count("Check:\n\n```sh")
    assert checks > 50 and text.count("```\n\nExpect: ") == checks


def test_every_wait_says_what_to_repeat_until_and_for_how_long(with_token):
    waits = [event for phase in runbook.PHASES for event in runbook.plan(with_token, phase)
             if event.kind == "repeat"]
    # tunnel, streaming, health x3, probe, drain x2, catch-up, recovery, write, DNS...
    assert len(waits) >= 12
    text = runbook.render(with_token)
    assert len(re.findall(r"^Repeat the check above until ", text, re.M)) == len(waits)
    assert "Repeat the check above until new streams from old, at most 120 s." in text
    assert ("Repeat the check above until a probe through old appears in new's access log, at most 20 s."
            in text)


def test_a_value_printed_by_a_check_names_that_check_where_it_is_pasted(example_settings):
    text = runbook.render(example_settings, only=1)
    assert "#### 1.5.1 tunnel key" in text
    assert "Paste for \\<new's tunnel public key\\> what the check in 1.5.1 printed." in text
    assert ("ssh-keygen -F OLD -f ~/.ssh/known\\_hosts" in text
            or "ssh-keygen -F OLD -f ~/.ssh/known_hosts" in text)


def test_the_scram_one_liner_computes_what_old_stores(tmp_path):
    made = subprocess.run(["sh", "-c", postgres.SCRAM_ONE_LINER], input="correct horse", text=True,
                          capture_output=True, check=True).stdout.strip()
    iterations, rest = made.removeprefix("SCRAM-SHA-256$").split(":", 1)
    salt = __import__("base64").b64decode(rest.split("$")[0])
    assert made == postgres.scram_verifier("correct horse", salt=salt, iterations=int(iterations))


def test_read_only_steps_say_so_and_steps_that_change_say_how_to_undo(example_settings):
    text = runbook.render(example_settings)
    assert "### 1.1 preflight\n\nWhy: read-only checks on both hosts before anything changes.\n\n" \
           "Read-only: nothing to undo." in text
    assert "not documented" not in text and "Undo: not needed" in text


# --- runbook_commands and drift --------------------------------------------------------------------

def test_runbook_commands_are_the_commands_as_the_run_log_shows_them(example_settings):
    commands = runbook.runbook_commands(1, example_settings)
    # first: a base backup that a kill cut short? then preflight's first check, on old
    assert commands[:2] == ["sudo cat /var/lib/mastodon-migration/unfinished/base-backup", "sudo -n true"]
    assert commands == [c for _, step in runbook.runbook_steps(1, example_settings) for c in step]
    backup = [c for c in commands if "pg_basebackup" in c]
    # the cluster's version and data directory are the host's (pg_lsclusters): placeholders in a plan
    assert backup == ["sudo -H -u postgres /usr/lib/postgresql/<version>/bin/pg_basebackup -h 127.0.0.1 "
                      "-p 5433 -U mig_replicator -D <data_directory> -Fp -Xs -R -C -S mig_new "
                      "--checkpoint=fast -P -w"]
    assert not any(c.startswith("ssh ") for c in commands)
    assert ([title for title, _ in runbook.runbook_steps(1, example_settings)][:3]
            == ["", "preflight", "replication role"])


STEPS = [("", ["sudo cat /etc/a"]),
         ("keys", ["sudo cat /k.pub",
                   "sudo sh -s\necho 'restrict <new's tunnel public key> tunnel' >> keys"]),
         ("backup", ["sudo mv /data /data.mig-20261125201417", "pg_isready"]),
         ("probe", ["curl https://x/health?mig-probe=0123abcd", "grep -c mig-probe=0123abcd log"])]


def log(*entries):
    return [{"step": e[1:]} if e.startswith("#")
            else {"step_end": e[1:]} if e.startswith("/")
            else {"command": e}
            for e in entries]


def test_a_run_that_did_what_the_runbook_shows_has_no_drift():
    executed = log("sudo cat /etc/a", "#keys", "sudo cat /k.pub",
                   # a value read on the host
                   "sudo sh -s\necho 'restrict ssh-ed25519 AAAAC3Nza tunnel' >> keys",
                   "#backup", "sudo mv /data /data.mig-20270101093000",  # the time it ran
                   "pg_isready", "pg_isready", "pg_isready",  # a wait repeats its check
                   "#probe", "curl https://x/health?mig-probe=ffff0000", "grep -c mig-probe=ffff0000 log",
                   "curl https://x/health?mig-probe=1234", "grep -c mig-probe=1234 log")  # a retried loop
    assert runbook.drift(STEPS, executed) == []


def test_a_placeholder_stands_for_a_host_value_quoted_or_not():
    """A path read on the host (pg_lsclusters' data directory) is quoted in a plan, not in a run; a
    namespace may be empty."""
    planned = [("", []), ("x", ["test ! -e '<data_directory>' || ls -A '<data_directory>'",
                      "P=<REDIS_NAMESPACE and a colon, or ''>\nr INFO"])]
    planned[1][1].append("sudo cat '/etc/postgresql/<version>/<cluster>/conf.d/x.conf'")
    ran = log("#x", "test ! -e /srv/pgdata || ls -A /srv/pgdata", "P=''\nr INFO", "P=social:\nr INFO",
              "sudo cat /etc/postgresql/17/social/conf.d/x.conf")
    assert runbook.drift(planned, ran) == []
    assert runbook.drift(planned, log("#x", "test ! -e /srv/pgdata || rm -rf /srv/pgdata")) != []


def test_a_run_that_skipped_steps_has_no_drift():
    assert runbook.drift(STEPS, log("sudo cat /etc/a", "#backup", "pg_isready")) == []


def test_commands_and_steps_the_runbook_does_not_show_are_drift():
    executed = log("#keys", "sudo cat /k.pub", "ssh-keygen -f /k", "#backup", "pg_isready", "#keys",
                   "sudo mv /data /elsewhere.mig-20270101093000")
    assert runbook.drift(STEPS, executed) == [
        "in step 'keys': ssh-keygen -f /k",
        "step 'keys' after step 'backup'",
        "in step 'backup': sudo mv /data /elsewhere.mig-20270101093000"]


def test_only_placeholders_times_and_probe_names_are_wildcards():
    assert (runbook.drift(STEPS, log("#keys", "sudo cat /k.pub.bak"))
            == ["in step 'keys': sudo cat /k.pub.bak"])
    assert runbook.drift(STEPS, log("#probe", "curl https://y/health?mig-probe=0123abcd")) != []


def test_a_planned_phase_has_no_drift_against_itself(example_settings):
    steps = runbook.runbook_steps(2, example_settings)
    executed = [record for title, commands in steps
                for record in ([{"step": title}] if title else []) + [{"command": c} for c in commands]]
    assert runbook.drift(steps, executed) == []
    # the same run with one command changed, and a step that came too late: each is drift
    index = next(i for i, r in enumerate(executed) if "pg_basebackup" in r.get("command", "") or
                 "tootctl feeds build" in r.get("command", ""))
    tampered = [*executed[:index], {"command": executed[index]["command"] + " --all-the-things"},
                *executed[index + 1:], {"step": steps[1][0]}]
    found = runbook.drift(steps, tampered)
    assert len(found) == 2 and found[0].endswith("--all-the-things")
    assert found[1].startswith(f"step {steps[1][0]!r} after step")


NESTED = [("", []), ("media sync", ["rsync"]), ("media key", ["ssh-keygen"]), ("restart", ["reload web"]),
          ("verify", ["curl"]), ("restart", ["restart sidekiq"])]


def test_after_a_sub_step_ends_its_commands_belong_to_the_outer_step_again():
    executed = log("#media sync", "#media key", "ssh-keygen", "/media key", "rsync", "/media sync",
                   "#restart", "reload web", "/restart", "#verify", "curl", "/verify",
                   # the second restart is the second step of that name
                   "#restart", "restart sidekiq", "/restart")
    assert runbook.drift(NESTED, executed) == []
    assert runbook.drift(NESTED, log("#media sync", "#media key", "/media key", "ssh-keygen")) == [
        "in step 'media sync': ssh-keygen"]
