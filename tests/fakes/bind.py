"""A real BIND (Debian's `named`) for tests: the zone of bind_zone.db on 127.0.0.1 at a free port,
open to RFC 2136 updates signed with a TSIG key made by tsig-keygen.

Fixtures: `bind_server` (one named per test run), `bind` (the same, its records reset for each test).
Without `named` the tests that use them skip, unless CI is set: then they fail.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import dns.message
import dns.query
import dns.rdatatype
import dns.tsigkeyring
import dns.update
import dns.zone
import pytest

ZONE = "example.social"
ZONE_FILE = Path(__file__).with_name("bind_zone.db")
KEY_NAME = "migration.key"
ALGORITHM = "hmac-sha256"
NAMED = shutil.which("named", path=os.environ.get("PATH", "") + ":/usr/sbin")


def free_port() -> int:
    """A port free for both TCP and UDP on 127.0.0.1 (DNS listens on both)."""
    while True:
        with socket.socket() as tcp, socket.socket(type=socket.SOCK_DGRAM) as udp:
            tcp.bind(("127.0.0.1", 0))
            try:
                udp.bind(("127.0.0.1", tcp.getsockname()[1]))
            except OSError:
                continue
            return tcp.getsockname()[1]


def pair_zone(old_address: str, ttl: int = 5) -> str:
    """The simulated pair's domain as a zone before the move: its A record holds old's address."""
    return (f"$TTL {ttl}\n@       IN SOA  ns1 hostmaster 1 3600 600 86400 {ttl}\n@       IN NS   ns1\n"
            f"ns1     IN A    127.0.0.1\n@       IN A    {old_address}\n")


def rfc2136_settings(bind: "Bind") -> dict:
    """The migration's settings that make phase 4 update this server over RFC 2136 and verify there."""
    return {"DNS_PROVIDER": "rfc2136", "RFC2136_SERVER": "127.0.0.1", "RFC2136_PORT": bind.port,
            "RFC2136_KEY_NAME": KEY_NAME, "RFC2136_KEY_FILE": bind.key_file,
            "DNS_VERIFY_SERVERS": bind.server}


class Bind:
    def __init__(self, workdir: Path, zone: str = ZONE, zone_text: str | None = None):
        self.zone, self.zone_text = zone, zone_text or ZONE_FILE.read_text()
        self.dir = workdir
        self.port = free_port()
        self.server = f"127.0.0.1:{self.port}"
        self.key_file = workdir / "key.conf"  # BIND's key clause, as tsig-keygen writes it
        self.raw_key_file = workdir / "key.b64"  # the bare base64 secret
        self.process = None

    def start(self) -> None:
        key = subprocess.run(["tsig-keygen", "-a", ALGORITHM, KEY_NAME], check=True, capture_output=True,
                             text=True).stdout
        secret = key.split('secret "')[1].split('"')[0]
        for path, text in ((self.key_file, key), (self.raw_key_file, secret + "\n")):
            path.write_text(text)
            path.chmod(0o600)
        (self.dir / "zone.db").write_text(self.zone_text)
        (self.dir / "named.conf").write_text(f"""
options {{
    directory "{self.dir}"; pid-file "{self.dir}/named.pid"; session-keyfile "{self.dir}/session.key";
    listen-on port {self.port} {{ 127.0.0.1; }}; listen-on-v6 {{ none; }};
    recursion no; dnssec-validation no; notify no;
}};
controls {{ }};
include "{self.key_file}";
zone "{self.zone}" {{
    type primary; file "{self.dir}/zone.db"; update-policy {{ grant {KEY_NAME} zonesub ANY; }};
}};
""")
        log = (self.dir / "named.log").open("w")
        self.process = subprocess.Popen([NAMED, "-g", "-n", "1", "-c", str(self.dir / "named.conf")],
                                        stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 15
        while not self._answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("named did not start:\n" + (self.dir / "named.log").read_text()[-2000:])
            time.sleep(0.05)

    def _answers(self) -> bool:
        """Over TCP: refused at once until named listens (a UDP question would wait for its timeout)."""
        try:
            return dns.query.tcp(dns.message.make_query(self.zone, "SOA"), "127.0.0.1", port=self.port,
                                 timeout=1).answer
        except OSError:
            return False

    def stop(self) -> None:
        if self.process:
            self.process.terminate()
            self.process.wait(timeout=10)

    def set(self, name: str, rtype: str, content: str, ttl: int = 3600) -> None:
        """Change a record as someone else would (another admin, or the operator at the registrar)."""
        self.update(lambda u: u.replace(name + ".", ttl, rtype, content))

    def reset(self) -> None:
        """Every A and AAAA record as in bind_zone.db."""
        zone = dns.zone.from_file(str(ZONE_FILE), ZONE, relativize=False)

        def restore(update):
            for name, rdataset in zone.iterate_rdatasets():
                if rdataset.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
                    update.replace(name, rdataset)
        self.update(restore)

    def update(self, change) -> None:
        secret = self.raw_key_file.read_text().strip()
        keyring = dns.tsigkeyring.from_text({KEY_NAME: (ALGORITHM, secret)})
        update = dns.update.UpdateMessage(self.zone, keyring=keyring, keyalgorithm=ALGORITHM)
        change(update)
        assert dns.query.tcp(update, "127.0.0.1", port=self.port, timeout=5).rcode() == 0


@pytest.fixture(scope="session")
def bind_server(tmp_path_factory):
    if not NAMED:
        if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
            pytest.fail("named is missing and CI is set: apt-get install bind9 bind9-utils")
        pytest.skip("named is missing (apt-get install bind9 bind9-utils)")
    server = Bind(tmp_path_factory.mktemp("bind"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def bind(bind_server):
    bind_server.reset()
    return bind_server
