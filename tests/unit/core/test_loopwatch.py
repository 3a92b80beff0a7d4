"""The loop watch: lost and late loops, the alarm with its hysteresis, and the suspects."""

from __future__ import annotations

import random

import pytest

from anonmail.core.loopwatch import LoopWatch

pytestmark = pytest.mark.unit


def send_many(watch: LoopWatch, rng: random.Random, n: int, now: float, *, drop_through: str | None,
              start: int = 0) -> None:
    """n loops over random three-mix routes; those through ``drop_through`` never come back."""
    for i in range(start, start + n):
        route = ("home", rng.choice(["m1a", "m1b"]), rng.choice(["m2a", "m2b"]), rng.choice(["m3a", "m3b"]), "home")
        loop_id = i.to_bytes(8, "big")
        watch.sent(loop_id, now, route)
        if drop_through not in route:
            watch.returned(loop_id)


def test_a_healthy_network_raises_no_alarm_and_a_lone_loss_is_no_suspect_list():
    watch = LoopWatch(timeout=60)
    send_many(watch, random.Random(1), 200, 0.0, drop_through=None)
    assert watch.expire(1000.0) == 0
    verdict = watch.verdict()
    assert (verdict.resolved, verdict.lost, verdict.alarm, verdict.suspects) == (100, 0, False, ())


def test_attack_a_mix_that_drops_is_an_alarm_and_the_first_suspect():
    watch = LoopWatch(timeout=60)
    rng = random.Random(2)
    send_many(watch, rng, 100, 0.0, drop_through="m2b")
    assert watch.pending > 20 and not watch.alarm  # not lost until the timeout
    assert watch.expire(59.0) == 0
    lost = watch.expire(61.0)
    assert lost == watch.lost_total > 20
    verdict = watch.verdict()
    assert verdict.alarm and verdict.loss_rate > 0.3
    node, lost_through, known_through = verdict.suspects[0]
    assert node == "m2b" and lost_through == known_through  # every loop through it was lost
    assert all(n != "home" for n, _, _ in verdict.suspects)  # on every route: not singled out
    assert verdict.to_json()["loop_suspects"][0]["node"] == "m2b"


def test_late_loops_are_not_lost_and_the_alarm_clears_with_hysteresis():
    watch = LoopWatch(timeout=10, window=40, min_resolved=20, alarm_rate=0.2)
    for i in range(40):
        watch.sent(bytes([i]), 0.0, ("a",))
    assert watch.expire(11.0) == 40 and watch.alarm
    for i in range(30):  # a slow network: they arrive after all
        assert watch.returned(bytes([i]))
    assert watch.late_total == 30 and watch.lost_total == 10
    assert watch.alarm  # 10 of 40 lost: still above 20 %
    for i in range(30, 34):
        watch.returned(bytes([i]))
    assert watch.verdict().lost == 6 and watch.alarm  # 15 %: below the rate, not yet below half of it
    for i in range(34, 37):
        watch.returned(bytes([i]))
    assert not watch.alarm  # 3 of 40 = 7.5 %
    assert not watch.returned(b"never sent")


def test_too_few_loops_never_alarm_and_in_flight_loops_are_bounded():
    watch = LoopWatch(timeout=10, min_resolved=20, max_pending=50)
    for i in range(19):
        watch.sent(bytes([i]), 0.0, ("a",))
    watch.expire(100.0)
    assert watch.lost_total == 19 and not watch.alarm
    for i in range(100):
        watch.sent(i.to_bytes(2, "big") + b"x", 200.0, ("b",))
    assert watch.pending == 50  # the oldest count as lost
    with pytest.raises(ValueError):
        LoopWatch(timeout=0)
