"""Session fixture for the end-to-end tests: the simulated pair, brought up once and always torn down.

- Docker unavailable: the e2e tests skip, unless CI is set (then they fail: CI must run them).
- MASTOMIG_KEEP_PAIR=1 leaves the pair running after the session (for debugging; `make down` removes it).
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PAIR_PY = REPO / "docker" / "pair.py"
PAIR_JSON = REPO / "build" / "pair.json"


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _docker_available() -> tuple[bool, str]:
    if not shutil.which("docker"):
        return False, "no docker CLI"
    p = subprocess.run(["docker", "info"], capture_output=True, text=True)
    if p.returncode != 0:
        return False, "Docker engine not answering: " + (p.stderr.strip().splitlines() or [""])[-1]
    return True, ""


@dataclass
class Exec:
    returncode: int
    stdout: str
    stderr: str


class Pair:
    """Access to the running pair. Traffic from this machine goes only to the 127.0.0.1 ports it publishes."""

    def __init__(self, info: dict):
        self.info = info
        self.domain: str = info["domain"]
        self.ca_cert: str = info["ca_cert"]

    # -- host state, through docker exec (not through the Fabric path under test) ----------------------
    def container(self, host: str) -> str:
        return self.info["hosts"][host]["container"]

    def exec(self, host: str, *cmd: str, user: str | None = None, input: str | None = None,
             check: bool = False, timeout: float = 120) -> Exec:
        args = ["docker", "exec"]
        if input is not None:
            args.append("-i")
        if user:
            args += ["-u", user]
        p = subprocess.run([*args, self.container(host), *cmd], input=input, capture_output=True,
                           text=True, timeout=timeout)
        r = Exec(p.returncode, p.stdout, p.stderr)
        if check and p.returncode != 0:
            raise AssertionError(f"{host}: {' '.join(cmd)} -> {p.returncode}\n{p.stdout}\n{p.stderr}")
        return r

    def sh(self, host: str, script: str, **kw) -> Exec:
        return self.exec(host, "bash", "-c", script, **kw)

    # -- HTTPS through a host's nginx, SNI and Host = the domain, verified against the test CA -----------
    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.ca_cert)

    def https_port(self, host: str = "old") -> int:
        return self.info["hosts"][host]["ports"]["https"]["port"]

    def connect_tls(self, host: str = "old", timeout: float = 10) -> ssl.SSLSocket:
        ports = self.info["hosts"][host]["ports"]["https"]
        assert ports["host"] == "127.0.0.1"
        raw = socket.create_connection((ports["host"], ports["port"]), timeout=timeout)
        return self.ssl_context().wrap_socket(raw, server_hostname=self.domain)

    def request(self, method: str, path: str, *, host: str = "old", token: str | None = None,
                body: dict | None = None, headers: dict | None = None,
                raw_body: bytes | None = None) -> tuple[int, dict, bytes]:
        conn = _PinnedHTTPSConnection(self, host)
        hdrs = {"Host": self.domain, "Accept": "application/json", "Connection": "close"}
        if token:
            hdrs["Authorization"] = f"Bearer {token}"
        data = raw_body
        if body is not None:
            data = json.dumps(body).encode()
            hdrs["Content-Type"] = "application/json"
        hdrs.update(headers or {})
        try:
            conn.request(method, path, body=data, headers=hdrs)
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        finally:
            conn.close()

    def json(self, method: str, path: str, **kw):
        status, headers, body = self.request(method, path, **kw)
        assert 200 <= status < 300, f"{method} {path} -> {status}: {body[:500]!r}"
        return json.loads(body)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to the domain, but dialled at the pair's published 127.0.0.1 port."""

    def __init__(self, pair: Pair, host: str):
        super().__init__(pair.domain, pair.https_port(host), timeout=20)
        self._pair, self._host = pair, host

    def connect(self):
        self.sock = self._pair.connect_tls(self._host, timeout=self.timeout)


FAB = Path(sys.executable).with_name("fab")


def fab(*args: str, timeout: float = 180, env: dict | None = None) -> subprocess.CompletedProcess:
    """The operator's command line against the pair: fab -S docker/ssh_config ... with env/demo.env."""
    environment = {**os.environ, "MIGRATION_ENV": "env/demo.env", **(env or {})}
    return subprocess.run([str(FAB), "-S", "docker/ssh_config", *args], cwd=REPO, env=environment,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def pair():
    ok, why = _docker_available()
    if not ok:
        if _in_ci():
            pytest.fail(f"CI is set but Docker is unavailable ({why}); the e2e tests must run in CI")
        pytest.skip(why)
    keep = os.environ.get("MASTOMIG_KEEP_PAIR", "") not in ("", "0")
    try:
        up = subprocess.run([sys.executable, str(PAIR_PY), "up"], cwd=REPO)
        if up.returncode != 0:
            pytest.fail(f"docker/pair.py up failed with exit code {up.returncode}")
        yield Pair(json.loads(PAIR_JSON.read_text()))
    finally:
        if not keep:
            subprocess.run([sys.executable, str(PAIR_PY), "down"], cwd=REPO,
                           stdout=subprocess.DEVNULL)


def pytest_configure(config):
    config.addinivalue_line("markers", "fresh_pair: asserts the state of the freshly provisioned pair; runs "
                                       "before the e2e tests that change the pair")


def pytest_collection_modifyitems(config, items):
    """Among the docker tests, those of the fresh pair's state run first, whatever the order of the files that
    change the pair; other tests keep their places."""
    slots = [i for i, item in enumerate(items) if item.get_closest_marker("docker")]
    docker_items = [items[i] for i in slots]
    docker_items.sort(key=lambda item: 0 if item.get_closest_marker("fresh_pair") else 1)
    for i, item in zip(slots, docker_items, strict=True):
        items[i] = item
