"""Test accounts and their access tokens, derived from the stand-in's seeding contract.

build/pair.json carries the contract (`tokens`, from docker/standin/contract.json); the token itself is asked
from the stand-in on old (`bin/standin token USERNAME`), so no formula is duplicated here.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Account:
    username: str
    token: str


def token(pair, username: str) -> str:
    r = pair.exec("old", "runuser", "-u", "mastodon", "--", "/home/mastodon/live/bin/standin", "token", username,
                  check=True)
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
