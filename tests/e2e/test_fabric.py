"""Both hosts are reachable through Fabric with docker/ssh_config, and preflight passes on the fresh pair."""

import subprocess

import pytest

from .conftest import REPO, fab

pytestmark = [pytest.mark.docker, pytest.mark.fresh_pair]



def test_generated_operator_files(pair):
    cfg = (REPO / "docker" / "ssh_config").read_text()
    for host in ("old", "new"):
        assert f"Host {host}\n" in cfg
    known = (REPO / "docker" / "known_hosts").read_text().split("\n")
    for host in ("old", "new"):
        port = pair.info["hosts"][host]["ports"]["ssh"]["port"]
        real = pair.exec(host, "cat", "/etc/ssh/ssh_host_ed25519_key.pub", check=True).stdout.split()[1]
        assert f"[127.0.0.1]:{port} ssh-ed25519 {real}" in known
    demo = (REPO / "env" / "demo.env").read_text()
    assert "OLD_ADDRESS=172.30.99.11\n" in demo and "NEW_ADDRESS=172.30.99.12\n" in demo


def test_openssh_client_reaches_both_hosts_with_strict_host_keys(pair):
    if not subprocess.run(["which", "ssh"], capture_output=True).returncode == 0:
        pytest.skip("no OpenSSH client on this machine")
    for host in ("old", "new"):
        r = subprocess.run(["ssh", "-F", str(REPO / "docker" / "ssh_config"), "-o", "BatchMode=yes", host,
                            "hostname && sudo -n true && echo sudo-ok"],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert r.stdout.split() == [host, "sudo-ok"]


def test_fabric_preflight_passes(pair):
    r = fab("-H", "old,new", "preflight")
    assert r.returncode == 0, f"fab preflight failed ({r.returncode}):\n{r.stdout}\n{r.stderr}"


def test_fabric_put_uses_sftp_on_both_hosts(pair, tmp_path):
    from fabric import Config, Connection

    src = tmp_path / "probe.txt"
    src.write_text("sftp works\n")
    cfg = Config(runtime_ssh_path=str(REPO / "docker" / "ssh_config"))
    for host in ("old", "new"):
        with Connection(host, config=cfg) as c:
            c.put(str(src), "/tmp/mastomig-sftp-probe.txt")
        got = pair.exec(host, "cat", "/tmp/mastomig-sftp-probe.txt", check=True).stdout
        assert got == "sftp works\n"
        pair.exec(host, "rm", "-f", "/tmp/mastomig-sftp-probe.txt")
