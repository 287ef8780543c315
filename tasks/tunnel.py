"""The ssh tunnels from new to old: one carries replication and, until failover, Mastodon's queries; the
other (phase 2 on, see streaming_relay) carries the streaming relay to old's Redis.

Each runs on new as postgres under systemd, with a key of its own that old accepts only for forwarding
to its one port; old's host key is pinned, never accepted blindly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from . import checks, system
from .command import Cmd, Session, StepFailed, known
from .executor import two_host_task
from .facts import (
    Fact,
    FileText,
    LinesWith,
    Listeners,
    PathExists,
    PgReady,
    PublicKey,
    Raw,
    UnitProcess,
    UnitState,
)
from .templates import render

UNIT = "mastodon-migration-tunnel"
UNIT_FILE = system.unit_file(UNIT)
SSH_DIR = "/var/lib/postgresql/.ssh"  # postgres's home on Debian, on both hosts
KEY = f"{SSH_DIR}/{UNIT}"
KNOWN_HOSTS = f"{SSH_DIR}/{UNIT}.known_hosts"
AUTHORIZED_KEYS = f"{SSH_DIR}/authorized_keys"
OLD_HOST_KEY = "/etc/ssh/ssh_host_ed25519_key.pub"
INSTALLED = PathExists(UNIT_FILE)  # the tunnel's "is this done?" (with the unit active): its unit file
RUNNING = UnitState(UNIT)


@dataclass(frozen=True)
class Tunnel:
    """What names one tunnel: its unit, and its key and pinned host key (named after the unit). Enough to
    remove it."""

    unit: str
    name: str  # for step names: "tunnel"

    @property
    def unit_file(self) -> str:
        return system.unit_file(self.unit)

    @property
    def key(self) -> str:
        return f"{SSH_DIR}/{self.unit}"

    @property
    def known_hosts(self) -> str:
        return f"{SSH_DIR}/{self.unit}.known_hosts"


@dataclass(frozen=True)
class Forward(Tunnel):
    """A tunnel to set up: ssh -L from new's 127.0.0.1:local_port to old's 127.0.0.1:remote_port."""

    what: str  # what it reaches on old, for messages: "old's PostgreSQL"
    local_port: int
    remote_port: int | str  # a string in a plan: a placeholder read from old's settings
    setting: str  # the setting that names local_port, for "change it" messages
    removed_by: str = "fab -H old,new cleanup --apply"
    # what shows that the forward carries, given its local port: by default that something listens there
    carries: Callable[[int], Fact] = Listeners


def postgres_forward(s: Session) -> Forward:
    cfg = s.settings
    return Forward(
        UNIT, "tunnel", "old's PostgreSQL", cfg.tunnel_port, cfg.pg_port, "TUNNEL_PORT", carries=PgReady
    )


def authorized_line(s: Session, key: str, forward: Forward | None = None) -> str:
    """old accepts the key for one forward only: no shell, no other port, no agent or pty."""
    forward = forward or postgres_forward(s)
    return (
        f'restrict,port-forwarding,permitopen="127.0.0.1:{forward.remote_port}",command="/bin/false" '
        f"{key} {forward.unit}\n"
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


def unit_text(s: Session, forward: Forward | None = None) -> str:
    cfg = s.settings
    forward = forward or postgres_forward(s)
    return render(
        "tunnel.service.j2",
        unit=forward.unit,
        what=forward.what,
        removed_by=forward.removed_by,
        old_address=cfg.old_address_from_new,
        ssh_port=cfg.old_ssh_port_from_new,
        key_path=forward.key,
        known_hosts_path=forward.known_hosts,
        local_port=forward.local_port,
        remote_port=forward.remote_port,
        ssh_user="postgres",
    )


def ensure_key(s: Session, forward: Forward) -> str:
    """new's own key pair for the tunnel, created once."""
    key_path = forward.key
    with s.step(
        f"{forward.name} key",
        "new gets a key pair of its own for this tunnel, used for nothing else",
        undo=f"ssh new -- sudo rm {key_path} {key_path}.pub",
    ):
        read = PublicKey(f"{key_path}.pub", "postgres")
        key = s.new.fact(read, then="when it prints a key, skip the next block")
        if not known(key) or key is None:
            s.new.run(
                Cmd(
                    f"mkdir -p -m 700 {SSH_DIR} && ssh-keygen -q -t ed25519 -N '' -C {forward.unit} "
                    f"-f {key_path}",
                    user="postgres",
                )
            )
            key = s.new.fact(read, planned=f"<new's {forward.name} public key>")
        return key


def ensure_authorized(s: Session, forward: Forward, key: str) -> None:
    with s.step(
        f"authorize the {forward.name} key on old",
        f"old lets that key forward to {forward.what} and nothing else",
        undo=f"ssh old -- \"sudo -u postgres sed -i '/ {forward.unit}$/d' {AUTHORIZED_KEYS}\"",
    ):
        line = authorized_line(s, key, forward)
        present = s.old.fact(
            LinesWith(AUTHORIZED_KEYS, f" {forward.unit}", "postgres"),
            then="when it prints exactly the line below, skip the next block",
        )
        if present != line:
            s.old.run(system.replace_lines(AUTHORIZED_KEYS, f" {forward.unit}", line, user="postgres"))


def ensure_known_host(s: Session, forward: Forward) -> None:
    with s.step(
        f"pin old's host key for the {forward.name}",
        "the tunnel trusts exactly the key old's sshd presents, read from old itself",
        undo=f"ssh new -- sudo rm {forward.known_hosts}",
    ):
        line = known_hosts_line(s, read_old_host_key(s))
        if (
            s.new.fact(
                FileText(forward.known_hosts, "postgres"),
                then="when it prints the line below, skip the next block",
            )
            != line
        ):
            s.new.write_file(forward.known_hosts, line, owner="postgres", mode="0644")


def _refuse_taken_port(s: Session, forward: Forward) -> None:
    """The local port must be free, or held by the tunnel's own ssh."""
    listeners = s.new.fact(Raw(Listeners(forward.local_port)))
    ours = s.new.fact(
        Raw(UnitProcess(forward.unit)), then="a port held by anything but the tunnel's own ssh stops here"
    )
    if not known(listeners):
        return
    port = checks.tunnel_port(s.settings, listeners, ours, forward.local_port, forward.setting)
    if port.status == checks.FAIL:
        raise StepFailed(port.detail)


def ensure_unit(s: Session, forward: Forward) -> None:
    with s.step(
        f"{forward.name} unit",
        f"systemd keeps ssh -L 127.0.0.1:{forward.local_port} -> old:{forward.remote_port} running on new",
        undo=f"ssh new -- 'sudo systemctl disable --now {forward.unit} && sudo rm {forward.unit_file}'",
    ):
        text = unit_text(s, forward)
        changed = (
            s.new.fact(
                FileText(forward.unit_file), then="when it prints the unit below, it need not be written"
            )
            != text
        )
        state = s.new.fact(
            UnitState(forward.unit), then="`active`: the tunnel runs; otherwise it is (re)started below"
        )
        if state != "active":
            _refuse_taken_port(s, forward)
        if changed:
            s.new.write_file(forward.unit_file, text)
            s.new.run(system.systemctl("daemon-reload"))
        if changed or state != "active":
            s.new.run(system.systemctl("enable", forward.unit))
            s.new.run(system.systemctl("restart", forward.unit))
        s.new.wait_for(
            forward.carries(forward.local_port),
            bool,
            what=f"{forward.what} answers through the tunnel on 127.0.0.1:{forward.local_port}",
            timeout=30,
            show=lambda ok: "not yet",
        )


def ensure_forward(s: Session, forward: Forward) -> None:
    key = ensure_key(s, forward)
    ensure_authorized(s, forward, key)
    ensure_known_host(s, forward)
    ensure_unit(s, forward)


def ensure_tunnel(s: Session) -> None:
    with s.step(
        "tunnel",
        f"an ssh tunnel from new to old's PostgreSQL, on new's 127.0.0.1:{s.settings.tunnel_port}",
        undo="see each sub-step",
    ):
        ensure_forward(s, postgres_forward(s))


def remove_forward(s: Session, forward: Tunnel, why: str) -> None:
    with s.step(
        f"remove the {forward.name}",
        f"{why}: the unit, its key and pinned host key go, and old forgets the key",
        undo="not needed after the failover: the phase that made it would create it again",
    ):
        system.remove_unit(s.new, forward.unit)
        system.remove_files(s.new, forward.key, f"{forward.key}.pub", forward.known_hosts)
        system.remove_marked_lines(s.old, AUTHORIZED_KEYS, f" {forward.unit}", user="postgres")


def remove_tunnel(s: Session) -> None:
    remove_forward(s, postgres_forward(s), "new no longer needs old's PostgreSQL")


@two_host_task
def tunnel(s: Session):
    """Install a persistent, locked-down ssh tunnel on new to old's PostgreSQL (systemd unit)."""
    ensure_tunnel(s)
