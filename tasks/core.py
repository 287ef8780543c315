"""The smallest shared vocabulary: a secret, a step that failed, and the unknown value of a plan.

Imports nothing, so every module can use it: the DNS modules without pulling in the ssh layer.
"""

from __future__ import annotations


class Secret:
    """A value that must never be printed, logged or put on a command line.

    `where`: where it is kept, shown in its place (`<secret: WHERE>`). `how`: for a secret the tool
    makes up, how a person following the runbook makes one (a plan cannot show the value it will use)."""

    def __init__(self, value: str, where: str, how: str = ""):
        self._value = value
        self.where = where
        self.how = how

    def reveal(self) -> str:
        return self._value

    def __str__(self) -> str:
        return f"<secret: {self.where}>"

    __repr__ = __str__


class StepFailed(Exception):
    """A step could not reach its goal (a wait timed out, a verification failed); the message says
    what state the hosts are in and what to do."""


class _Unknown:
    """The value of a fact in a run that connects to nothing."""

    def __bool__(self):
        return False

    def __repr__(self):
        return "UNKNOWN"


UNKNOWN = _Unknown()


def known(value) -> bool:
    """False for a fact's value in a plan: code that skips work must skip only on known facts."""
    return value is not UNKNOWN
