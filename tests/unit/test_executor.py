"""The phase executor folds Fabric's per-host calls of a two-host task into one call."""
from fabric import Config
from fabric.tasks import ConnectionCall
from invoke import Call, Collection, Context, ParserContext
from invoke.parser import Argument, ParseResult

from tasks.executor import Cluster, PhaseExecutor, TwoHostCall, one_host_task, two_host_task


@two_host_task
def pair(s):
    """a two-host task"""


@one_host_task("new")
def single(s):
    """a one-host task"""


def expand(hosts, *tasks):
    core = ParserContext(args=[Argument(names=("hosts", "H"), default=None)])
    if hosts:
        core.args.hosts.value = hosts
    parsed = ParseResult([core])
    parsed.remainder = ""
    executor = PhaseExecutor(Collection(pair, single), config=Config(), core=parsed)
    return executor.expand_calls([Call(t) for t in tasks])


def test_two_host_task_runs_once_with_every_host():
    calls = expand("old,new", pair)
    assert len(calls) == 1 and isinstance(calls[0], TwoHostCall)
    assert calls[0].aliases == ["old", "new"]
    context = calls[0].make_context(Config())
    assert isinstance(context, Cluster) and isinstance(context, Context)
    assert context.aliases == ["old", "new"]


def test_host_order_does_not_matter_and_no_hosts_is_one_call():
    assert expand("new,old", pair)[0].aliases == ["new", "old"]
    calls = expand(None, pair)
    assert len(calls) == 1 and calls[0].aliases == []


def test_one_host_tasks_keep_fabrics_per_host_calls():
    calls = expand("old,new", single)
    assert [type(c) for c in calls] == [ConnectionCall, ConnectionCall]
    assert [c.init_kwargs["host"] for c in calls] == ["old", "new"]


def test_mixed_command_line():
    calls = expand("old,new", pair, single, pair)
    assert [type(c).__name__ for c in calls] == ["TwoHostCall", "ConnectionCall", "ConnectionCall",
                                                 "TwoHostCall"]
