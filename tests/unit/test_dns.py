"""The dns task's own logic: which records, when old may retire, flags, key files, state, and that
`fab --dry` contacts no DNS server."""
import json
import socket
from datetime import datetime, timedelta, timezone

import pytest

from tasks.command import StepFailed
from tasks.dns import steps as dns
from tasks.dns.answers import address_and_port
from tasks.dns.records import Target, targets
from tasks.dns.rfc2136 import read_key
from tests.fakes.bind import free_port
from tests.fakes.dns_env import env_file, live, load, state_file

from .conftest import fab

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=timezone.utc)


def test_targets_are_every_name_with_a_and_aaaa_when_configured(tmp_path):
    assert targets(load(tmp_path)) == [Target("example.social", "A", "198.51.100.10", "203.0.113.20")]
    cfg = load(tmp_path, DNS_NAMES="example.social,media.example.social", OLD_ADDRESS6="2001:db8::10",
               NEW_ADDRESS6="2001:db8:0::20")
    assert [(t.key, t.new) for t in targets(cfg)] == [
        ("example.social A", "203.0.113.20"), ("example.social AAAA", "2001:db8::20"),
        ("media.example.social A", "203.0.113.20"), ("media.example.social AAAA", "2001:db8::20")]


def write_state(cfg, **records):
    state_file(cfg).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    encode = {k: v.isoformat() if isinstance(v, datetime) else v for k, v in records.items()}
    state_file(cfg).write_text(json.dumps({"records": {"example.social A": encode}}))


@pytest.mark.parametrize("lowered_at, switched_at, retire", [
    (T0, T0 + timedelta(seconds=4000), T0 + timedelta(seconds=4060)),  # waited out: switch + lowered TTL
    (T0, T0 + timedelta(seconds=10), T0 + timedelta(seconds=3600)),  # forced: the original TTL still runs
    (None, T0, T0 + timedelta(seconds=60)),
])
def test_old_may_retire_when_no_resolver_can_hold_its_address_plus_a_margin(tmp_path, lowered_at, switched_at,
                                                                             retire):
    cfg = load(tmp_path)
    write_state(cfg, original_ttl=3600, lowered_at=lowered_at, switched_at=switched_at, ttl_at_switch=60)
    assert dns.retire_after(live(cfg)[0]) == retire + dns.RETIRE_MARGIN


def test_no_retire_time_before_every_record_switched(tmp_path):
    cfg = load(tmp_path)
    assert dns.retire_after(live(cfg)[0]) is None
    write_state(cfg, original_ttl=3600, lowered_at=T0.isoformat())
    assert dns.retire_after(live(cfg)[0]) is None


def test_a_damaged_state_file_is_named_with_what_to_do(tmp_path):
    cfg = load(tmp_path)
    state_file(cfg).parent.mkdir(mode=0o700, parents=True)
    state_file(cfg).write_text("{not json")
    with pytest.raises(StepFailed, match=r"migration.dns.json is damaged .*: repair it, or delete it"):
        dns.retire_after(live(cfg)[0])


def test_flags_are_one_at_a_time():
    result = fab("--dry", "-H", "old,new", "dns", "--verify", "--force")
    assert result.returncode == 1
    assert ("choose one of --plan, --lower-ttl, --verify, --restore-ttl, or none for the cutover"
            in result.stderr)


def key_file(tmp_path, text):
    path = tmp_path / "tsig.key"
    path.write_text(text)
    path.chmod(0o600)
    return path


@pytest.mark.parametrize("text, error", [
    ('key "other" { algorithm hmac-sha256; secret "c2VjcmV0"; };',
     "declares key 'other' but RFC2136_KEY_NAME is"),
    ('key "k.example" { algorithm hmac-sha512; secret "c2VjcmV0"; };',
     "declares algorithm hmac-sha512 but RFC2136_KEY_ALGORITHM is hmac-sha256"),
    ("not base64 at all!", "holds neither a base64 TSIG secret nor a BIND key clause"),
])
def test_key_file_problems_say_what_to_change(tmp_path, text, error):
    with pytest.raises(StepFailed, match=error):
        read_key(key_file(tmp_path, text), "k.example", "hmac-sha256")


def test_both_key_file_forms_give_the_secret(tmp_path):
    clause = 'key "k.example." {\n\talgorithm hmac-sha256;\n\tsecret "c2VjcmV0";\n};\n'
    assert read_key(key_file(tmp_path, clause), "k.example", "hmac-sha256")[0].reveal() == "c2VjcmV0"
    secret, bind_form = read_key(key_file(tmp_path, "c2VjcmV0\n"), "k.example", "hmac-sha256")
    assert (secret.reveal(), bind_form) == ("c2VjcmV0", False)
    assert "c2VjcmV0" not in str(secret)


def test_server_addresses():
    assert address_and_port("192.0.2.53") == ("192.0.2.53", 53)
    assert address_and_port("192.0.2.53:5353") == ("192.0.2.53", 5353)
    assert address_and_port("[2001:db8::53]:5353") == ("2001:db8::53", 5353)
    assert address_and_port("2001:db8::53") == ("2001:db8::53", 53)


@pytest.fixture
def tripwire():
    """A DNS port on loopback that nobody should touch: UDP and TCP, checked after the test."""
    port = free_port()
    with socket.socket(type=socket.SOCK_DGRAM) as udp, socket.socket() as tcp:
        udp.bind(("127.0.0.1", port))
        tcp.bind(("127.0.0.1", port))
        tcp.listen()
        udp.setblocking(False)
        tcp.setblocking(False)
        yield port
        for probe in (lambda: udp.recvfrom(512), tcp.accept):
            with pytest.raises(BlockingIOError):
                probe()


@pytest.mark.parametrize("provider", ["rfc2136", "manual"])
@pytest.mark.parametrize("flag", [[], ["--plan"], ["--lower-ttl"], ["--verify"], ["--restore-ttl"]])
def test_dry_runs_contact_no_dns_server(tmp_path, tripwire, provider, flag):
    keys = {"DNS_PROVIDER": provider, "DNS_VERIFY_SERVERS": f"127.0.0.1:{tripwire}",
            "RFC2136_SERVER": "127.0.0.1", "RFC2136_PORT": tripwire, "RFC2136_KEY_NAME": "k.example",
            "RFC2136_KEY_FILE": key_file(tmp_path, "c2VjcmV0")}
    settings_file = env_file(tmp_path, **keys)
    write_state(load(tmp_path, **keys), original_ttl=3600, lowered_at=None, switched_at=T0, ttl_at_switch=60)
    result = fab("--dry", "-H", "old,new", "dns", *flag, env_file=settings_file)
    assert result.returncode == 0, result.stderr
    assert "c2VjcmV0" not in result.stdout
