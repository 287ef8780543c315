"""status: the parsers of what the hosts answer, the judgement of each phase, the DNS answers (a real
BIND), and a whole read through the command layer with scripted hosts."""
import io
import json

import pytest

from tasks import status
from tasks.command import Live, Plan, Remote, RunLog, Session
from tasks.dns.answers import Answer
from tasks.dns.records import Record, Target
from tasks.facts import Output, Slot, Standby, parse_sections
from tasks.postgres import ReplicationReport
from tests.fakes.dns_env import load, rfc2136_keys

from .conftest import fab
from .test_command import ScriptedConnection

MARK = "# Written by mastodon-migration (render-nginx-proxy)"
PROMOTION = ('{\n  "promoted_at": "2026-11-25T20:07:39+0000",\n  "timeline": "2",\n  "lsn": "0/30868E0",\n'
             '  "old_shutdown_checkpoint": "0/30866A0"\n}')

# What the batches printed on the pair (captured with `docker exec` on a fresh pair): new fresh, old serving
# itself. The other states are written in the same form: each part under `@@ NAME`, its exit status `@@= N`.
NEW_FRESH = ("@@ tunnel\ninactive\n@@= 3\n@@ tunnel_file\n@@= 1\n"
             "@@ units\ninactive\ninactive\ninactive\n@@= 3\n@@ env\n@@= 2\n@@ promoted\n@@= 1\n")
NEW_REPLICA = NEW_FRESH.replace("@@ tunnel\ninactive\n@@= 3", "@@ tunnel\nactive\n@@= 0").replace(
    "@@ tunnel_file\n@@= 1", "@@ tunnel_file\n@@= 0")
OLD_SERVING = ("@@ site\n# Shaped like Mastodon's dist/nginx.conf (4.2+), for the simulated `old` host.\n"
               "@@= 0\n@@ units\nactive\nactive\nactive\n@@= 0\n@@ durable\nschedule\nretry\ndead\n@@= 0\n"
               "@@ moved\n0\n@@= 0\n")
NEW_PROMOTED = (f"@@ tunnel\nactive\n@@= 0\n@@ tunnel_file\n@@= 0\n@@ units\nactive\nactive\nactive\n@@= 0\n"
                f"@@ env\n1\n@@= 0\n@@ promoted\n{PROMOTION}\n@@= 0\n")
OLD_DRAINED = (f"@@ site\n{MARK}\n@@= 0\n@@ units\ninactive\ninactive\ninactive\n@@= 3\n@@ durable\n@@= 1\n"
               "@@ moved\n2\n@@= 0\n")
SITE = "/etc/nginx/sites-available/social.test"

# replication_report's three queries on the pair: old's senders and slot, new's view; after phase 1, and fresh
SENDERS = "15/main|127.0.0.1|streaming|0/3000000|0/3000000|0/3000000|0/3000000|0\n"
SLOT = "mig_new|t|reserved|0\n"
STANDBY = "t|streaming|0/3000000|0/3000000|||7712197592948643839\n"
NO_STANDBY = "f||||||7712197592948643839\n"


@pytest.fixture
def cfg(tmp_path):
    return load(tmp_path)


def test_sections_of_a_batch_split_by_their_markers():
    assert parse_sections(Output(0, "@@ a\none\ntwo\n@@= 1\n@@ b\n@@ c\nthree\n")) == {
        "a": (1, "one\ntwo\n"), "b": (0, ""), "c": (0, "three\n")}
    assert parse_sections(Output(1, "noise before\n@@ a\nx\n")) == {"a": (0, "x\n")}


def parse_new(cfg, text):
    return status.as_new_facts(status.new_facts(planning(cfg)).parse(Output(0, text)))


def parse_old(cfg, site, text):
    return status.as_old_facts(cfg, site, status.old_facts(planning(cfg), site, None).parse(Output(0, text)))


def test_the_scripts_silence_errors_and_mark_each_part(cfg):
    session = planning(cfg)
    script = status.new_facts(session).command().script
    assert script.startswith("exec 2>/dev/null\necho '@@ tunnel'\n"
                             "systemctl is-active mastodon-migration-tunnel\n"
                             'echo "@@= $?"')
    assert ("grep -cxF '# Copied from old by mastodon-migration copy-config: the database is reached "
            "through the tunnel.' /home/mastodon/live/.env.production" in script)
    old = status.old_facts(session, SITE, None).command().script
    assert "echo '@@ site'\nhead -n 1 /etc/nginx/sites-available/social.test" in old
    assert 'r --scan --pattern "${P}mastodon-migration:moved:*" | wc -l' in old


def test_new_fresh_replica_and_promoted(cfg):
    fresh = parse_new(cfg, NEW_FRESH)
    assert ((fresh.tunnel, fresh.tunnel_installed, fresh.env_copied, fresh.promoted)
            == ("inactive", False, False, None))
    assert fresh.units == {"mastodon-web": "inactive", "mastodon-sidekiq": "inactive",
                           "mastodon-streaming": "inactive"}
    replica = parse_new(cfg, NEW_REPLICA)
    assert (replica.tunnel, replica.tunnel_installed) == ("active", True)
    promoted = parse_new(cfg, NEW_PROMOTED)
    assert promoted.env_copied and promoted.promoted["timeline"] == "2"
    damaged = parse_new(cfg, NEW_FRESH.replace("@@ promoted\n@@= 1", "@@ promoted\n{half\n@@= 0"))
    assert damaged.promoted is None


def test_old_serving_and_drained(cfg):
    serving = parse_old(cfg, SITE, OLD_SERVING)
    assert (serving.proxies, serving.durable_left, serving.moved) == (False, ["schedule", "retry", "dead"], 0)
    drained = parse_old(cfg, SITE, OLD_DRAINED)
    assert (drained.proxies, drained.durable_left, drained.moved) == (True, [], 2)
    assert set(drained.units.values()) == {"inactive"}
    unread = parse_old(cfg, "", "@@ units\nactive\n@@ durable\n@@ moved\n")
    assert unread.proxies is None and unread.units["mastodon-streaming"] == "unknown"


def test_lag_in_seconds_is_zero_when_all_is_replayed():
    assert report(lag=0, age=300.0).lag_seconds == 0.0
    assert report(lag=4096, age=2.5).lag_seconds == 2.5
    assert ReplicationReport(False, 4096, 1, [], None, None).lag_seconds is None


def facts(cfg, new=NEW_FRESH, old=OLD_SERVING, **kw):
    return status.Evidence(parse_new(cfg, new), parse_old(cfg, SITE, old), **kw)


def report(healthy=True, lag=0, in_recovery=True, slot=True, age=12.5):
    standby = Standby(in_recovery, "streaming", "0/3000000", "0/3000000", "", age, "7712197592948643839")
    return ReplicationReport(healthy, lag, 16777216, [],
                             Slot("mig_new", True, "reserved", 0) if slot else None, standby)


def states(cfg, evidence):
    phases = status.judge(cfg, evidence)
    return [p.state for p in phases], status.next_command(cfg, phases)


def answers(*holds):
    return [status.DnsAnswer("192.0.2.53:53", "example.social", "A", "x", h) for h in holds]


def test_a_fresh_pair_has_started_nothing(cfg):
    nothing = report(healthy=False, lag=None, in_recovery=False, slot=False)
    assert states(cfg, facts(cfg, replication=nothing, dns=answers("old"))) == (
        ["not started"] * 5, "fab -H old,new phase1-replicate")


def test_after_phase1_the_next_is_phase2(cfg):
    evidence = facts(cfg, NEW_REPLICA, replication=report(), dns=answers("old"))
    assert states(cfg, evidence) == (["done", "not started", "not started", "not started", "not started"],
                                     "fab -H old,new phase2-proxy")
    phase1 = status.judge(cfg, evidence)[0]
    assert phase1.evidence == ["tunnel mastodon-migration-tunnel on new: active",
                               "new streams from old, lag 0 B, 0.0 s"]


def test_a_tunnel_that_stopped_leaves_phase1_in_progress(cfg):
    down = NEW_REPLICA.replace("@@ tunnel\nactive", "@@ tunnel\nfailed")
    evidence = facts(cfg, down, replication=report(healthy=False, lag=None))
    assert states(cfg, evidence)[0][0] == "in progress"
    assert status.next_command(cfg, status.judge(cfg, evidence)) == "fab -H old,new phase1-replicate"


def test_copied_configuration_means_phase2_is_under_way(cfg):
    preparing = NEW_REPLICA.replace("@@ env\n@@= 2", "@@ env\n1\n@@= 0")
    assert states(cfg, facts(cfg, preparing, replication=report()))[0][:2] == ["done", "in progress"]


def test_after_phase3_the_replica_has_gone_and_phases_1_to_3_are_done(cfg):
    evidence = facts(cfg, NEW_PROMOTED, OLD_DRAINED, dns=answers("old", "old"))
    assert states(cfg, evidence) == (["done", "done", "done", "not started", "not started"],
                                     "fab -H old,new phase4-dns")
    phase3 = status.judge(cfg, evidence)[2]
    assert phase3.evidence[1:] == [
        "old's Sidekiq: no schedule/retry/dead left on old, 2 key(s) set aside as mastodon-migration:moved:*",
        "new promoted at 2026-11-25T20:07:39+0000, timeline 2, WAL 0/30868E0"]


def test_old_proxying_with_its_streaming_server_stopped_is_phase2_done_and_phase3_not_started(cfg):
    proxying = (f"@@ site\n{MARK}\n@@= 0\n@@ units\nactive\nactive\ninactive\n@@= 3\n"
                "@@ durable\nschedule\n@@= 0\n@@ moved\n0\n@@= 0\n")
    copied = NEW_REPLICA.replace("@@ env\n@@= 2", "@@ env\n1\n@@= 0")
    assert states(cfg, facts(cfg, copied, proxying, replication=report()))[0][1:3] == ["done", "not started"]


def test_a_drain_without_promotion_is_phase3_in_progress(cfg):
    assert states(cfg, facts(cfg, NEW_REPLICA, OLD_DRAINED, replication=report()))[0][2] == "in progress"


def test_dns_answers_decide_phase4_and_then_cleanup_is_next(cfg):
    promoted = facts(cfg, NEW_PROMOTED, OLD_DRAINED, dns=answers("new", "old"))
    assert states(cfg, promoted)[0][3] == "in progress"
    promoted.dns = answers("new", "new")
    assert states(cfg, promoted) == (["done"] * 4 + ["not started"], "fab -H old,new cleanup --apply")
    cleaned = facts(cfg, NEW_PROMOTED.replace("@@ tunnel_file\n@@= 0", "@@ tunnel_file\n@@= 1"), OLD_DRAINED,
                    dns=answers("new"))
    assert states(cfg, cleaned) == (["done"] * 5, None)


def test_dns_that_cannot_be_asked_is_unknown_not_a_guess(cfg):
    evidence = facts(cfg, NEW_PROMOTED, OLD_DRAINED, dns_problem="set DNS_VERIFY_SERVERS")
    phase4 = status.judge(cfg, evidence)[3]
    assert (phase4.state, phase4.evidence) == ("unknown", ["DNS not asked: set DNS_VERIFY_SERVERS"])
    assert status.next_command(cfg, status.judge(cfg, evidence)) == "fab -H old,new phase4-dns"
    assert (states(cfg, facts(cfg, NEW_PROMOTED, OLD_DRAINED, dns=answers("old", "no answer")))[0][3]
            == "unknown")


def test_an_unreachable_host_makes_every_phase_unknown_and_points_at_preflight(cfg):
    evidence = status.Evidence(status.NewFacts(unreachable="new: ssh failed: timed out"), status.OldFacts())
    phases = status.judge(cfg, evidence)
    assert {p.state for p in phases} == {"unknown"} and phases[0].evidence == ["new: ssh failed: timed out"]
    assert status.next_command(cfg, phases) == "fab -H old,new preflight"


def test_each_answer_says_whose_address_it_is():
    target = Target("example.social", "AAAA", "2001:db8::10", "2001:db8::20")
    judged = [status.judge_answer("s", target, answer).holds for answer in (
        Answer(Record("2001:db8:0::20", 60)), Answer(Record("2001:db8::10", 60)),
        Answer(Record("2001:db8::99", 60)), Answer(), Answer(problem="no answer (timeout)"))]
    assert judged == ["new", "old", "other", "no record", "no answer"]


def test_the_table_lists_evidence_under_each_phase_and_the_next_command(cfg):
    phases = status.judge(cfg, facts(cfg, NEW_REPLICA, replication=report(), dns=answers("old")))
    lines = status.table(phases, "fab -H old,new phase2-proxy").splitlines()
    assert lines[0].split() == ["PHASE", "STATE", "EVIDENCE"]
    assert lines[1].startswith("1 replicate  done         tunnel mastodon-migration-tunnel on new: active")
    assert lines[2].strip() == "new streams from old, lag 0 B, 0.0 s"
    assert lines[-1] == "next: fab -H old,new phase2-proxy"


# --- DNS: a real BIND on loopback -------------------------------------------------------------------

def test_every_authoritative_server_is_asked(tmp_path, bind):
    cfg = load(tmp_path, **rfc2136_keys(bind), DNS_NAMES="example.social,www.example.social")
    found, problem = status.read_dns(live(cfg)[0])
    assert problem == "" and [(a.source, a.name, a.holds) for a in found] == [
        (bind.server, "example.social", "old"), (bind.server, "www.example.social", "old")]
    bind.set("example.social", "A", "203.0.113.20")
    assert [a.holds for a in status.read_dns(live(cfg)[0])[0]] == ["new", "old"]


def test_manual_dns_without_servers_says_what_to_set(cfg):
    found, problem = status.read_dns(live(cfg)[0])
    assert found == [] and "set DNS_VERIFY_SERVERS" in problem


# --- a whole read through the command layer -----------------------------------------------------------

def live(cfg, old_answers=(), new_answers=()):
    mode = Live(RunLog(cfg.log_file), echo=io.StringIO())
    old, new = ScriptedConnection(*old_answers), ScriptedConnection(*new_answers)
    hosts = {"old": Remote("old", "old", mode, old), "new": Remote("new", "new", mode, new)}
    return Session(mode, cfg, hosts), old, new


def planning(cfg, emit=lambda event: None):
    mode = Plan(emit)
    return Session(mode, cfg, {role: Remote(role, role, mode) for role in ("old", "new")})


def test_a_replica_is_read_in_few_round_trips(cfg):
    session, old, new = live(cfg, old_answers=[(0, "REDIS_HOST=127.0.0.1\nREDIS_PASSWORD=hush\n", ""),
                                               (0, SITE + "\n", ""), (0, OLD_SERVING, ""), (0, SENDERS, ""),
                                               (0, SLOT, "")],
                             new_answers=[(0, NEW_REPLICA, ""), (0, STANDBY, "")])
    evidence = status.gather(session)
    assert (len(old.calls), len(new.calls)) == (5, 2)
    assert "export REDISCLI_AUTH=hush" in old.calls[2][1] and "-h 127.0.0.1" in old.calls[2][1]
    assert states(cfg, evidence)[0][:3] == ["done", "not started", "not started"]
    assert evidence.replication.lag_bytes == 0 and evidence.new.tunnel == "active"
    logged = cfg.log_file.read_text()
    assert "hush" not in logged and "REDISCLI_AUTH=<secret: the Redis password in .env.production>" in logged


def test_a_fresh_pair_read_as_captured(cfg):
    session, _, _ = live(cfg, old_answers=[(0, "REDIS_HOST=127.0.0.1\n", ""), (0, SITE + "\n", ""),
                                           (0, OLD_SERVING, ""), (0, "", ""), (0, "", "")],
                         new_answers=[(1, NEW_FRESH, ""), (0, NO_STANDBY, "")])
    evidence = status.gather(session)
    assert states(cfg, evidence) == (["not started", "not started", "not started", "unknown", "not started"],
                                     "fab -H old,new phase1-replicate")
    assert status.replication_evidence(evidence.replication, "") == (
        "no replica streams from old (new: a primary, WAL receiver not running)")


def test_once_promoted_the_replication_is_not_read(cfg):
    session, old, new = live(cfg, old_answers=[(0, "", ""), (0, SITE + "\n", ""), (0, OLD_DRAINED, "")],
                             new_answers=[(0, NEW_PROMOTED, "")])
    evidence = status.gather(session)
    assert (len(old.calls), len(new.calls)) == (3, 1) and evidence.replication is None


def test_old_cluster_down_is_evidence_not_a_crash(cfg):
    session, _, _ = live(cfg, old_answers=[(0, "", ""), (0, SITE + "\n", ""), (0, OLD_SERVING, ""),
                                           (2, "", "psql: error: connection to server failed")],
                         new_answers=[(0, NEW_REPLICA, "")])
    evidence = status.gather(session)
    assert evidence.replication is None and "connection to server failed" in evidence.replication_problem


def test_status_only_reads(cfg):
    events = []
    status.gather(planning(cfg, events.append))
    assert {event.kind for event in events} == {"check", "note"}
    # new, env, site, old, replication (3)
    assert len([event for event in events if event.kind == "check"]) == 7


def test_dry_prints_the_checks_and_contacts_nothing():
    result = fab("--dry", "-H", "old,new", "status")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("# check: ssh new -- 'sudo sh -s' <<'EOF'\n# exec 2>/dev/null\n")
    assert "# DNS is not checked: DNS_PROVIDER=manual" in result.stdout
    assert "PHASE" not in result.stdout


def test_json_names_every_phase(cfg):
    phases = status.judge(cfg, facts(cfg, NEW_REPLICA, replication=report(), dns=answers("old")))
    text = status.as_json(phases, "fab -H old,new phase2-proxy", facts(cfg))
    parsed = json.loads(text)
    assert [p["name"] for p in parsed["phases"]] == ["replicate", "proxy", "failover", "dns", "cleanup"]
    assert parsed["next"] == "fab -H old,new phase2-proxy"


def test_a_run_that_stopped_after_the_fence_says_to_run_phase3_again(cfg):
    fenced = NEW_REPLICA + '@@ failover\n{"stage": "fenced", "old_checkpoint": "0/5000028"}\n@@= 0\n'
    evidence = facts(cfg, fenced, OLD_DRAINED, replication=report(healthy=False, lag=None),
                     dns=answers("old", "old"))
    assert states(cfg, evidence) == (["done", "done", "in progress", "not started", "not started"],
                                     "fab -H old,new phase3-failover")
    assert status.judge(cfg, evidence)[2].evidence[-1] == (
        "a phase 3 run stopped at stage `fenced`: old is fenced and takes no writes, run phase3-failover "
        "again now")
    unfinished = NEW_PROMOTED + '@@ failover\n{"stage": "promoted"}\n@@= 0\n'
    assert states(cfg, facts(cfg, unfinished, OLD_DRAINED, dns=answers("old", "old")))[0][2] == "in progress"


def test_with_pgbouncer_status_names_its_server_and_a_pause_keeps_phase3_open(tmp_path):
    from .test_subsystem_facts import SHOW_DATABASES

    pooled = load(tmp_path, DATABASE_ENDPOINT="pgbouncer")
    assert "SHOW DATABASES" in status.new_facts(planning(pooled)).command().script  # one batch, as root
    after = NEW_PROMOTED + f"@@ pgbouncer\n{SHOW_DATABASES}@@= 0\n"
    evidence = facts(pooled, after, OLD_DRAINED, dns=answers("old", "old"))
    assert states(pooled, evidence)[0][:3] == ["done", "done", "done"]
    phase2 = status.judge(pooled, evidence)[1]
    assert "new's PgBouncer: its database on /var/run/postgresql:5432" in phase2.evidence
    paused = after.replace("|35|0|0\n", "|35|1|0\n")
    evidence = facts(pooled, paused, OLD_DRAINED, dns=answers("old", "old"))
    phases = status.judge(pooled, evidence)
    assert phases[2].state == "in progress" and "PgBouncer on new is paused" in phases[2].evidence[-1]
    assert status.next_command(pooled, phases) == "fab -H old,new phase3-failover"
