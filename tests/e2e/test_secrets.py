"""No secret reaches the terminal, the run log, a plan, the runbook or a remote command line, over a whole
migration on a fresh pair (default profile): every secret value that exists is collected, and every place
a person or another user could read is searched for each of them."""
import re
import subprocess
import sys

import pytest

from tests.fakes.cloudflare_api import FakeCloudflare

from .conftest import REPO, fab
from .test_phase1 import SAMPLES, sample_processes
from .test_phase4 import OLD, settings_file

pytestmark = pytest.mark.docker

SECRET_KEY = re.compile(r"SECRET|PASS|KEY|TOKEN|OTP|VAPID")
MADE_UP = {"replication password": ("/var/lib/postgresql/.pgpass", "postgres"),
           "tunnel database password": ("/home/mastodon/.pgpass", "mastodon")}
PHASES = ("phase1-replicate", "phase2-proxy", "phase3-failover", "phase4-dns", "cleanup --apply")


def env_values(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#"))


def pgpass_passwords(pair, path: str, user: str) -> list[str]:
    lines = pair.exec("new", "cat", path, user=user).stdout.splitlines()
    return [line.rsplit(":", 1)[1] for line in lines if line.count(":") >= 4]


@pytest.fixture(scope="module")
def migration(pair, tmp_path_factory):
    """A whole migration; what it showed, logged, planned and ran; and every secret that existed."""
    for action in ("down", "up"):
        subprocess.run([sys.executable, "docker/pair.py", action], cwd=REPO, capture_output=True, check=True)
    workdir = tmp_path_factory.mktemp("secrets")
    token = workdir / "cf.token"
    token.write_text("cf-secret-scan-token-4711\n")
    token.chmod(0o600)
    with FakeCloudflare("cf-secret-scan-token-4711", zone="social.test") as cloudflare:
        cloudflare.add_record("social.test", "A", OLD, ttl=1, proxied=True)
        env = {"MIGRATION_ENV": str(settings_file(workdir, DNS_PROVIDER="cloudflare",
                                                  CLOUDFLARE_API_TOKEN_FILE=token,
                                                  CLOUDFLARE_BASE_URL=cloudflare.base_url))}
        shown, secrets = [], {"DNS token": "cf-secret-scan-token-4711",
                              "smoke-test token": (REPO / "build" / "smoke.token").read_text().strip()}
        old_env = pair.exec("old", "cat", "/home/mastodon/live/.env.production", check=True).stdout
        secrets.update({key: value for key, value in env_values(old_env).items()
                        if SECRET_KEY.search(key) and len(value) >= 8})
        for command in ("runbook", *(f"--dry {phase}" for phase in PHASES)):
            shown.append(fab("-H", "old,new", *command.split(), env=env).stdout)
        samplers = {host: sample_processes(pair, host) for host in ("old", "new")}
        try:
            for phase in PHASES:
                result = fab("-H", "old,new", *phase.split(), env=env, timeout=900)
                shown.append(result.stdout + result.stderr)
                assert result.returncode == 0, result.stdout + result.stderr
                if phase == "phase1-replicate":  # made up by phase 1; cleanup removes them
                    for name, (path, user) in MADE_UP.items():
                        for number, password in enumerate(pgpass_passwords(pair, path, user)):
                            secrets[f"{name} {number}"] = password
                if phase == "phase3-failover":
                    for host, sampler in samplers.items():
                        pair.exec(host, "pkill", "-f", "seq 3000")
                        sampler.wait(timeout=30)
                        shown.append(pair.exec(host, "cat", SAMPLES).stdout)
        finally:
            for host in samplers:
                pair.exec(host, "pkill", "-f", "seq 3000")
    logs = workdir / "logs"
    return {"secrets": secrets, "shown": shown, "logs": [p.read_text() for p in logs.iterdir()],
            "log_dir": logs}


def test_the_scan_has_what_it_searches_for(migration):
    names = set(migration["secrets"])
    assert {"SECRET_KEY_BASE", "OTP_SECRET", "DNS token", "smoke-test token"} <= names
    assert any(n.startswith("replication password") for n in names)
    assert any(n.startswith("tunnel database password") for n in names)  # old's Mastodon logs in by peer
    assert len(migration["shown"]) == 1 + 2 * len(PHASES) + 2 and migration["logs"]


def test_no_secret_in_output_plans_runbook_logs_or_ps(migration):
    places = {"printed, planned or sampled": "\n".join(migration["shown"]),
              "logs": "\n".join(migration["logs"])}
    found = [(name, where) for name, value in migration["secrets"].items()
             for where, text in places.items() if value in text]
    assert found == []


def test_the_log_folder_and_files_are_private(migration):
    assert oct(migration["log_dir"].stat().st_mode & 0o777) == "0o700"
    assert {oct(p.stat().st_mode & 0o777) for p in migration["log_dir"].iterdir()} == {"0o600"}
