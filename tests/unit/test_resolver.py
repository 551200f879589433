"""The lookup pool's bookkeeping (asyncqueue/worker/resolver.py), in tables: shares of the
threads per team, teams in turn, lookups shared per name and dropped once nobody waits, bounded
queues, failures remembered briefly."""

import socket

import pytest

from asyncqueue.worker.resolver import LookupBook

NOW = 100.0
LATER = NOW + 10  # a deadline not yet passed


def key(name: str) -> tuple[str, int]:
    return (name, 80)


def book(threads=32, **kwargs) -> LookupBook:
    return LookupBook(threads, **kwargs)


def take_all(b: LookupBook, now=NOW) -> list[tuple[object, str]]:
    """(team, name) of every lookup that may start now, in the order they start."""
    started = []
    while (lookup := b.take(now)[0]) is not None:
        started.append((lookup.team, lookup.key[0]))
    return started


@pytest.mark.parametrize(
    "threads, teams, share",
    [
        (32, 0, 8),  # alone: a quarter of the threads, not half
        (32, 1, 8),
        (32, 3, 8),
        (32, 4, 6),  # 32 // 5: a share kept for a team that turns up
        (32, 7, 4),
        (32, 15, 2),
        (32, 31, 1),
        (32, 100, 1),  # never none
        (4, 0, 1),
    ],
)
def test_a_teams_share_of_the_threads(threads, teams, share):
    b = book(threads)
    for t in range(teams):
        b.ask(f"team-{t}", key(f"n{t}"), LATER)
    assert b.share() == share


def test_one_team_runs_no_more_than_its_share_and_the_others_still_start():
    b = book(32)
    for i in range(50):
        b.ask("attacker", key(f"a{i}.slow.test"), LATER)
    started = take_all(b)
    assert started == [("attacker", f"a{i}.slow.test") for i in range(8)]
    # Every thread but the attacker's share is free: another team's lookup starts at once.
    b.ask("victim", key("quick.test"), LATER)
    assert take_all(b) == [("victim", "quick.test")]
    assert b.running("attacker") == 8 and b.queued == 42


def test_teams_are_served_in_turn():
    b = book(32)
    for i in range(3):
        b.ask("a", key(f"a{i}"), LATER)
    for i in range(3):
        b.ask("b", key(f"b{i}"), LATER)
    b.ask("c", key("c0"), LATER)
    assert take_all(b) == [
        ("a", "a0"),
        ("b", "b0"),
        ("c", "c0"),
        ("a", "a1"),
        ("b", "b1"),
        ("a", "a2"),
        ("b", "b2"),
    ]


def test_a_finished_lookup_frees_its_teams_share():
    b = book(4)  # a share of one thread
    first = b.ask("a", key("a0"), LATER)
    b.ask("a", key("a1"), LATER)
    assert take_all(b) == [("a", "a0")]
    b.finished(first, None, NOW)
    assert take_all(b) == [("a", "a1")]


def test_a_lookup_is_shared_by_every_attempt_asking_for_the_same_name():
    b = book()
    one = b.ask("a", key("same.test"), LATER)
    two = b.ask("a", key("same.test"), LATER)
    three = b.ask("b", key("same.test"), LATER)
    assert one is two is three and one.waiting == 3 and b.queued == 1
    assert len(take_all(b)) == 1
    # Once running, a new attempt still waits for that one.
    assert b.ask("c", key("same.test"), LATER) is one


def test_a_name_shared_with_another_team_is_not_held_up_by_that_teams_backlog():
    b = book(4)  # a share of one thread
    b.ask("attacker", key("busy.test"), LATER)
    for i in range(10):
        b.ask("attacker", key(f"a{i}"), LATER)
    b.ask("attacker", key("victim.test"), LATER)  # queued behind the attacker's others
    b.ask("victim", key("victim.test"), LATER)
    assert take_all(b) == [("attacker", "busy.test"), ("victim", "victim.test")]


@pytest.mark.parametrize(
    "leaving, started",
    [
        ([], ["a0", "a1", "a2"]),
        (["a1"], ["a0", "a2"]),  # nobody waits for it: dropped before it runs
        (["a0", "a1", "a2"], []),
    ],
)
def test_a_lookup_nobody_waits_for_is_dropped_before_it_runs(leaving, started):
    b = book()
    lookups = {f"a{i}": b.ask("a", key(f"a{i}"), LATER) for i in range(3)}
    dropped = [b.leave(lookups[name]) for name in leaving]
    assert dropped == [True] * len(leaving)
    assert [name for _, name in take_all(b)] == started
    assert b.queued == 0


def test_a_lookup_another_attempt_still_waits_for_is_kept():
    b = book()
    lookup = b.ask("a", key("n"), LATER)
    b.ask("b", key("n"), LATER)
    assert b.leave(lookup) is False
    assert take_all(b) == [("a", "n")]
    assert b.leave(lookup) is False  # (started: it runs to its end)


@pytest.mark.parametrize(
    "deadlines, now, started",
    [
        ([NOW + 1, NOW + 1], NOW, ["n0", "n1"]),
        ([NOW - 1, NOW + 1], NOW, ["n1"]),  # its attempt's deadline passed: dropped
        ([NOW, NOW], NOW, []),
    ],
)
def test_a_lookup_whose_deadline_passed_is_dropped_before_it_runs(deadlines, now, started):
    b = book()
    for i, deadline in enumerate(deadlines):
        b.ask("a", key(f"n{i}"), deadline)
    assert [name for _, name in take_all(b, now)] == started
    assert b.queued == 0


def test_a_lookup_runs_until_the_latest_deadline_of_those_waiting():
    b = book()
    b.ask("a", key("n"), NOW - 1)
    b.ask("b", key("n"), NOW + 1)
    assert take_all(b) == [("a", "n")]


@pytest.mark.parametrize(
    "per_team, total, asks, refused",
    [
        (3, 100, [("a", 5)], 2),
        (3, 100, [("a", 5), ("b", 3)], 2),  # one team's full queue leaves the others room
        (3, 4, [("a", 3), ("b", 3)], 2),  # the total bounds them all
        (100, 100, [("a", 50)], 0),
    ],
)
def test_queues_are_bounded_per_team_and_in_all(per_team, total, asks, refused):
    b = book(max_queued=total, max_queued_per_team=per_team)
    answers = [b.ask(team, key(f"{team}{i}"), LATER) for team, count in asks for i in range(count)]
    assert answers.count(None) == refused
    assert b.queued == len(answers) - refused


def test_a_name_already_queued_is_joined_even_when_the_queues_are_full():
    b = book(max_queued=1, max_queued_per_team=1)
    first = b.ask("a", key("n"), LATER)
    assert b.ask("b", key("n"), LATER) is first
    assert b.ask("b", key("other"), LATER) is None


NXDOMAIN = socket.gaierror(socket.EAI_NONAME, "Name or service not known")
RESOLVER_TIMEOUT = socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")


@pytest.mark.parametrize(
    "error, asked_at, remembered",
    [
        (NXDOMAIN, NOW + 1, NXDOMAIN),
        (RESOLVER_TIMEOUT, NOW + 4.9, RESOLVER_TIMEOUT),
        (OSError("resolver failed"), NOW + 1, "same"),
        (NXDOMAIN, NOW + 5, None),  # expired
        (None, NOW + 1, None),  # an answer is not remembered here
    ],
)
def test_failures_are_remembered_briefly(error, asked_at, remembered):
    b = book(failure_ttl=5.0)
    lookup = b.ask("a", key("n"), LATER)
    take_all(b)
    b.finished(lookup, error, NOW)
    expected = error if remembered == "same" else remembered
    assert b.failure(key("n"), asked_at) is expected
    assert b.failure(key("other"), NOW) is None


def test_failures_kept_are_bounded_the_oldest_forgotten_first():
    b = book(max_failures=3)
    for i in range(5):
        lookup = b.ask("a", key(f"n{i}"), LATER)
        take_all(b)
        b.finished(lookup, NXDOMAIN, NOW + i)
    kept = [i for i in range(5) if b.failure(key(f"n{i}"), NOW + 4)]
    assert kept == [2, 3, 4]


def test_forget_drops_what_is_queued_and_what_is_remembered():
    b = book(4)
    running = b.ask("a", key("r"), LATER)
    queued = b.ask("a", key("q"), LATER)
    take_all(b)
    assert b.forget() == [queued]
    assert b.queued == 0 and take_all(b) == []
    b.finished(running, NXDOMAIN, NOW)  # its thread comes back later: counted, remembered
    assert b.running("a") == 0
