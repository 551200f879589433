"""The onComplete notifier: bounded, fair between teams, and honest about what it drops."""

import threading
import time
import uuid

from asyncqueue.worker.notifier import Notifier
from tests.support import wait_for


class Receivers:
    """A fake delivery: team "slow" blocks until released; everything else is instant."""

    def __init__(self):
        self.delivered: list[tuple[str, str]] = []
        self.release = threading.Event()
        self.open_slow = 0
        self.most_open_slow = 0
        self.lock = threading.Lock()

    def deliver(self, _session, row):
        if row["team_id"] == "slow":
            with self.lock:
                self.open_slow += 1
                self.most_open_slow = max(self.most_open_slow, self.open_slow)
            self.release.wait(20)
            with self.lock:
                self.open_slow -= 1
        with self.lock:
            self.delivered.append((row["team_id"], row["id"]))

    def count(self, team):
        with self.lock:
            return sum(1 for t, _ in self.delivered if t == team)


def event(team):
    return {"id": uuid.uuid4().hex, "team_id": team}


def test_one_teams_slow_receivers_do_not_hold_up_the_others():
    receivers = Receivers()
    notifier = Notifier(lambda: None, receivers.deliver, threads=4, per_team=2)
    notifier.start()
    try:
        for _ in range(50):
            notifier.put(event("slow"))  # 50 events to a receiver that hangs
        for _ in range(20):
            notifier.put(event("quick"))
        wait_for(lambda: receivers.count("quick") == 20, timeout=10, message="quick team")
        assert receivers.most_open_slow == 2  # the slow team held two threads, no more
        assert receivers.count("slow") == 0
    finally:
        receivers.release.set()
        notifier.stop(10)
    assert receivers.count("slow") == 50


def test_teams_take_turns():
    receivers = Receivers()
    notifier = Notifier(lambda: None, receivers.deliver, threads=1, per_team=1)
    for team in ["a"] * 5 + ["b"] * 5:
        notifier.put(event(team))
    notifier.start()
    notifier.stop(10)
    assert [t for t, _ in receivers.delivered] == ["a", "b"] * 5


def test_the_queue_is_bounded_per_team_and_in_all():
    receivers = Receivers()
    notifier = Notifier(
        lambda: None, receivers.deliver, threads=1, max_queued=10, max_queued_per_team=4
    )
    accepted = [notifier.put(event("a")) for _ in range(6)]
    assert accepted == [True] * 4 + [False] * 2  # team a is full; others still have room
    accepted = [notifier.put(event(f"t{i}")) for i in range(8)]
    assert accepted == [True] * 6 + [False] * 2  # and 10 in all
    assert notifier.dropped == 4


def test_at_exit_queued_events_get_the_time_left_then_are_dropped_and_counted():
    receivers = Receivers()
    notifier = Notifier(lambda: None, receivers.deliver, threads=1, per_team=1)
    notifier.start()
    notifier.put(event("slow"))  # occupies the only thread
    for _ in range(3):
        notifier.put(event("quick"))
    started = time.monotonic()
    dropped = notifier.stop(0.3)
    assert 0.25 < time.monotonic() - started < 5
    assert dropped == 3
    assert notifier.put(event("quick")) is False  # nothing is taken after stop
    receivers.release.set()
