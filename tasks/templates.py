"""Jinja rendering of the files this tool writes on the hosts (templates/)."""

from __future__ import annotations

import os
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined

TEMPLATE_DIR = Path(__file__).resolve().parent.parent / "templates"


def render(name: str, **values) -> str:
    """Render templates/NAME (or NAME from $MIGRATION_TEMPLATE_DIR, for a customised copy);
    a value the template needs but is not given is an error, not a blank."""
    directory = os.environ.get("MIGRATION_TEMPLATE_DIR") or TEMPLATE_DIR
    env = Environment(
        loader=FileSystemLoader(str(directory)),
        undefined=StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return env.get_template(name).render(**values)
