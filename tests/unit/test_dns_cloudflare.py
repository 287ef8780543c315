"""Cloudflare through the real SDK against a fake API on loopback: the calls it makes, proxied kept,
retries as the API asks, errors that say what to change, and the token nowhere in what is shown."""
import logging
import time

import httpx
import pytest

from tasks.command import StepFailed
from tasks.dns import answers as dns_answers
from tasks.dns import steps as dns
from tasks.dns.records import Conflict
from tests.fakes.cloudflare_api import FakeCloudflare
from tests.fakes.dns_env import env_file, live, load, state_file

from .conftest import fab

TOKEN = "cf-test-token-3f9a1c7e5b2d4a6f8e0c"
OLD, NEW = "198.51.100.10", "203.0.113.20"


@pytest.fixture
def api():
    with FakeCloudflare(TOKEN) as fake:
        fake.add_record("example.social", "A", OLD, proxied=True)
        fake.add_record("www.example.social", "A", OLD, ttl=3600)
        yield fake


def cloudflare_keys(tmp_path, api, token=TOKEN):
    token_file = tmp_path / "cloudflare.token"
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)
    return {"DNS_PROVIDER": "cloudflare", "CLOUDFLARE_BASE_URL": api.base_url,
            "CLOUDFLARE_API_TOKEN_FILE": token_file, "DNS_NAMES": "example.social,www.example.social"}


@pytest.fixture
def cfg(tmp_path, api):
    return load(tmp_path, **cloudflare_keys(tmp_path, api))


def patches(api):
    return {api.records[r["path"].rsplit("/", 1)[1]]["name"]: r["body"] for r in api.calls("PATCH")}


def test_cutover_patches_and_carries_proxied_through(cfg, api, caplog):
    caplog.set_level(logging.DEBUG)
    session, echo = live(cfg)
    dns.cutover(session, force=True)
    assert patches(api) == {
        "example.social": {"name": "example.social", "type": "A", "content": NEW, "ttl": 1, "proxied": True},
        "www.example.social": {"name": "www.example.social", "type": "A", "content": NEW, "ttl": 3600,
                               "proxied": False}}
    assert not api.calls("PUT")
    assert api.record("example.social", "A")["proxied"] is True
    assert {r["headers"]["authorization"] for r in api.requests} == {f"Bearer {TOKEN}"}
    assert [(r["method"], r["query"]) for r in api.requests[:2]] == [
        ("GET", {"name": "example.social"}), ("GET", {"name.exact": "example.social", "type": "A"})]
    shown = echo.getvalue() + caplog.text + cfg.log_file.read_text() + state_file(cfg).read_text()
    assert "example.social A: 198.51.100.10 (TTL 1, proxied) -> 203.0.113.20, TTL 1: changed" in shown
    assert TOKEN not in shown

    dns.cutover(live(cfg)[0])
    assert len(api.calls("PATCH")) == 2  # the re-run: unchanged, nothing sent


def test_the_token_is_the_only_credential_sent(cfg, api, monkeypatch):
    monkeypatch.setenv("CLOUDFLARE_EMAIL", "admin@example.social")
    monkeypatch.setenv("CLOUDFLARE_API_KEY", "global-key-with-every-permission")
    dns.show_plan(live(cfg)[0])
    assert {r["headers"].get("authorization") for r in api.requests} == {f"Bearer {TOKEN}"}
    assert not any("x-auth-key" in r["headers"] or "x-auth-email" in r["headers"] for r in api.requests)


def test_a_record_holding_neither_address_stops_everything(cfg, api):
    api.record("www.example.social", "A")["content"] = "192.0.2.99"
    with pytest.raises(StepFailed, match="www.example.social A: holds 192.0.2.99: neither"):
        dns.cutover(live(cfg)[0], force=True)
    assert not api.calls("PATCH")


def test_the_swap_compares_before_it_patches(cfg, api):
    provider = dns.CloudflareProvider(cfg)
    record = provider.read("www.example.social", "A")
    api.record("www.example.social", "A")["content"] = "192.0.2.7"
    with pytest.raises(Conflict, match="holds 192.0.2.7 .TTL 3600, DNS only., "
                                       "not the expected 198.51.100.10"):
        provider.swap(dns.Swap("www.example.social", "A", record, NEW, 3600))
    assert not api.calls("PATCH")


def test_rate_limit_and_server_errors_are_retried_as_the_api_asks(cfg, api):
    api.fail_next(429, 971, "Please wait and consider throttling your request speed", {"retry-after": "1"})
    api.fail_next(503, 10000, "Service unavailable")
    started = time.monotonic()
    dns.cutover(live(cfg)[0], force=True)
    assert time.monotonic() - started >= 1.0  # retry-after was honoured
    assert [r["headers"]["x-stainless-retry-count"] for r in api.requests[:3]] == ["0", "1", "2"]
    assert len(api.calls("PATCH")) == 2


def test_a_rate_limit_that_lasts_is_a_clear_error(cfg, api):
    api.fail_next(429, 971, "Please wait", {"retry-after-ms": "10"}, times=10)
    with pytest.raises(StepFailed, match=r"rate limit still applied after 4 retries "
                                         r"\(HTTP 429: 971 Please wait\)"):
        dns.cutover(live(cfg)[0], force=True)


def test_a_bad_token_is_a_clear_error_and_never_shown(tmp_path, api):
    cfg = load(tmp_path, **cloudflare_keys(tmp_path, api, token="wrong-token-0123456789"))
    with pytest.raises(StepFailed) as refused:
        dns.show_plan(live(cfg)[0])
    assert str(refused.value) == (f"Cloudflare refused the API token (HTTP 403: 9109 Invalid access token): "
                                  f"CLOUDFLARE_API_TOKEN_FILE ({tmp_path}/cloudflare.token) must hold a "
                                  "token with Zone:Read and DNS:Edit on example.social")


def test_lower_ttl_leaves_proxied_records_alone(cfg, api):
    session, echo = live(cfg)
    dns.lower_ttls(session)
    assert ("example.social A: proxied: clients see Cloudflare's addresses, there is no TTL to lower"
            in echo.getvalue())
    assert patches(api) == {"www.example.social": {"name": "www.example.social", "type": "A", "content": OLD,
                                                   "ttl": 60, "proxied": False}}
    with pytest.raises(StepFailed, match=r"www.example.social A: its original TTL \(3600 s\) runs until"):
        dns.cutover(live(cfg)[0])


def test_verify_reads_proxied_records_back_and_asks_dns_only_ones_at_the_source(tmp_path, api, bind):
    api.on_change = lambda record: bind.set(record["name"], record["type"], record["content"], record["ttl"])
    cfg = load(tmp_path, **cloudflare_keys(tmp_path, api), DNS_VERIFY_SERVERS=bind.server)
    dns.cutover(live(cfg)[0], force=True)
    assert dns_answers.read(bind.server, "www.example.social", "A").content == NEW  # written through
    session, echo = live(cfg, (0, "OK\n200", ""))
    dns.verify_records(session)
    assert "example.social A: proxied; Cloudflare's API shows 203.0.113.20" in echo.getvalue()
    [(line, _)] = session.old._connection.calls  # the origin check, from old
    assert line.startswith("curl -sS -m 20 --resolve example.social:443:203.0.113.20 ")
    assert (f"every authoritative server ({bind.server}) answers www.example.social A 203.0.113.20"
            in echo.getvalue())

    with pytest.raises(StepFailed, match="new's origin .* answered 502 .asked from old.: "
                                         "Cloudflare's edge cannot"):
        dns.verify_records(live(cfg, (0, "bad gateway\n502", ""))[0])


def test_the_fake_models_the_put_that_unproxies(api):
    record = api.record("example.social", "A")
    answer = httpx.put(f"{api.base_url}/zones/{api.zone['id']}/dns_records/{record['id']}",
                       headers={"Authorization": f"Bearer {TOKEN}"},
                       json={"type": "A", "name": "example.social", "content": NEW, "ttl": 1}).json()
    assert answer["success"] and answer["result"]["proxied"] is False  # why the dns code never PUTs


def test_dry_run_contacts_no_api_and_describes_the_patch(tmp_path, api):
    result = fab("--dry", "-H", "old,new", "dns",
                 env_file=env_file(tmp_path, **cloudflare_keys(tmp_path, api)))
    assert result.returncode == 0, result.stderr
    assert not api.requests
    assert (f"# GET {api.base_url}/zones?name=example.social, "
            "GET .../dns_records?type=A&name.exact=example.social; "
            f"only if it holds 198.51.100.10: PATCH {api.base_url}/zones/<zone id>/dns_records/<record id> "
            '{"name": "example.social", "type": "A", "content": "203.0.113.20", "ttl": 60 (1 if proxied), '
            '"proxied": <as read>}') in result.stdout
    assert TOKEN not in result.stdout + result.stderr


def test_token_from_the_environment(tmp_path, api):
    keys = cloudflare_keys(tmp_path, api)
    del keys["CLOUDFLARE_API_TOKEN_FILE"]
    result = fab("-H", "old,new", "dns", "--plan", env_file=env_file(tmp_path, **keys),
                 CLOUDFLARE_API_TOKEN=TOKEN)
    assert result.returncode == 0, result.stderr
    assert ("example.social A: now 198.51.100.10 (TTL 1, proxied) -> target 203.0.113.20: "
            "switch (allowed now)" in result.stdout)
    assert TOKEN not in result.stdout + result.stderr + (tmp_path / "logs" / "migration.log").read_text()
