import jinja2
import pytest

from tasks.templates import render


def test_tunnel_unit_renders_with_every_value():
    text = render("tunnel.service.j2", old_address="10.0.0.1", key_path="/var/lib/postgresql/.ssh/mig",
                  known_hosts_path="/var/lib/postgresql/.ssh/known_hosts", local_port=5433, remote_port=5432,
                  ssh_user="postgres", ssh_port=22, unit="mig", what="old's PostgreSQL", removed_by="cleanup")
    assert "-L 127.0.0.1:5433:127.0.0.1:5432 postgres@10.0.0.1" in text
    assert "ExitOnForwardFailure=yes" in text and "Restart=always" in text
    assert "{{" not in text


def test_a_missing_value_is_an_error_not_a_blank():
    with pytest.raises(jinja2.UndefinedError, match="unit"):
        render("tunnel.service.j2", old_address="10.0.0.1")
