"""Fabric plumbing: how `fab` calls our tasks, and how a task gets its `Session`.

Fabric runs a task once per `-H` host. Two-host tasks (the phases, and tasks such as `tunnel`
that act on both hosts) must run ONCE with both: `PhaseExecutor`, selected in fabric.yaml by
`tasks.executor_class`, folds the per-host calls of such a task into one call whose context knows
every host. One-host tasks keep Fabric's per-host behaviour.
"""

from __future__ import annotations

import functools
import traceback
from pathlib import Path

from fabric import Connection, Executor, Task
from fabric.tasks import ConnectionCall
from invoke import Call, Context
from invoke.exceptions import Exit
from paramiko import AutoAddPolicy, RejectPolicy

from . import settings as settings_module
from .command import CommandFailed, HostUnreachable, Live, Plan, Remote, RunLog, Session, StepFailed

ROLES = ("old", "new")


class TwoHostTask(Task):
    """A task whose body runs once per `fab` invocation with both hosts."""


class Cluster(Context):
    """The context of a two-host task: the config and the aliases given with -H (maybe none)."""

    def __init__(self, config, aliases):
        super().__init__(config=config)
        self._set(aliases=list(aliases))


class TwoHostCall(Call):
    def __init__(self, *args, aliases=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.aliases = list(aliases)

    def clone_kwargs(self):
        return dict(super().clone_kwargs(), aliases=self.aliases)

    def make_context(self, config, **_):  # invoke 3 adds core_parse_result
        return Cluster(config, self.aliases)


class PhaseExecutor(Executor):
    """Fabric's executor, except that the per-host calls of a two-host task fold into one."""

    def expand_calls(self, calls, apply_hosts=True):
        out = []
        for call in super().expand_calls(calls, apply_hosts=apply_hosts):
            if not isinstance(call.task, TwoHostTask):
                out.append(call)
                continue
            alias = call.init_kwargs["host"] if isinstance(call, ConnectionCall) else None
            previous = out[-1] if out else None
            if isinstance(previous, TwoHostCall) and previous.task is call.task:
                previous.aliases.append(alias)
                continue
            out.append(
                TwoHostCall(
                    call.task,
                    called_as=call.called_as,
                    args=call.args,
                    kwargs=call.kwargs,
                    aliases=[alias] if alias else [],
                )
            )
        return out


# --- from a Fabric context to a Session -----------------------------------------------------------


def _known_hosts_setup(cfg: settings_module.Settings):
    """Host keys are checked against the operator's known_hosts; Fabric alone would accept any."""

    def prepare(connection: Connection) -> Path:
        configured = connection.ssh_config.get("userknownhostsfile", "~/.ssh/known_hosts").split()[0]
        path = (cfg.ssh_known_hosts or Path(configured)).expanduser()
        client = connection.client
        if path.is_file():
            client.load_host_keys(str(path))
        elif cfg.ssh_accept_new_host_keys:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch(mode=0o600)
            client.load_host_keys(str(path))
        client.set_missing_host_key_policy(
            AutoAddPolicy() if cfg.ssh_accept_new_host_keys else RejectPolicy()
        )
        return path

    return prepare


def _session(c, cfg: settings_module.Settings, roles: dict[str, str]) -> Session:
    """roles: role -> ssh alias of the hosts this task uses."""
    dry = bool(c.config.run.dry)
    try:
        mode = Plan() if dry else Live(RunLog(cfg.log_file))
    except StepFailed as error:  # a run log that others can read: refused before anything runs
        raise Exit(str(error), code=2) from None
    session = Session(mode=mode, settings=cfg)
    prepare = _known_hosts_setup(cfg)
    for role, alias in roles.items():
        connection = None if dry else Connection(alias, config=c.config)
        session.hosts[role] = Remote(role, alias, mode, connection, prepare)
    return session


def _two_host_roles(c: Cluster, name: str) -> tuple[settings_module.Settings, dict[str, str]]:
    """The settings and role -> alias; a missing role is reported first, even with bad settings."""
    try:
        cfg = settings_module.load()
    except settings_module.SettingsError as error:
        if len(c.aliases) == 1:  # the structural mistake needs no settings to be named
            missing = "new" if c.aliases[0] == "old" else "old"
            raise Exit(
                f"{name} acts on both hosts: missing role {missing}. Run: fab -H old,new {name}", code=2
            ) from None
        raise Exit(str(error), code=2) from None
    roles = cfg.roles
    given = c.aliases or list(roles.values())
    missing = [f"{role} ({alias})" for role, alias in roles.items() if alias not in given]
    unknown = [alias for alias in given if alias not in roles.values()]
    if missing or unknown:
        problem = f"missing role {', '.join(missing)}" if missing else ""
        if unknown:
            problem += ("; " if problem else "") + f"{', '.join(unknown)} is not OLD_SSH or NEW_SSH"
        raise Exit(
            f"{name} acts on both hosts: {problem}. Run: fab -H {cfg.old_ssh},{cfg.new_ssh} {name}", code=2
        )
    return cfg, roles


def _one_host_role(c, cfg: settings_module.Settings, name: str, allowed: tuple[str, ...]) -> dict[str, str]:
    if not isinstance(c, Connection):  # no -H: the task's usual host
        return {allowed[0]: cfg.roles[allowed[0]]}
    alias = c.original_host
    role = next((r for r, a in cfg.roles.items() if a == alias), None)
    if role not in allowed:
        wanted = " or ".join(f"{r} ({cfg.roles[r]})" for r in allowed)
        raise Exit(
            f"{name} runs on {wanted}; -H {alias} is "
            + (f"the {role} host." if role else "neither OLD_SSH nor NEW_SSH in the settings."),
            code=2,
        )
    return {role: alias}


def _load_settings() -> settings_module.Settings:
    try:
        return settings_module.load()
    except settings_module.SettingsError as error:
        raise Exit(str(error), code=2) from None


def _again(session: Session, name: str) -> str:
    return f"fab -H {','.join(r.alias for r in session.hosts.values())} {name}"


def _run_body(body, session: Session, name: str, kwargs) -> None:
    """Run a task body; failures become one clear message and a non-zero exit, and are logged. Nothing
    reaches the operator as a traceback: the unforeseen (a dropped connection mid-command, an answer of an
    unexpected shape, Ctrl-C) is named, with the command that continues; its traceback goes to the run log."""
    log = session.mode.log if isinstance(session.mode, Live) else None
    if log:
        log.write(task=name, hosts=[r.alias for r in session.hosts.values()], event="start")
    try:
        body(session, **kwargs)
    except CommandFailed as error:
        failure = Exit(f"{name} failed {error}", code=1)
    except (HostUnreachable, StepFailed) as error:
        failure = Exit(f"{name}: {error}", code=1)
    except Exit as error:
        failure = error
    except KeyboardInterrupt:
        failure = Exit(
            f"{name} was interrupted. Every step checks the hosts before it acts: run "
            f"{_again(session, name)} to continue where it stopped.",
            code=130,
        )
    except Exception as error:  # noqa: BLE001 - the operator gets a sentence; the run log keeps the trace
        if log:
            log.write(task=name, event="unexpected", traceback=traceback.format_exc()[-4000:])
        failure = Exit(
            f"{name} stopped on something it did not expect ({type(error).__name__}: {error}). Every step "
            f"checks the hosts before it acts: run {_again(session, name)} to continue where it stopped; the "
            f"details are in the run log {session.settings.log_file}.",
            code=1,
        )
    else:
        failure = None
    finally:
        session.close()
    if log:
        log.write(
            task=name, event="failed" if failure else "done", error=failure.message if failure else None
        )
    if failure:
        raise failure


def two_host_task(body=None, **task_kwargs):
    """A task on both hosts at once: `fab -H old,new NAME`. The body receives a Session."""

    def decorate(body):
        name = body.__name__.replace("_", "-")

        @functools.wraps(body)
        def wrapper(c, **kwargs):
            if not isinstance(c, Cluster):
                raise Exit(f"{name} needs PhaseExecutor: run fab from the project folder (fabric.yaml).")
            cfg, roles = _two_host_roles(c, name)
            _run_body(body, _session(c, cfg, roles), name, kwargs)

        return TwoHostTask(wrapper, **task_kwargs)

    return decorate(body) if body else decorate


def one_host_task(*roles, **task_kwargs):
    """A task on one host: `fab -H ALIAS NAME`; `roles` lists where it may run (first = default)."""
    allowed = roles or ROLES

    def decorate(body):
        name = body.__name__.replace("_", "-")

        @functools.wraps(body)
        def wrapper(c, **kwargs):
            cfg = _load_settings()
            _run_body(body, _session(c, cfg, _one_host_role(c, cfg, name, allowed)), name, kwargs)

        return Task(wrapper, **task_kwargs)

    return decorate
