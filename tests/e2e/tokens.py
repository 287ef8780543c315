"""Test accounts and their access tokens, derived from the stand-in's seeding contract.

build/pair.json carries the contract (`tokens`, from docker/standin/contract.json); the token itself is asked
from the stand-in on old (`bin/standin token USERNAME`), so no formula is duplicated here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from .conftest import REPO


@dataclass(frozen=True)
class Account:
    username: str
    token: str


def token(pair, username: str) -> str:
    r = pair.exec("old", "runuser", "-u", "mastodon", "--", "/home/mastodon/live/bin/standin", "token",
                  username, check=True)
    return r.stdout.strip()


def follower_pair(pair) -> tuple[Account, Account]:
    """(author, follower): two active seeded accounts where the follower follows the author.

    Seeding rule: user i follows the next F accounts, so user0001 follows user0002; neither number is a
    multiple of 10 (those are the inactive users).
    """
    example = (pair.info.get("tokens") or {}).get("example") or {}
    follower = example.get("follower", "user0001")
    author = example.get("poster", "user0002")
    return Account(author, token(pair, author)), Account(follower, token(pair, follower))


def active_accounts(pair) -> list[Account]:
    """Every seeded account that is active (tootctl builds its feed), with its token: live traffic spreads
    over all of them, as real users do, and stays under Mastodon's per-token rate limits."""
    sizes = json.loads((REPO / "docker" / "standin" / "contract.json").read_text())["sizes"]
    size = pair.info.get("seed_size", "small")
    count = int(size) if str(size).isdigit() else sizes[size]["accounts"]
    names = [f"user{i:04d}" for i in range(1, count + 1) if i % 10]
    script = "; ".join(f"/home/mastodon/live/bin/standin token {name}" for name in names)
    tokens = pair.exec("old", "runuser", "-u", "mastodon", "--", "sh", "-c", script,
                       check=True).stdout.split()
    return [Account(name, token) for name, token in zip(names, tokens, strict=True)]
