"""RFC 2136 against a real BIND on loopback: lower the TTL, wait it out, compare-and-swap, verify, restore."""
import json
import subprocess

import pytest

from tasks.command import StepFailed
from tasks.dns import answers as dns_answers
from tasks.dns import steps as dns
from tasks.dns.records import Conflict
from tests.fakes.dns_env import age_lowering, env_file, live, load, rfc2136_keys, state_file

from .conftest import fab

OLD, NEW = "198.51.100.10", "203.0.113.20"


def answer(bind, name="example.social", rtype="A"):
    return dns_answers.read(bind.server, name, rtype)


@pytest.fixture
def cfg(tmp_path, bind):
    return load(tmp_path, **rfc2136_keys(bind), DNS_NAMES="example.social,www.example.social")


def test_lower_ttl_records_the_original_and_the_cutover_waits_for_it(cfg, bind):
    session, echo = live(cfg)
    dns.lower_ttls(session)
    assert answer(bind).ttl == 60 and answer(bind, "www.example.social").ttl == 60
    state = json.loads(state_file(cfg).read_text())["records"]
    assert state["example.social A"]["original_ttl"] == 3600 and state["example.social A"]["lowered_at"]

    dns.lower_ttls(live(cfg)[0])  # a re-run keeps the original TTL, not the lowered one
    assert json.loads(state_file(cfg).read_text())["records"] == state

    with pytest.raises(StepFailed, match=r"(?s)cutover refused, NOTHING was changed.*"
                                         r"original TTL \(3600 s\)"):
        dns.cutover(live(cfg)[0])
    assert answer(bind).content == OLD

    age_lowering(cfg, 3601)
    session, echo = live(cfg)
    dns.cutover(session)
    assert answer(bind).content == NEW and answer(bind).ttl == 60
    assert "example.social A: 198.51.100.10 (TTL 60) -> 203.0.113.20, TTL 60: changed" in echo.getvalue()
    assert dns.retire_after(session) is not None


def test_force_switches_before_the_ttl_ran_out_and_a_rerun_is_unchanged(cfg, bind):
    dns.lower_ttls(live(cfg)[0])
    session, echo = live(cfg)
    dns.cutover(session, force=True)
    assert ("--force: switching although example.social A: its original TTL (3600 s) runs until"
            in echo.getvalue())
    assert answer(bind).content == NEW and answer(bind, "www.example.social").content == NEW
    retire = dns.retire_after(session)

    session, echo = live(cfg)
    dns.cutover(session)
    assert "example.social A: unchanged (already 203.0.113.20)" in echo.getvalue()
    assert "changed" not in echo.getvalue().replace("unchanged", "")
    assert dns.retire_after(session) == retire  # the re-run did not move the switch time


def test_a_record_holding_neither_address_stops_everything(cfg, bind):
    bind.set("www.example.social", "A", "192.0.2.99")
    with pytest.raises(StepFailed) as refused:
        dns.cutover(live(cfg)[0], force=True)
    assert "NOTHING was changed" in str(refused.value)
    assert "www.example.social A: holds 192.0.2.99: neither old's 198.51.100.10 nor new's 203.0.113.20" \
        in str(refused.value)
    assert answer(bind).content == OLD  # the apex, read first and switchable, was left alone


def test_the_swap_is_conditional_on_the_old_value(cfg, bind):
    provider = dns.Rfc2136Provider(cfg)
    record = provider.read("example.social", "A")
    bind.set("example.social", "A", "192.0.2.7")  # someone else, between our read and our update
    with pytest.raises(Conflict, match="holds 192.0.2.7 .TTL 3600., not the expected 198.51.100.10"):
        provider.swap(dns.Swap("example.social", "A", record, NEW, 3600))
    assert answer(bind).content == "192.0.2.7"
    bind.set("example.social", "A", NEW)  # someone else did our change: the refused swap is "unchanged"
    assert provider.swap(dns.Swap("example.social", "A", record, NEW, 3600)) == "unchanged"


def test_a_bad_key_is_a_clear_error(tmp_path, bind):
    wrong = tmp_path / "wrong.key"
    wrong.write_text("c2VjcmV0IHRoYXQgaXMgbm90IHRoZSBrZXk=\n")
    wrong.chmod(0o600)
    cfg = load(tmp_path, **rfc2136_keys(bind, key_file=wrong))
    with pytest.raises(StepFailed, match=r"rejected the TSIG key migration.key \(PeerBadSignature\): "
                                         r"check that RFC2136_KEY_FILE \(.*wrong.key\) holds that key's "
                                         r"secret"):
        dns.cutover(live(cfg)[0], force=True)
    assert answer(bind).content == OLD


def test_the_bare_base64_key_works_like_the_bind_clause(tmp_path, bind):
    cfg = load(tmp_path, **rfc2136_keys(bind, key_file=bind.raw_key_file))
    dns.cutover(live(cfg)[0], force=True)
    assert answer(bind).content == NEW


def test_restore_ttl_puts_the_original_back(cfg, bind):
    dns.lower_ttls(live(cfg)[0])
    dns.cutover(live(cfg)[0], force=True)
    dns.restore_ttls(live(cfg)[0])
    assert answer(bind) == dns.Record(NEW, 3600)
    session, echo = live(cfg)
    dns.restore_ttls(session)
    assert "example.social A: TTL 3600: unchanged" in echo.getvalue()


def test_verify_asks_the_authoritative_server(cfg, bind):
    with pytest.raises(StepFailed, match="holds 198.51.100.10, not new's address yet"):
        dns.verify_records(live(cfg)[0])
    dns.cutover(live(cfg)[0], force=True)
    session, echo = live(cfg)
    dns.verify_records(session)
    assert f"every authoritative server (127.0.0.1:{bind.port}) answers example.social A 203.0.113.20" \
        in echo.getvalue()


def test_the_operator_flow_through_fab(tmp_path, bind):
    settings_file = env_file(tmp_path, **rfc2136_keys(bind))
    run = lambda *flags: fab("-H", "old,new", "dns", *flags, env_file=settings_file)  # noqa: E731
    assert run("--lower-ttl").returncode == 0
    refused = run()
    assert refused.returncode == 1 and "cutover refused, NOTHING was changed" in refused.stderr
    switched = run("--force")
    assert switched.returncode == 0, switched.stderr
    assert "run cleanup after 20" in switched.stdout
    assert "unchanged" in run().stdout
    assert run("--verify").returncode == 0
    assert run("--restore-ttl").returncode == 0
    assert answer(bind) == dns.Record(NEW, 3600)
    plan = run("--plan").stdout
    assert "example.social A: now 203.0.113.20 (TTL 3600) -> target 203.0.113.20: unchanged" in plan
    log = (tmp_path / "logs" / "migration.log").read_text()
    assert '"dns": "example.social A"' in log and bind.raw_key_file.read_text().strip() not in log


def test_the_dry_run_prints_nsupdate_scripts_that_do_the_same(tmp_path, bind):
    for key_file in (bind.key_file, bind.raw_key_file):
        bind.reset()
        result = fab("--dry", "-H", "old,new", "dns",
                     env_file=env_file(tmp_path, **rfc2136_keys(bind, key_file)))
        assert result.returncode == 0, result.stderr
        secret = bind.raw_key_file.read_text().strip()
        assert secret not in result.stdout and str(key_file) in result.stdout
        assert answer(bind).content == OLD  # --dry changed nothing
        subprocess.run(["bash"], input=result.stdout, text=True, check=True)  # comments, then the scripts
        assert answer(bind) == dns.Record(NEW, 60)


def test_answers_count_only_from_an_authoritative_server(bind):
    assert dns_answers.ask(bind.server, "example.org", "A").problem == \
        "not authoritative (no AA bit): not a server of this zone"
    bind.update(lambda u: u.replace("alias.example.social.", 300, "CNAME", "example.social."))
    # not the target's A
    assert dns_answers.ask(bind.server, "alias.example.social", "A") == dns_answers.Answer()
