#!/usr/bin/env python3
"""Bring the simulated pair (`old`, `new`) up or down.

    python docker/pair.py up      # build/import the base image if its inputs changed, start, provision
    python docker/pair.py down    # remove containers, network and volumes
    python docker/pair.py status  # print build/pair.json if the pair is up

Standard library only; it drives the `docker` CLI and docker-compose (v1) or `docker compose` (v2).
Run from anywhere; paths are relative to the repository. See docker/README.md.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DOCKER = REPO / "docker"
BUILD = REPO / "build"
IMAGE_DIR = DOCKER / "image"
PROVISION_DIR = DOCKER / "provision"
STANDIN_DIR = DOCKER / "standin"
COMPOSE_FILE = DOCKER / "compose.yaml"
PROJECT = "mastomig"
IMAGE_REPO = "mastomig-base"

DOMAIN = "social.test"
HOSTS = {
    # name: container, private address, published ssh port, published https port
    "old": {"container": "mastomig-old", "address": "172.30.99.11", "ssh": 2201, "https": 8441},
    "new": {"container": "mastomig-new", "address": "172.30.99.12", "ssh": 2202, "https": 8442},
}
SSH_DIR = BUILD / "ssh"
CA_DIR = BUILD / "ca"
LOG_DIR = BUILD / "logs"
KEY = SSH_DIR / "id_ed25519"
SSH_CONFIG = DOCKER / "ssh_config"
KNOWN_HOSTS = DOCKER / "known_hosts"
DEMO_ENV = REPO / "env" / "demo.env"
SMOKE_TOKEN = BUILD / "smoke.token"
# follows user0002 (the stand-in's seeding rule), so its home timeline is not empty
SMOKE_ACCOUNT = "user0001"
PAIR_JSON = BUILD / "pair.json"
MARKER = "/var/lib/mastomig/provisioned"

DEMO_ENV_TEXT = """\
DOMAIN=social.test
OLD_SSH=old
NEW_SSH=new
OLD_ADDRESS=172.30.99.11
NEW_ADDRESS=172.30.99.12
OLD_ADDRESS_FROM_NEW=172.30.99.11
PG_PORT=5432
TUNNEL_PORT=5433
REPLICATION_ROLE=mig_replicator
REPLICATION_SLOT=mig_new
MASTODON_USER=mastodon
MASTODON_DIR=/home/mastodon/live
MASTODON_WEB_SERVICE=mastodon-web
MASTODON_SIDEKIQ_SERVICE=mastodon-sidekiq
MASTODON_STREAMING_SERVICE=mastodon-streaming
DNS_PROVIDER=manual
SMOKE_TEST_TOKEN_FILE={smoke_token}
"""


class PairError(RuntimeError):
    pass


def log(msg: str) -> None:
    print(f"pair: {msg}", file=sys.stderr, flush=True)


def run(args, *, input: bytes | None = None, check: bool = True, capture: bool = True,
        env: dict | None = None, timeout: float | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        args, input=input, env=env, timeout=timeout,
        stdout=subprocess.PIPE if capture else None,
        stderr=subprocess.PIPE if capture else None,
    )
    if check and proc.returncode != 0:
        err = (proc.stderr or b"").decode(errors="replace").strip()
        out = (proc.stdout or b"").decode(errors="replace").strip()
        raise PairError(f"command failed ({proc.returncode}): {' '.join(map(str, args))}\n{err or out}")
    return proc


def write_if_changed(path: Path, text: str, mode: int | None = None) -> bool:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and path.read_text() == text:
        return False
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode or 0o644), "w") as f:
        f.write(text)  # created with its final mode: a secret is never readable by others, not even briefly
    tmp.replace(path)
    return True


# --- engine and compose -----------------------------------------------------------------------------

def docker_available() -> bool:
    if not shutil.which("docker"):
        return False
    return subprocess.run(["docker", "info"], stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL).returncode == 0


_compose_cmd: list[str] | None = None


def compose_cmd() -> list[str]:
    global _compose_cmd
    if _compose_cmd is None:
        if subprocess.run(["docker", "compose", "version"], stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL).returncode == 0:
            _compose_cmd = ["docker", "compose"]
        elif shutil.which("docker-compose"):
            _compose_cmd = ["docker-compose"]
        else:
            raise PairError("neither `docker compose` nor `docker-compose` found "
                            "(run docker/setup-engine.sh)")
    return _compose_cmd


def compose(*args: str, image: str | None = None, capture: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["MASTOMIG_IMAGE"] = image or env.get("MASTOMIG_IMAGE") or f"{IMAGE_REPO}:none"
    return run([*compose_cmd(), "-f", str(COMPOSE_FILE), "-p", PROJECT, *args], env=env, capture=capture)


# --- base image -------------------------------------------------------------------------------------

def tree_hash(*roots: Path, extra: bytes = b"") -> str:
    h = hashlib.sha256()
    for root in roots:
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file()
                                                     and "__pycache__" not in p.parts)
        for p in files:
            h.update(str(p.relative_to(root if root.is_dir() else root.parent)).encode() + b"\0")
            h.update(p.read_bytes() + b"\0")
    h.update(extra)
    return h.hexdigest()


# The Debian suite of each pair profile: both hosts of a pair run the same suite.
SUITES = {"default": "bookworm", "variant": "trixie"}
# systemd >= 256 (trixie) boots on a cgroup v1 host only when told so on its "kernel command line", which in a
# container is PID 1's argv (also set by build-base.sh when it imports the image it built).
IMAGE_CMD = {"bookworm": '["/sbin/init"]',
             "trixie": '["/sbin/init", "SYSTEMD_CGROUP_ENABLE_LEGACY_FORCE=1"]'}


def suite() -> str:
    return SUITES[profile()]


def image_tag(suite: str) -> str:
    """mastomig-base:<suite>-<hash of docker/image/ and the suite>"""
    return f"{IMAGE_REPO}:{suite}-{tree_hash(IMAGE_DIR, extra=suite.encode())[:16]}"


def image_exists(tag: str) -> bool:
    return subprocess.run(["docker", "image", "inspect", tag], stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL).returncode == 0


def ensure_image(suite: str) -> str:
    tag = image_tag(suite)
    if image_exists(tag):
        log(f"image {tag} is cached")
        return tag
    tar = BUILD / f"rootfs-{tag.split(':')[1]}.tar"
    t0 = time.monotonic()
    if tar.exists():
        log(f"importing cached rootfs {tar.relative_to(REPO)} as {tag}")
        run(["docker", "import", "-c", f"CMD {IMAGE_CMD[suite]}", "-c", "ENV container=docker", str(tar),
             tag])
    else:
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        build_log = LOG_DIR / "image-build.log"
        log(f"building image {tag} with mmdebstrap (log: {build_log.relative_to(REPO)}) ...")
        for old in BUILD.glob("rootfs-*.tar*"):   # one rootfs tarball per suite (and none of the old naming)
            if old.name.startswith(f"rootfs-{suite}-") or not any(
                    old.name.startswith(f"rootfs-{s}-") for s in SUITES.values()):
                old.unlink()
        with open(build_log, "wb") as fh:
            proc = subprocess.run(["bash", str(IMAGE_DIR / "build-base.sh"), suite, str(tar), tag],
                                  stdout=fh, stderr=subprocess.STDOUT)
        if proc.returncode != 0:
            tail = build_log.read_text(errors="replace").splitlines()[-30:]
            raise PairError("image build failed:\n" + "\n".join(tail))
    log(f"image {tag} ready in {time.monotonic() - t0:.0f} s")
    prune_images(keep=tag)
    return tag


def prune_images(keep: str) -> None:
    """Remove base images of earlier inputs (those still used by containers stay): `keep` for its suite and
    the newest image of each other suite, so that switching profiles does not rebuild each time."""
    out = run(["docker", "images", "--format", "{{.Repository}}:{{.Tag}}", IMAGE_REPO], check=False)
    refs = [r for r in out.stdout.decode().split() if r != keep]
    newest: dict[str, tuple[str, str]] = {}   # suite -> (created, ref)
    keep_suite = keep.split(":", 1)[1].split("-", 1)[0]
    drop = []
    for ref in refs:
        tag = ref.split(":", 1)[1]
        s = tag.split("-", 1)[0] if "-" in tag else ""
        if s not in SUITES.values() or s == keep_suite:   # a superseded tag, or one of the old naming
            drop.append(ref)
            continue
        p = run(["docker", "image", "inspect", "-f", "{{.Created}}", ref], check=False)
        created = p.stdout.decode().strip()
        if s in newest and newest[s][0] >= created:
            drop.append(ref)
        else:
            if s in newest:
                drop.append(newest[s][1])
            newest[s] = (created, ref)
    for ref in drop:
        run(["docker", "image", "rm", ref], check=False)


# --- operator key and test CA -------------------------------------------------------------------------

def ensure_key() -> str:
    if not KEY.exists():
        SSH_DIR.mkdir(parents=True, exist_ok=True)
        SSH_DIR.chmod(0o700)
        if shutil.which("ssh-keygen"):
            run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "mastomig-operator", "-f", str(KEY)])
        else:  # cryptography comes with paramiko in the project venv
            from cryptography.hazmat.primitives import serialization as s
            from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
            k = Ed25519PrivateKey.generate()
            KEY.write_bytes(k.private_bytes(s.Encoding.PEM, s.PrivateFormat.OpenSSH, s.NoEncryption()))
            pub = k.public_key().public_bytes(s.Encoding.OpenSSH, s.PublicFormat.OpenSSH)
            KEY.with_suffix(".pub").write_bytes(pub + b" mastomig-operator\n")
        KEY.chmod(0o600)
        log(f"generated operator key {KEY.relative_to(REPO)}")
    return KEY.with_name(KEY.name + ".pub").read_text().strip()


def openssl(*args: str, cwd: Path) -> None:
    proc = subprocess.run(["openssl", *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        raise PairError(f"openssl {' '.join(args)} failed:\n{proc.stdout.decode(errors='replace')}")


def ensure_ca() -> Path:
    """A test CA (once) and a certbot-like certificate for DOMAIN signed by it."""
    CA_DIR.mkdir(parents=True, exist_ok=True)
    ca_key, ca_crt = CA_DIR / "ca.key", CA_DIR / "ca.crt"
    if not (ca_key.exists() and ca_crt.exists()):
        openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                "-keyout", "ca.key", "-out", "ca.crt", "-days", "3650", "-sha256",
                "-subj", "/O=mastomig/CN=mastomig test CA",
                "-addext", "basicConstraints=critical,CA:TRUE",
                "-addext", "keyUsage=critical,keyCertSign,cRLSign",
                "-addext", "subjectKeyIdentifier=hash", cwd=CA_DIR)
        ca_key.chmod(0o600)
        log(f"generated test CA {ca_crt.relative_to(REPO)}")
    leaf = CA_DIR / DOMAIN
    if not (leaf / "fullchain.pem").exists():
        leaf.mkdir(exist_ok=True)
        (leaf / "ext.cnf").write_text(
            f"subjectAltName=DNS:{DOMAIN}\n"
            "basicConstraints=critical,CA:FALSE\n"
            "keyUsage=critical,digitalSignature\n"
            "extendedKeyUsage=serverAuth\n"
            "subjectKeyIdentifier=hash\n"
            "authorityKeyIdentifier=keyid,issuer\n")
        openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                "-keyout", "privkey.pem", "-out", "cert.csr", "-subj", f"/CN={DOMAIN}", cwd=leaf)
        openssl("x509", "-req", "-in", "cert.csr", "-CA", "../ca.crt", "-CAkey", "../ca.key",
                "-set_serial", str(int.from_bytes(os.urandom(8), "big")), "-days", "397", "-sha256",
                "-extfile", "ext.cnf", "-out", "cert.pem", cwd=leaf)
        (leaf / "privkey.pem").chmod(0o600)
        shutil.copyfile(ca_crt, leaf / "chain.pem")
        (leaf / "fullchain.pem").write_text((leaf / "cert.pem").read_text() + ca_crt.read_text())
        log(f"issued certificate for {DOMAIN} under {leaf.relative_to(REPO)}")
    return ca_crt


# --- containers -------------------------------------------------------------------------------------

def dexec(host: str, *cmd: str, input: bytes | None = None, check: bool = True,
          env: dict | None = None, timeout: float | None = None) -> subprocess.CompletedProcess:
    args = ["docker", "exec"]
    if input is not None:
        args.append("-i")
    for k, v in (env or {}).items():
        args += ["-e", f"{k}={v}"]
    return run([*args, HOSTS[host]["container"], *cmd], input=input, check=check, timeout=timeout)


def wait_booted(host: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        p = dexec(host, "systemctl", "is-system-running", "--wait", check=False, timeout=timeout)
        last = (p.stdout or b"").decode().strip() or (p.stderr or b"").decode().strip()
        if last in ("running", "degraded"):
            if last == "degraded":
                failed = dexec(host, "systemctl", "--failed", "--no-legend", check=False).stdout.decode()
                log(f"{host}: system degraded; failed units:\n{failed}")
            return
        time.sleep(0.3)   # "Failed to connect to bus" during the first moments
    raise PairError(f"{host} did not finish booting: {last}")


def containers_running() -> dict[str, str]:
    """container name -> image of the running containers of the pair"""
    out = {}
    for h in HOSTS.values():
        p = run(["docker", "inspect", "-f", "{{.State.Running}} {{.Config.Image}}", h["container"]],
                check=False)
        if p.returncode == 0:
            running, image = p.stdout.decode().split()
            if running == "true":
                out[h["container"]] = image
    return out


def payload_tar(host: str, pubkey: str, ca_crt: Path) -> bytes:
    """What gets copied into a host before provisioning (extracted at /)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        def add_tree(src: Path, dest: str) -> None:
            for p in sorted(src.rglob("*")):
                if "__pycache__" in p.parts or p.name.endswith(".pyc"):
                    continue
                tar.add(p, arcname=f"{dest}/{p.relative_to(src)}", recursive=False,
                        filter=_root_owned)

        def add_bytes(name: str, data: bytes, mode: int = 0o644) -> None:
            ti = tarfile.TarInfo(name)
            ti.size, ti.mode, ti.mtime = len(data), mode, int(time.time())
            tar.addfile(ti, io.BytesIO(data))

        add_tree(PROVISION_DIR, "opt/mastomig/provision")
        if STANDIN_DIR.is_dir():
            add_tree(STANDIN_DIR, "opt/standin-src")
        add_bytes("opt/mastomig/admin.pub", (pubkey + "\n").encode())
        add_bytes("opt/mastomig/ca.crt", ca_crt.read_bytes())
        if host == "old":
            leaf = CA_DIR / DOMAIN
            for f in ("cert.pem", "chain.pem", "fullchain.pem"):
                add_bytes(f"opt/mastomig/tls/{f}", (leaf / f).read_bytes())
            add_bytes("opt/mastomig/tls/privkey.pem", (leaf / "privkey.pem").read_bytes(), 0o600)
    return buf.getvalue()


def _root_owned(ti: tarfile.TarInfo) -> tarfile.TarInfo:
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = "root"
    return ti


def provision_inputs_hash(host: str, pubkey: str) -> str:
    roots = [PROVISION_DIR] + ([STANDIN_DIR] if STANDIN_DIR.is_dir() else [])
    extra = f"{host}\0{pubkey}\0{(CA_DIR / 'ca.crt').read_text()}\0PAIR_PROFILE={profile()}\0"
    if host == "old":
        extra += f"SEED_SIZE={seed_size()}\0SEED_TEXT_BYTES={seed_text_bytes()}\0"
    return tree_hash(*roots, extra=extra.encode())[:16]


def seed_size() -> str:
    return os.environ.get("SEED_SIZE", "small")


def seed_text_bytes() -> str:
    """SEED_TEXT_BYTES: the seeded statuses' average text length (the stand-in's default, 180, when unset);
    with a seed size, it sets the database's size (medium at 10000 is about 2 GB)."""
    return os.environ.get("SEED_TEXT_BYTES", "180")


PROFILES = {
    "default": "Debian 12 (bookworm), PostgreSQL 15; old as Mastodon's install guide leaves it: peer "
               "authentication over the socket, no database password, PostgreSQL tuned as pgtune suggests",
    "variant": "Debian 13 (trixie), PostgreSQL 17; old's cluster `17/social` in /srv/pgdata, Mastodon "
               "through PgBouncer (127.0.0.1:6432, transaction pooling) with a SCRAM password, Redis with a "
               "password, REDIS_URL/SIDEKIQ_REDIS_URL (db 1) and REDIS_NAMESPACE=social; Debian's PostgreSQL "
               "settings",
}


def profile() -> str:
    """PAIR_PROFILE: which kind of `old` the pair simulates, and the Debian suite of both hosts (`new` is a
    fresh host of that suite in each)."""
    name = os.environ.get("PAIR_PROFILE", "default")
    if name not in PROFILES:
        raise PairError(f"PAIR_PROFILE={name!r}: choose one of " + ", ".join(PROFILES))
    return name


def provision(host: str, pubkey: str, ca_crt: Path, results: dict) -> None:
    try:
        want = provision_inputs_hash(host, pubkey)
        if read_marker(host) == want:
            results[host] = "unchanged"
            return
        dexec(host, "bash", "-c", "rm -rf /opt/mastomig /opt/standin-src && tar -x -C /",
              input=payload_tar(host, pubkey, ca_crt))
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        logfile = LOG_DIR / f"provision-{host}.log"
        t0 = time.monotonic()
        env = {"DOMAIN": DOMAIN, "PAIR_PROFILE": profile()}
        if host == "old":
            env["SEED_SIZE"] = seed_size()
            env["SEED_TEXT_BYTES"] = seed_text_bytes()
        args = ["docker", "exec"] + sum((["-e", f"{k}={v}"] for k, v in env.items()), []) + [
            HOSTS[host]["container"], "bash", f"/opt/mastomig/provision/{host}.sh"]
        with open(logfile, "wb") as fh:
            proc = subprocess.run(args, stdout=fh, stderr=subprocess.STDOUT)
        if proc.returncode != 0:
            tail = logfile.read_text(errors="replace").splitlines()[-40:]
            raise PairError(f"provisioning {host} failed (log {logfile.relative_to(REPO)}):\n"
                            + "\n".join(tail))
        dexec(host, "bash", "-c", f"mkdir -p {os.path.dirname(MARKER)} && cat > {MARKER}",
              input=(want + "\n").encode())
        results[host] = f"provisioned in {time.monotonic() - t0:.0f} s"
    except BaseException as exc:  # reported by the caller
        results[host] = exc


def read_marker(host: str) -> str:
    return dexec(host, "cat", MARKER, check=False).stdout.decode().strip()


def host_keys(host: str) -> list[str]:
    out = dexec(host, "sh", "-c", "cat /etc/ssh/ssh_host_*_key.pub").stdout.decode()
    keys = []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 2:
            keys.append(f"{parts[0]} {parts[1]}")
    if not keys:
        raise PairError(f"{host}: no ssh host keys")
    return keys


def ssh_config_text() -> str:
    lines = ["# Written by `docker/pair.py up` for the simulated pair (docker/README.md). Not committed.", ""]
    for name, h in HOSTS.items():
        lines += [
            f"Host {name}",
            "    HostName 127.0.0.1",
            f"    Port {h['ssh']}",
            "    User admin",
            f"    IdentityFile {KEY}",
            "    IdentitiesOnly yes",
            f"    UserKnownHostsFile {KNOWN_HOSTS}",
            "    StrictHostKeyChecking yes",
            "",
        ]
    return "\n".join(lines)


def tokens_contract() -> dict:
    """How tests derive access tokens: the stand-in's machine-readable contract
    (docker/standin/contract.json)."""
    try:
        return json.loads((STANDIN_DIR / "contract.json").read_text()).get("tokens", {})
    except (OSError, ValueError):
        return {"see": "docker/standin/README.md"}


def pair_json(ca_crt: Path) -> dict:
    return {
        "project": PROJECT,
        "domain": DOMAIN,
        "ca_cert": str(ca_crt),
        "ssh_config": str(SSH_CONFIG),
        "known_hosts": str(KNOWN_HOSTS),
        "ssh_key": str(KEY),
        "ssh_user": "admin",
        "demo_env": str(DEMO_ENV),
        "seed_size": seed_size(),
        "seed_text_bytes": seed_text_bytes(),
        "profile": profile(),
        "debian_suite": suite(),
        "hosts": {
            name: {
                "container": h["container"],
                "address": h["address"],
                "ports": {"ssh": {"host": "127.0.0.1", "port": h["ssh"]},
                          "https": {"host": "127.0.0.1", "port": h["https"]}},
            }
            for name, h in HOSTS.items()
        },
        "tokens": tokens_contract(),
    }


# --- commands ---------------------------------------------------------------------------------------

def up() -> int:
    t0 = time.monotonic()
    if not docker_available():
        raise PairError("the Docker engine does not answer (`docker info`); run docker/setup-engine.sh")
    tag = ensure_image(suite())
    pubkey = ensure_key()
    ca_crt = ensure_ca()

    running = containers_running()
    if len(running) == len(HOSTS) and all(img == tag for img in running.values()):
        log("containers already running")
    else:
        log("starting containers")
        compose("up", "-d", "--remove-orphans", image=tag)
    for host in HOSTS:
        wait_booted(host)

    # A pair provisioned from other inputs (edited provisioning or stand-in, another checkout's key or CA,
    # another SEED_SIZE or PAIR_PROFILE) is recreated rather than patched. Containers of another image (the
    # other profile's suite, or an edited docker/image/) were already recreated by `compose up` above.
    stale = [h for h in HOSTS if (m := read_marker(h)) and m != provision_inputs_hash(h, pubkey)]
    if stale:
        log(f"{', '.join(stale)} provisioned from other inputs; recreating the pair")
        compose("up", "-d", "--force-recreate", "--remove-orphans", image=tag)
        for host in HOSTS:
            wait_booted(host)

    results: dict = {}
    threads = [threading.Thread(target=provision, args=(h, pubkey, ca_crt, results)) for h in HOSTS]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    errors = [r for r in results.values() if isinstance(r, BaseException)]
    for host, r in results.items():
        if not isinstance(r, BaseException):
            log(f"{host}: {r}")
    if errors:
        for e in errors:
            log(str(e))
        return 1

    changed = []
    known = []
    for name, h in HOSTS.items():
        known += [f"[127.0.0.1]:{h['ssh']} {k}" for k in host_keys(name)]
    cfg = ssh_config_text()
    token = dexec("old", "runuser", "-u", "mastodon", "--", "/home/mastodon/live/bin/standin", "token",
                  SMOKE_ACCOUNT).stdout.decode().strip()
    if write_if_changed(SMOKE_TOKEN, token + "\n", mode=0o600):
        changed.append(str(SMOKE_TOKEN.relative_to(REPO)))
    for path, text in ((KNOWN_HOSTS, "\n".join(known) + "\n"), (SSH_CONFIG, cfg),
                       (DEMO_ENV, DEMO_ENV_TEXT.format(smoke_token=SMOKE_TOKEN)),
                       (PAIR_JSON, json.dumps(pair_json(ca_crt), indent=2) + "\n")):
        if write_if_changed(path, text):
            changed.append(str(path.relative_to(REPO)))

    print(cfg)
    log(f"wrote {', '.join(changed)}" if changed
        else "ssh_config, known_hosts, demo.env, pair.json unchanged")
    log(f"up in {time.monotonic() - t0:.1f} s")
    return 0


def down() -> int:
    if not docker_available():
        log("the Docker engine does not answer; nothing to remove")
        return 0
    compose("down", "-v", "--remove-orphans", "-t", "10", capture=False)
    for h in HOSTS.values():   # containers left from a failed compose run
        run(["docker", "rm", "-f", "-v", h["container"]], check=False)
    log("down")
    return 0


def status() -> int:
    running = containers_running()
    if len(running) != len(HOSTS) or not PAIR_JSON.exists():
        log("the pair is not up")
        return 1
    print(PAIR_JSON.read_text(), end="")
    return 0


def main(argv: list[str]) -> int:
    cmds = {"up": up, "down": down, "status": status}
    if len(argv) != 2 or argv[1] not in cmds:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        return cmds[argv[1]]()
    except PairError as exc:
        log(f"ERROR: {exc}")
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
