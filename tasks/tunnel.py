"""The ssh tunnel from new to old that carries replication and, until failover, Mastodon's queries.

It runs on new as postgres under systemd, with a key of its own that old accepts only for
forwarding to its PostgreSQL port; old's host key is pinned, never accepted blindly.
"""

from __future__ import annotations

from . import checks, system
from .command import Cmd, Session, StepFailed, known
from .executor import two_host_task
from .facts import FileText, LinesWith, Listeners, PathExists, PgReady, PublicKey, Raw, UnitProcess, UnitState
from .templates import render

UNIT = "mastodon-migration-tunnel"
UNIT_FILE = f"/etc/systemd/system/{UNIT}.service"
SSH_DIR = "/var/lib/postgresql/.ssh"  # postgres's home on Debian, on both hosts
KEY = f"{SSH_DIR}/{UNIT}"
KNOWN_HOSTS = f"{SSH_DIR}/{UNIT}.known_hosts"
AUTHORIZED_KEYS = f"{SSH_DIR}/authorized_keys"
OLD_HOST_KEY = "/etc/ssh/ssh_host_ed25519_key.pub"
INSTALLED = PathExists(UNIT_FILE)  # the tunnel's "is this done?" (with the unit active): its unit file
RUNNING = UnitState(UNIT)


def authorized_line(s: Session, key: str) -> str:
    """old accepts the key for one forward only: no shell, no other port, no agent or pty."""
    cfg = s.settings
    return (
        f'restrict,port-forwarding,permitopen="127.0.0.1:{cfg.pg_port}",command="/bin/false" {key} {UNIT}\n'
    )


def known_hosts_line(s: Session, host_key: str) -> str:
    cfg = s.settings
    host = cfg.old_address_from_new
    if cfg.old_ssh_port_from_new != 22:
        host = f"[{host}]:{cfg.old_ssh_port_from_new}"
    return f"{host} {host_key}\n"


def read_old_host_key(s: Session) -> str:
    """old's ed25519 host key, read from old itself over the operator's verified connection."""
    host_key = s.old.fact(
        PublicKey(OLD_HOST_KEY),
        planned="<old's ed25519 host key>",
        then="compare it with what your own known_hosts holds for old "
        "(ssh-keygen -F OLD -f ~/.ssh/known_hosts): the two must match",
    )
    if host_key is None:
        raise StepFailed(f"old has no {OLD_HOST_KEY}; the tunnel pins old's ed25519 host key")
    return host_key


def unit_text(s: Session) -> str:
    cfg = s.settings
    return render(
        "tunnel.service.j2",
        old_address=cfg.old_address_from_new,
        ssh_port=cfg.old_ssh_port_from_new,
        key_path=KEY,
        known_hosts_path=KNOWN_HOSTS,
        tunnel_port=cfg.tunnel_port,
        pg_port=cfg.pg_port,
        ssh_user="postgres",
    )


def ensure_key(s: Session) -> str:
    """new's own key pair for the tunnel, created once."""
    with s.step(
        "tunnel key",
        "new gets a key pair of its own for the tunnel, used for nothing else",
        undo=f"ssh new -- sudo rm {KEY} {KEY}.pub",
    ):
        read = PublicKey(f"{KEY}.pub", "postgres")
        key = s.new.fact(read, then="when it prints a key, skip the next block")
        if not known(key) or key is None:
            s.new.run(
                Cmd(
                    f"mkdir -p -m 700 {SSH_DIR} && ssh-keygen -q -t ed25519 -N '' -C {UNIT} -f {KEY}",
                    user="postgres",
                )
            )
            key = s.new.fact(read, planned="<new's tunnel public key>")
        return key


def ensure_authorized(s: Session, key: str) -> None:
    with s.step(
        "authorize the tunnel key on old",
        "old lets that key forward to its PostgreSQL port and nothing else",
        undo=f"ssh old -- \"sudo -u postgres sed -i '/ {UNIT}$/d' {AUTHORIZED_KEYS}\"",
    ):
        line = authorized_line(s, key)
        present = s.old.fact(
            LinesWith(AUTHORIZED_KEYS, f" {UNIT}", "postgres"),
            then="when it prints exactly the line below, skip the next block",
        )
        if present != line:
            s.old.run(system.replace_lines(AUTHORIZED_KEYS, f" {UNIT}", line, user="postgres"))


def ensure_known_host(s: Session) -> None:
    with s.step(
        "pin old's host key on new",
        "the tunnel trusts exactly the key old's sshd presents, read from old itself",
        undo=f"ssh new -- sudo rm {KNOWN_HOSTS}",
    ):
        line = known_hosts_line(s, read_old_host_key(s))
        if (
            s.new.fact(
                FileText(KNOWN_HOSTS, "postgres"), then="when it prints the line below, skip the next block"
            )
            != line
        ):
            s.new.write_file(KNOWN_HOSTS, line, owner="postgres", mode="0644")


def _refuse_taken_port(s: Session) -> None:
    """The tunnel port must be free, or held by the tunnel's own ssh."""
    cfg = s.settings
    listeners = s.new.fact(Raw(Listeners(cfg.tunnel_port)))
    ours = s.new.fact(
        Raw(UnitProcess(UNIT)), then="a port held by anything but the tunnel's own ssh stops here"
    )
    port = checks.tunnel_port(cfg, listeners, ours) if known(listeners) else None
    if port and port.status == checks.FAIL:
        raise StepFailed(port.detail)


def ensure_unit(s: Session) -> None:
    cfg = s.settings
    with s.step(
        "tunnel unit",
        f"systemd keeps ssh -L 127.0.0.1:{cfg.tunnel_port} -> old:{cfg.pg_port} running on new",
        undo=f"ssh new -- 'sudo systemctl disable --now {UNIT} && sudo rm {UNIT_FILE}'",
    ):
        text = unit_text(s)
        changed = (
            s.new.fact(FileText(UNIT_FILE), then="when it prints the unit below, it need not be written")
            != text
        )
        state = s.new.fact(RUNNING, then="`active`: the tunnel runs; otherwise it is (re)started below")
        if state != "active":
            _refuse_taken_port(s)
        if changed:
            s.new.write_file(UNIT_FILE, text)
            s.new.run(system.systemctl("daemon-reload"))
        if changed or state != "active":
            s.new.run(system.systemctl("enable", UNIT))
            s.new.run(system.systemctl("restart", UNIT))
        s.new.wait_for(
            PgReady(cfg.tunnel_port),
            bool,
            what=f"old's PostgreSQL answers through the tunnel on 127.0.0.1:{cfg.tunnel_port}",
            timeout=30,
            show=lambda ok: "not yet",
        )


def ensure_tunnel(s: Session) -> None:
    with s.step(
        "tunnel",
        f"an ssh tunnel from new to old's PostgreSQL, on new's 127.0.0.1:{s.settings.tunnel_port}",
        undo="see each sub-step",
    ):
        key = ensure_key(s)
        ensure_authorized(s, key)
        ensure_known_host(s)
        ensure_unit(s)


def remove_tunnel(s: Session) -> None:
    with s.step(
        "remove the tunnel",
        "new no longer needs old's PostgreSQL: the unit, its key and pinned host key "
        "go, and old forgets the key",
        undo="not needed after the failover: phase 1 would create it again",
    ):
        if s.new.fact(INSTALLED, then="when it exits 1, skip the next block") is not False:
            s.new.run(system.systemctl("disable", "--now", UNIT))
            s.new.run(Cmd(f"rm -f {UNIT_FILE}"))
            s.new.run(system.systemctl("daemon-reload"))
        system.remove_files(s.new, KEY, f"{KEY}.pub", KNOWN_HOSTS)
        system.remove_marked_lines(s.old, AUTHORIZED_KEYS, f" {UNIT}", user="postgres")


@two_host_task
def tunnel(s: Session):
    """Install a persistent, locked-down ssh tunnel on new to old's PostgreSQL (systemd unit)."""
    ensure_tunnel(s)
