"""Settings files and sessions for the DNS tests: the example settings plus DNS keys, logs in tmp_path."""
from __future__ import annotations

import io
import json
from datetime import datetime, timedelta
from pathlib import Path

from tasks import settings
from tasks.command import Live, Remote, RunLog, Session
from tests.unit.test_command import ScriptedConnection

EXAMPLE = Path(__file__).resolve().parents[2] / "env" / "example.env"


def env_file(tmp_path: Path, **keys) -> Path:
    """A settings file: env/example.env, then `keys` (later lines win)."""
    keys = {"LOG_DIR": str(tmp_path / "logs"), **keys}
    path = tmp_path / "migration.env"
    path.write_text(EXAMPLE.read_text() + "".join(f"\n{key}={value}" for key, value in keys.items()) + "\n")
    return path


def load(tmp_path: Path, **keys) -> settings.Settings:
    return settings.load(env_file(tmp_path, **keys))


def rfc2136_keys(bind, key_file: Path | None = None) -> dict:
    return {"DNS_PROVIDER": "rfc2136", "RFC2136_SERVER": "127.0.0.1", "RFC2136_PORT": bind.port,
            "RFC2136_KEY_NAME": "migration.key", "RFC2136_KEY_FILE": key_file or bind.key_file}


def live(cfg: settings.Settings, *old_answers) -> tuple[Session, io.StringIO]:
    """A real-run session whose hosts are scripted (old replays `old_answers`); what it says is in the
    buffer."""
    echo = io.StringIO()
    mode = Live(RunLog(cfg.log_file), echo=echo)
    hosts = {"old": Remote("old", "old", mode, ScriptedConnection(*old_answers)),
             "new": Remote("new", "new", mode, ScriptedConnection())}
    return Session(mode, cfg, hosts), echo


def state_file(cfg: settings.Settings) -> Path:
    return cfg.log_dir / f"{cfg.path.stem}.dns.json"


def age_lowering(cfg: settings.Settings, seconds: float) -> None:
    """Move every recorded lowering `seconds` into the past, as if that much time had gone by."""
    path = state_file(cfg)
    state = json.loads(path.read_text())
    for entry in state["records"].values():
        if entry["lowered_at"]:
            lowered_at = datetime.fromisoformat(entry["lowered_at"]) - timedelta(seconds=seconds)
            entry["lowered_at"] = lowered_at.isoformat()
    path.write_text(json.dumps(state))
