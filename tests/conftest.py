"""Shared by every test: the BIND fixtures (`bind`, `bind_server`) registered as a plugin, so tests use
them without importing them; and, under `make test`, a skipped test counts as a failure."""
import os

pytest_plugins = ["tests.fakes.bind"]


def pytest_sessionfinish(session, exitstatus):
    """`make test` sets MASTOMIG_NO_SKIP: it installed and started everything the tests need, so a test
    skipped for a missing tool is a failure (`make test-unit` is the choice to run without Docker)."""
    if not os.environ.get("MASTOMIG_NO_SKIP") or exitstatus != 0:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = len(reporter.stats.get("skipped", [])) if reporter else 0
    if skipped:
        reporter.write_line(f"{skipped} test(s) skipped under make test: each is a failure here", red=True)
        session.exitstatus = 1
