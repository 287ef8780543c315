import pytest
from standin import config, remote_ip

DEFAULT = config.parse_trusted_proxies("")


def calc(peer, xff=None, proxies=DEFAULT, client_ip=None):
    return remote_ip.calculate_ip(peer, xff, client_ip, proxies)


def test_trusted_loopback_peer_uses_forwarded_for():
    assert calc("127.0.0.1", "203.0.113.9") == "203.0.113.9"


def test_walks_right_to_left_past_trusted_proxies():
    assert calc("127.0.0.1", "198.51.100.1, 203.0.113.9, 10.1.2.3") == "203.0.113.9"


def test_spoofed_left_entries_are_ignored():
    # nginx appends the real client; a client-supplied leftmost entry never wins over it
    assert calc("127.0.0.1", "1.1.1.1, 203.0.113.9") == "203.0.113.9"


def test_untrusted_peer_is_the_client_whatever_the_header_says():
    proxies = config.parse_trusted_proxies("127.0.0.1")
    assert calc("172.30.99.2", "203.0.113.9", proxies) == "172.30.99.2"
    # every user shares the proxy address
    assert calc("172.30.99.2", "203.0.113.10", proxies) == "172.30.99.2"


def test_private_peer_trusted_by_default_not_when_list_is_set():
    assert calc("172.30.99.2", "203.0.113.9") == "203.0.113.9"
    assert calc("172.30.99.2", "203.0.113.9", config.parse_trusted_proxies("172.30.99.2")) == "203.0.113.9"
    assert calc("172.30.99.2", "203.0.113.9", config.parse_trusted_proxies("10.0.0.0/8")) == "172.30.99.2"


def test_setting_the_list_untrusts_loopback():
    proxies = config.parse_trusted_proxies("10.0.0.5")
    assert calc("127.0.0.1", "203.0.113.9", proxies) == "127.0.0.1"


def test_all_trusted_returns_furthest():
    assert calc("127.0.0.1", "10.0.0.1, 192.168.1.1") == "10.0.0.1"


def test_no_header_and_garbage():
    assert calc("127.0.0.1") == "127.0.0.1"
    assert calc("127.0.0.1", "unknown, not-an-ip") == "127.0.0.1"
    assert calc("::1", "2001:db8::5") == "2001:db8::5"


def test_ip_spoofing_check():
    with pytest.raises(remote_ip.IpSpoofAttackError):
        calc("127.0.0.1", "203.0.113.9", client_ip="198.51.100.7")
    assert calc("127.0.0.1", "203.0.113.9", client_ip="203.0.113.9") == "203.0.113.9"


def test_throttleable_groups_ipv6_by_64():
    assert remote_ip.throttleable("2001:db8:1:2:3:4:5:6") == "2001:db8:1:2::"
    assert remote_ip.throttleable("203.0.113.9") == "203.0.113.9"
