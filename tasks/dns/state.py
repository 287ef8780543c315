"""What the DNS steps remember between runs, in a JSON file next to the run log: each record's
original TTL, when its TTL was lowered, and when (and with which TTL) it was switched to new."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timezone
from pathlib import Path

from ..core import StepFailed
from ..files import write_private
from ..settings import Settings


def now() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)


@dataclass
class RecordState:
    original_ttl: int | None = None
    lowered_at: datetime | None = None  # None: the TTL was not lowered by us (or was restored since)
    switched_at: datetime | None = None
    ttl_at_switch: int | None = None  # what resolvers may cache the old value for, from switched_at


class DnsState:
    def __init__(self, path: Path, records: dict[str, RecordState]):
        self.path = path
        self.records = records

    @classmethod
    def load(cls, cfg: Settings) -> DnsState:
        path = cfg.log_dir / f"{cfg.path.stem}.dns.json"
        if not path.exists():
            return cls(path, {})
        try:
            raw = json.loads(path.read_text())["records"]
            return cls(
                path,
                {
                    key: RecordState(
                        **{f.name: _decode(f.name, value.get(f.name)) for f in fields(RecordState)}
                    )
                    for key, value in raw.items()
                },
            )
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise StepFailed(
                f"{path} is damaged ({error}); it holds the original TTLs: repair it, or delete it "
                "and check the TTLs yourself with dns --plan"
            ) from None

    def entry(self, key: str) -> RecordState:
        return self.records.setdefault(key, RecordState())

    def save(self) -> None:
        """Written whole and renamed into place: an interrupted run never leaves half a file."""
        records = {
            key: {k: _encode(v) for k, v in asdict(state).items()} for key, state in self.records.items()
        }
        write_private(self.path, json.dumps({"records": records}, indent=2) + "\n")


def _encode(value):
    return value.isoformat() if isinstance(value, datetime) else value


def _decode(name: str, value):
    return datetime.fromisoformat(value) if value is not None and name.endswith("_at") else value
