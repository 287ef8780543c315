import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "env" / "example.env"


@pytest.fixture
def example_settings():
    from tasks import settings
    return settings.load(EXAMPLE)


def fab(*args, env_file=EXAMPLE, **env):
    """Run the real `fab` command line from the project folder."""
    environment = dict(os.environ, MIGRATION_ENV=str(env_file), **env)
    executable = Path(sys.executable).with_name("fab")
    return subprocess.run([str(executable), *args], cwd=ROOT, env=environment,
                          capture_output=True, text=True, timeout=60)
