"""The onComplete notifier: bounded, fair between teams, and honest about what it drops."""

import socket
import threading
import time
from collections import Counter

from asyncqueue.worker.http_client import LookupPool, make_session
from asyncqueue.worker.notifier import Delivery, Notifier, deliver_completion
from tests.support import wait_for
from tests.support.tasks import finished_row


class Receivers:
    """A fake delivery: teams named "slow…" block until released; everything else is instant."""

    def __init__(self):
        self.delivered: list[tuple[str, str]] = []
        self.release = threading.Event()
        self.open_slow = 0
        self.most_open_slow = 0
        self.lock = threading.Lock()

        self.slow_seconds = 20.0  # a slow receiver's time (the real limit is 10 s)
        self.open_by_team = Counter()
        self.most_open_by_team = Counter()

    def deliver(self, _session, delivery):
        team = delivery.team_id
        if team.startswith("slow"):
            with self.lock:
                self.open_slow += 1
                self.most_open_slow = max(self.most_open_slow, self.open_slow)
                self.open_by_team[team] += 1
                self.most_open_by_team[team] = max(
                    self.most_open_by_team[team], self.open_by_team[team]
                )
            self.release.wait(self.slow_seconds)
            with self.lock:
                self.open_slow -= 1
                self.open_by_team[team] -= 1
        with self.lock:
            self.delivered.append((team, delivery.task_id))

    def count(self, team):
        with self.lock:
            return sum(1 for t, _ in self.delivered if t == team)


SIZES: dict = {}  # an event's payload size, by its task id


def event(team, size=0):
    row = finished_row(team_id=team, on_complete_url="http://r.test/")
    SIZES[row.id] = size
    return row


def payload(row):
    return "x" * SIZES[row.id]


def notifier_for(receivers, **kwargs):
    return Notifier(lambda: None, receivers.deliver, payload=payload, **kwargs)


def test_one_teams_slow_receivers_do_not_hold_up_the_others():
    receivers = Receivers()
    notifier = notifier_for(receivers, threads=6)
    notifier.start()
    try:
        for _ in range(50):
            notifier.put(event("slow"))  # 50 events to a receiver that hangs
        for _ in range(20):
            notifier.put(event("quick"))
        wait_for(lambda: receivers.count("quick") == 20, timeout=10, message="quick team")
        assert receivers.most_open_slow <= 3  # the slow team held its share of threads
        assert receivers.count("slow") == 0
    finally:
        receivers.release.set()
        notifier.stop(10)
    assert receivers.count("slow") == 50


def test_teams_take_turns():
    receivers = Receivers()
    notifier = notifier_for(receivers, threads=1)
    for team in ["a"] * 5 + ["b"] * 5:
        notifier.put(event(team))
    notifier.start()
    notifier.stop(10)
    assert [t for t, _ in receivers.delivered] == ["a", "b"] * 5


def test_the_queue_is_bounded_per_team_and_in_all():
    receivers = Receivers()
    notifier = notifier_for(receivers, threads=1, max_queued=10, max_queued_per_team=4)
    accepted = [notifier.put(event("a")) for _ in range(6)]
    assert accepted == [True] * 4 + [False] * 2  # team a is full; others still have room
    accepted = [notifier.put(event(f"t{i}")) for i in range(8)]
    assert accepted == [True] * 6 + [False] * 2  # and 10 in all
    assert notifier.dropped == 4


def test_at_exit_queued_events_get_the_time_left_then_are_dropped_and_counted():
    receivers = Receivers()
    notifier = notifier_for(receivers, threads=1)
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


def test_five_slow_teams_leave_threads_for_a_healthy_one():
    """With 8 threads and 2 per team, 4 slow teams would hold every thread and a healthy team
    would get a delivery now and then: the share leaves room for it."""
    receivers = Receivers()
    receivers.slow_seconds = 1.0  # each slow delivery ends at its (scaled) time limit
    notifier = notifier_for(receivers, threads=8)
    notifier.start()
    try:
        for _ in range(30):
            for i in range(5):
                notifier.put(event(f"slow{i}"))
        wait_for(lambda: receivers.open_slow >= 5, timeout=10, message="slow teams started")
        for _ in range(200):
            assert notifier.put(event("healthy"))
        wait_for(lambda: receivers.count("healthy") == 200, timeout=8, message="healthy team")
        assert max(receivers.most_open_by_team.values()) <= 2  # a quarter of the threads
    finally:
        receivers.release.set()
        notifier.stop(20)
    assert all(receivers.count(f"slow{i}") == 30 for i in range(5))


def test_the_queue_is_bounded_in_bytes():
    receivers = Receivers()
    notifier = notifier_for(
        receivers, threads=1, max_queued_bytes=100_000, max_queued_bytes_per_team=40_000
    )
    accepted = [notifier.put(event("a", 15_000)) for _ in range(3)]
    assert accepted == [True, True, False]  # team a's 40 KB
    accepted = [notifier.put(event(f"t{i}", 15_000)) for i in range(6)]
    assert accepted == [True] * 4 + [False] * 2  # 100 KB in all
    assert notifier.dropped == 3


def test_a_delivery_looks_its_name_up_on_its_teams_share(receiver):
    looking, answer = threading.Event(), threading.Event()

    def lookup(host, port, *args):  # (a stand-in resolver: no real one is asked)
        looking.set()
        answer.wait(10)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]

    pool = LookupPool(threads=4, lookup=lookup)
    session = make_session(allow_private=True, lookups=pool)
    delivery = Delivery("t1", "team-a", f"http://r.test:{receiver.port}/ok/done", "{}")
    thread = threading.Thread(target=deliver_completion, args=(session, delivery))
    thread.start()
    try:
        assert looking.wait(10)
        assert pool.book.running("team-a") == 1
    finally:
        answer.set()
        thread.join(15)
        pool.close()
    assert len(receiver.calls("/ok/done")) == 1
