"""The worker's name lookups shared between teams, against a resolver the test injects into the
transport (never a real one) and a receiver on 127.0.0.1: one team's names that never answer
hold only its share of the lookup threads, lookups nobody waits for are never run, and failures
are remembered briefly."""

import socket
import threading

import pytest

from asyncqueue.worker import http_client
from asyncqueue.worker.attempt import CallSpec
from asyncqueue.worker.deadline import Deadline
from asyncqueue.worker.execute import perform_attempt
from asyncqueue.worker.resolver import MAX_SHARE_FRACTION
from tests.support import report, wait_for
from tests.support.raw_http import FakeResolver

ATTACK_THREADS = 8
SLOW = 120.0  # seconds the slow names take to answer (cut short by release() at the end)


def no_real_resolver(host, *args, **kwargs):
    raise socket.gaierror(socket.EAI_NONAME, f"{host} is not a test name")


@pytest.fixture
def pools():
    """Lookup pools for the test's clients (closed at its end): pools(lookup, **limits)."""
    made = []

    def make(lookup, **kwargs):
        made.append(http_client.LookupPool(lookup=lookup, **kwargs))
        return made[-1]

    yield make
    for pool in made:
        pool.close()


@pytest.fixture
def names(pools):
    """(fake resolver, a lookup pool using it): the pool the test's clients are given."""
    fake = FakeResolver(no_real_resolver)
    yield fake, pools(fake)
    fake.release()


def call(pool, url, team, seconds=5.0):
    client = http_client.make_session(allow_private=True, lookups=pool)
    try:
        spec = CallSpec("GET", url, {}, None)
        return perform_attempt(client, spec, Deadline.after(seconds), 1024, team=team)
    finally:
        client.close()


def slow_lookups(fake) -> int:
    return sum(1 for host in fake.lookups if host.endswith(".slow.test"))


def test_one_teams_slow_names_hold_only_its_share_and_other_teams_go_on(receiver, names):
    fake, pool = names
    fake.add("quick.test", "127.0.0.1")
    port, stop, attempts = receiver.port, threading.Event(), []

    def attacker(t):
        for i in range(10_000):  # (bounded; stopped long before)
            if stop.is_set():
                return
            name = f"a{t}-{i}.slow.test"  # a new name each time
            fake.add(name, "127.0.0.1", delay=SLOW)
            attempts.append(call(pool, f"http://{name}:{port}/ok/a", "attacker", seconds=0.2))

    threads = [threading.Thread(target=attacker, args=(t,)) for t in range(ATTACK_THREADS)]
    for thread in threads:
        thread.start()
    try:
        # More attempts than there are lookup threads, each to a name that never answers.
        wait_for(lambda: len(attempts) >= 64, timeout=60)
        victim = [
            call(pool, f"http://quick.test:{port}/ok/v{i}", "victim", seconds=5) for i in range(10)
        ]
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    assert [r.status_code for r in victim] == [200] * 10, victim[0]
    assert all(r.timed_out for r in attempts)
    share = http_client.RESOLVER_THREADS // MAX_SHARE_FRACTION
    assert slow_lookups(fake) <= share  # the attacker's share of the threads, no more
    # Every attacker attempt has ended: nothing of theirs is left to run once the threads free.
    wait_for(lambda: pool.book.queued == 0, timeout=10)
    fake.release()
    wait_for(lambda: pool.book.running("attacker") == 0, timeout=10)
    assert slow_lookups(fake) <= share
    report(
        f"lookups: {len(attempts)} attempts to slow names from one team ran "
        f"{slow_lookups(fake)} lookups; another team's 10 calls all answered"
    )


def test_a_lookup_whose_attempt_ended_is_never_run(receiver, names, pools):
    fake, _ = names
    pool = pools(fake, threads=4)  # a share of one thread
    fake.add("first.slow.test", "127.0.0.1", delay=SLOW)
    fake.add("second.slow.test", "127.0.0.1", delay=SLOW)
    port = receiver.port
    holder = threading.Thread(target=call, args=(pool, f"http://first.slow.test:{port}/", "a", 0.5))
    holder.start()
    wait_for(lambda: fake.lookups == ["first.slow.test"], timeout=10)
    second = call(pool, f"http://second.slow.test:{port}/", "a", seconds=0.2)
    holder.join(10)
    assert second.timed_out
    fake.release()
    wait_for(lambda: pool.book.running("a") == 0, timeout=10)
    assert fake.lookups == ["first.slow.test"] and pool.book.queued == 0


def test_a_team_past_its_queue_bound_is_refused_at_once(receiver, names, pools):
    fake, _ = names
    pool = pools(fake, threads=4, max_queued_per_team=1)
    for i in range(3):
        fake.add(f"q{i}.slow.test", "127.0.0.1", delay=SLOW)
    port, results = receiver.port, {}

    def waiting(i):
        results[i] = call(pool, f"http://q{i}.slow.test:{port}/", "a", seconds=30)

    running = threading.Thread(target=waiting, args=(0,))
    running.start()
    wait_for(lambda: pool.book.running("a") == 1, timeout=10)
    queued = threading.Thread(target=waiting, args=(1,))
    queued.start()
    wait_for(lambda: pool.book.queued == 1, timeout=10)
    refused = call(pool, f"http://q2.slow.test:{port}/", "a", seconds=30)
    assert refused.error == "fetch failed: ENOTFOUND" and not refused.timed_out, refused
    # Another team still has room.
    fake.add("quick.test", "127.0.0.1")
    assert call(pool, f"http://quick.test:{port}/ok/b", "b").status_code == 200
    fake.release()
    running.join(10)
    queued.join(10)


def test_a_resolver_timing_out_is_remembered_briefly(pools):
    asked = []

    def timing_out(host, *args, **kwargs):
        asked.append(host)
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    pool = pools(timing_out)
    first = call(pool, "http://stuck.test:9/", "a")
    second = call(pool, "http://stuck.test:9/", "b")
    assert first.error == second.error == "fetch failed: ENOTFOUND"
    assert asked == ["stuck.test"]


def test_a_name_queued_behind_another_teams_share_starts_for_a_team_that_shares_it(names):
    """Team A holds its whole share on a name that never answers and has a second name queued
    behind it; team B asking for that second name gets it looked up on a free thread at once."""
    fake, _ = names
    pool = http_client.LookupPool(threads=4, lookup=fake)
    try:
        share = max(1, 4 // MAX_SHARE_FRACTION)
        for i in range(share):
            fake.add(f"hang{i}.slow.test", "127.0.0.1", delay=SLOW)
            pool.submit("A", f"hang{i}.slow.test", 80, float("inf"))
        wait_for(lambda: slow_lookups(fake) == share, timeout=10, message="A's share to run")
        fake.add("shared.test", "127.0.0.1")
        queued, _ = pool.submit("A", "shared.test", 80, float("inf"))
        # Every idle thread has looked and gone back to waiting (Condition's own waiter list):
        # B's ask must wake one, not ride on the wake-up A's ask caused.
        idle = 4 - share
        wait_for(lambda: len(pool._cond._waiters) == idle, timeout=10, message="idle threads")
        assert not queued.done()  # behind A's share
        answer, _ = pool.submit("B", "shared.test", 80, float("inf"))
        assert answer.result(timeout=5)[0][4][0] == "127.0.0.1"
    finally:
        fake.release()
        pool.close()
