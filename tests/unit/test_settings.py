import pytest

from tasks import settings
from tasks.settings import SettingsError

from .conftest import EXAMPLE


def write(tmp_path, text):
    path = tmp_path / "m.env"
    path.write_text(text)
    return path


def test_example_file_is_valid_and_documents_every_key():
    cfg = settings.load(EXAMPLE)
    assert cfg.roles == {"old": "old", "new": "new"}
    assert cfg.dns_names == ("example.social",)
    documented = EXAMPLE.read_text()
    for key in settings.SCHEMA:
        assert key in documented, f"{key} is not documented in env/example.env"


def test_two_missing_keys_and_a_bad_port_give_one_error_listing_all_three(tmp_path):
    text = EXAMPLE.read_text().replace("DOMAIN=example.social\n", "").replace("NEW_SSH=new\n", "")
    text = text.replace("TUNNEL_PORT=5433", "TUNNEL_PORT=99999")
    with pytest.raises(SettingsError) as error:
        settings.load(write(tmp_path, text))
    message = str(error.value)
    assert str(tmp_path / "m.env") in message
    assert "3 problem(s)" in message
    assert "DOMAIN: missing" in message
    assert "NEW_SSH: missing" in message
    assert "TUNNEL_PORT: '99999' is not valid; expected a TCP port number from 1 to 65535" in message


def test_unknown_key_suggests_the_right_one(tmp_path):
    with pytest.raises(SettingsError, match=r"TUNEL_PORT: unknown key \(did you mean TUNNEL_PORT\?\)"):
        settings.load(write(tmp_path, EXAMPLE.read_text() + "TUNEL_PORT=5434\n"))


def test_cross_key_problems(tmp_path):
    text = (EXAMPLE.read_text().replace("NEW_SSH=new", "NEW_SSH=old")
            .replace("TUNNEL_PORT=5433", "TUNNEL_PORT=5432"))
    with pytest.raises(SettingsError) as error:
        settings.load(write(tmp_path, text))
    assert "must name two different hosts" in str(error.value)
    assert "TUNNEL_PORT: must differ from PG_PORT" in str(error.value)


def test_secret_file_must_not_be_readable_by_others(tmp_path):
    token = tmp_path / "cf.token"
    token.write_text("secret-token-value")
    token.chmod(0o644)
    text = EXAMPLE.read_text().replace("DNS_PROVIDER=manual", "DNS_PROVIDER=cloudflare")
    text += f"CLOUDFLARE_API_TOKEN_FILE={token}\n"
    with pytest.raises(SettingsError) as error:
        settings.load(write(tmp_path, text))
    assert f"run chmod 600 {token}" in str(error.value)
    assert "secret-token-value" not in str(error.value)
    token.chmod(0o600)
    assert settings.load(write(tmp_path, text)).cloudflare_api_token_file == token


def test_rfc2136_needs_its_keys(tmp_path):
    text = EXAMPLE.read_text().replace("DNS_PROVIDER=manual", "DNS_PROVIDER=rfc2136")
    with pytest.raises(SettingsError) as error:
        settings.load(write(tmp_path, text))
    for key in ("RFC2136_SERVER", "RFC2136_KEY_NAME", "RFC2136_KEY_FILE"):
        assert f"{key}: required with DNS_PROVIDER=rfc2136" in str(error.value)


def test_missing_file_says_how_to_create_it(tmp_path):
    with pytest.raises(SettingsError, match="Copy env/example.env"):
        settings.load(tmp_path / "nope.env")


def test_malformed_values_say_what_was_expected(tmp_path):
    text = (EXAMPLE.read_text().replace("NEW_ADDRESS=203.0.113.20", "NEW_ADDRESS=new.example")
            .replace("REPLICATION_SLOT=mig_new", "REPLICATION_SLOT=Mig-New")
            .replace("MASTODON_DIR=/home/mastodon/live", "MASTODON_DIR=relative/path"))
    with pytest.raises(SettingsError) as error:
        settings.load(write(tmp_path, text))
    message = str(error.value)
    assert "NEW_ADDRESS: 'new.example' is not valid; expected an IPv4 or IPv6 address" in message
    assert "REPLICATION_SLOT: 'Mig-New' is not valid; expected lowercase letters" in message
    assert "MASTODON_DIR: 'relative/path' is not valid; expected an absolute, normalised path" in message


HOSTILE = ["a b", "x;reboot", "$(id)", "`id`", "x'y", 'x"y', "x\nreboot", "x|y", "x&y", "../x", "*"]
REACHES_A_SHELL = {"MASTODON_DIR": "/home/mastodon/{}",
                   "REPLICATION_ROLE": "r{}", "REPLICATION_SLOT": "s{}", "MASTODON_USER": "m{}",
                   "MASTODON_WEB_SERVICE": "web{}", "DOMAIN": "ex{}.social", "OLD_SSH": "old{}",
                   "PG_PORT": "5432{}", "NEW_ADDRESS": "203.0.113.20{}"}


def with_value(key, value):
    lines = [x for x in EXAMPLE.read_text().splitlines() if not x.startswith(f"{key}=")]
    return "\n".join(lines) + f"\n{key}={value}\n"


@pytest.mark.parametrize("key", sorted(REACHES_A_SHELL))
@pytest.mark.parametrize("hostile", HOSTILE)
def test_a_value_that_would_reach_a_shell_is_refused_with_what_to_change(tmp_path, key, hostile):
    """Every value that reaches a remote command line is matched by a pattern; shell syntax never passes."""
    value = REACHES_A_SHELL[key].format(hostile)
    if "\n" in value:  # a newline ends the line in the file: the rest is a line of its own
        value = value.replace("\n", "\\n")
    with pytest.raises(SettingsError, match=rf"{key}: .* is not valid; expected "):
        settings.load(write(tmp_path, with_value(key, value)))


def test_paths_are_normalised_and_retired_keys_say_what_replaced_them(tmp_path):
    assert settings.load(write(tmp_path, with_value("MASTODON_DIR", "/srv/mastodon/live/"))).mastodon_dir == \
        "/srv/mastodon/live"
    with pytest.raises(SettingsError, match="MASTODON_DIR: .*normalised"):
        settings.load(write(tmp_path, with_value("MASTODON_DIR", "/home/mastodon/../../etc")))
    with pytest.raises(SettingsError, match="PG_DATA_DIR: no longer used, remove it: .*pg_lsclusters"):
        settings.load(write(tmp_path, with_value("PG_DATA_DIR", "/var/lib/postgresql/15/main")))
