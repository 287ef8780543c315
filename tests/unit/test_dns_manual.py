"""The manual provider: exact instructions, then a wait until the authoritative servers (a real BIND
standing in for the registrar's) answer the change."""
import threading

import pytest

from tasks.command import StepFailed
from tasks.dns import answers as dns_answers
from tasks.dns import steps as dns
from tests.fakes.dns_env import live, load

NEW = "203.0.113.20"


@pytest.fixture
def cfg(tmp_path, bind, monkeypatch):
    monkeypatch.setattr(dns_answers, "POLL_INTERVAL", 0.05)
    return load(tmp_path, DNS_PROVIDER="manual", DNS_VERIFY_SERVERS=bind.server)


def later(change):
    """The operator, at the registrar, a moment after reading the instructions."""
    threading.Timer(0.3, change).start()


def test_the_cutover_says_what_to_change_and_waits_until_it_is_published(cfg, bind):
    session, echo = live(cfg)
    later(lambda: bind.set("example.social", "A", NEW, 60))
    dns.cutover(session, force=True, timeout=10)
    lines = echo.getvalue().splitlines()
    assert ("  ACTION NEEDED: at your DNS host, in zone example.social, change the A record example.social "
            "from 198.51.100.10 to 203.0.113.20 (TTL 3600 s); change nothing else. dns waits until the "
            "authoritative servers (DNS_VERIFY_SERVERS) answer it.") in lines
    assert (f"  waiting until every authoritative server answers example.social A 203.0.113.20: 1 answer(s) "
            f"behind: {bind.server} example.social A: 198.51.100.10 (TTL 3600)") in lines
    assert f"  every authoritative server ({bind.server}) answers example.social A 203.0.113.20" in lines
    assert dns.retire_after(session) is not None  # switched once the servers answered


def test_lower_ttl_waits_for_the_ttl_too(cfg, bind):
    session, echo = live(cfg)
    later(lambda: bind.set("example.social", "A", "198.51.100.10", 60))
    dns.lower_ttls(session, timeout=10)
    assert "set the TTL of the A record example.social (198.51.100.10) to 60 s" in echo.getvalue()
    with pytest.raises(StepFailed, match=r"original TTL \(3600 s\) runs until"):
        dns.cutover(live(cfg)[0])


def test_nobody_changes_it_and_the_wait_ends_with_a_clear_error(cfg, bind):
    with pytest.raises(StepFailed, match=r"gave up after 1 s waiting until every authoritative server "
                                         r"answers example.social A 203.0.113.20 \(last seen: 1 answer\(s\) "
                                         r"behind: 127.0.0.1:\d+ example.social A: 198.51.100.10 "
                                         r"\(TTL 3600\)\)"):
        dns.cutover(live(cfg)[0], force=True, timeout=1)


def test_without_the_servers_to_ask_it_says_which_setting_is_missing(tmp_path):
    with pytest.raises(StepFailed, match="DNS_PROVIDER=manual reads and waits at the authoritative servers "
                                         "of example.social: set DNS_VERIFY_SERVERS"):
        dns.show_plan(live(load(tmp_path))[0])
