"""Load stages as data: each row holds a number of users for a while.

A row is (duration in seconds, users, spawn rate in users per second); the
rows run one after another and the run ends after the last. The user counts
reach at least the five scenarios, so every selected user class gets a user.
"""

from __future__ import annotations

from typing import NamedTuple


class Stage(NamedTuple):
    seconds: float
    users: int
    spawn_rate: float


STAGES: dict[str, list[Stage]] = {
    # Every scenario once, gently: does everything answer correctly?
    "smoke": [Stage(10, 5, 5)],
    # Climb in steps to find where latency bends.
    "ramp": [Stage(30, 5, 1), Stage(30, 10, 1), Stage(30, 20, 2), Stage(30, 40, 4), Stage(30, 60, 4)],
    # A steady load, a burst at four times it, and back: does it recover?
    "spike": [Stage(30, 10, 10), Stage(20, 40, 40), Stage(40, 10, 10)],
    # A long steady load, for leaks and drift.
    "steady": [Stage(600, 16, 4)],
}


def stage_at(stages: list[Stage], elapsed: float) -> Stage | None:
    """The stage running ``elapsed`` seconds into the run, or None once all have run."""
    end = 0.0
    for stage in stages:
        end += stage.seconds
        if elapsed < end:
            return stage
    return None


def total_seconds(stages: list[Stage]) -> float:
    return sum(stage.seconds for stage in stages)


def peak_users(stages: list[Stage]) -> int:
    return max(stage.users for stage in stages)
