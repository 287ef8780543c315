"""The layering of tasks/: imports point down only (no cycles), the ground imports nothing of the ssh
layer, and only the output channel writes to the terminal."""
import ast
from pathlib import Path

TASKS = Path(__file__).resolve().parents[2] / "tasks"
GROUND = {"core", "settings", "shell", "templates", "facts", "checks", "output", "sidekiq_jobs",
          "mastodon_env", "dns.records", "dns.answers", "dns.state", "dns.manual", "dns.cloudflare",
          "dns.rfc2136", "files", "redis_cli"}


def modules() -> dict[str, ast.Module]:
    found = {}
    for path in TASKS.rglob("*.py"):
        name = ".".join(path.relative_to(TASKS).with_suffix("").parts)
        found[name.removesuffix(".__init__")] = ast.parse(path.read_text())
    return found


def imports(name: str, tree: ast.Module) -> set[str]:
    package = name.split(".")[:-1] if "." in name else []
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = (package[: len(package) - (node.level - 1)] if node.level > 1 else package)
            target = [*base, *(node.module.split(".") if node.module else [])]
            if node.module:
                found.add(".".join(target))
            for alias in node.names:
                found.add(".".join([*target, alias.name]))
    return found


def test_imports_point_down_only():
    trees = modules()
    graph = {name: {i for i in imports(name, tree) if i in trees and i != name}
             for name, tree in trees.items()}
    for name in GROUND:
        assert graph[name] <= GROUND, f"{name} imports {graph[name] - GROUND}"
    assert "runbook" not in graph["status"]
    visiting, done = set(), set()

    def visit(name, path):
        assert name not in visiting, "import cycle: " + " -> ".join([*path, name])
        if name in done:
            return
        visiting.add(name)
        for other in graph[name]:
            visit(other, [*path, name])
        visiting.discard(name)
        done.add(name)

    for name in graph:
        visit(name, [])


def test_only_the_output_channel_prints():
    printing = [name for name, tree in modules().items()
                if any(isinstance(n, ast.Call) and getattr(n.func, "id", "") == "print"
                       for n in ast.walk(tree))]
    assert printing == ["output"]
