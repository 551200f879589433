"""The SQL speaks domain.py's vocabulary: every CHECK constraint and status list of the migrated
schema, every literal list in sql/, the NOTIFY channel, the advisory locks and the maxWaitTime
bound agree with asyncqueue.domain, so a change on either side that the other misses fails here.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import psycopg
import pytest
from psycopg.types.json import Jsonb

import asyncqueue
from asyncqueue import db, domain, keys
from tests.support import make_team

PACKAGE = Path(asyncqueue.__file__).parent
SQL = Path(__file__).resolve().parents[2] / "sql"
SQL_FILES = sorted(SQL.glob("migrations/*.sql")) + sorted(SQL.glob("queries/*.sql"))

# The named sets SQL may list, by vocabulary.
VOCABULARIES = {
    "status": {
        "STATUSES": domain.STATUSES,
        "WAITING": domain.WAITING,
        "ACTIVE": domain.ACTIVE,
        "FINISHED": domain.FINISHED,
        "OUTCOMES": domain.OUTCOMES,
    },
    "plan": {"PLANS": domain.PLANS},
    "method": {"METHODS": domain.METHODS},
    "backoff": {"BACKOFFS": domain.BACKOFFS},
}
# Every word of each vocabulary.
UNIVERSE = {
    "status": domain.STATUSES,
    "plan": domain.PLANS,
    "method": domain.METHODS,
    "backoff": domain.BACKOFFS,
}
# The columns whose CHECK lists a vocabulary's values, and which.
CHECKED_COLUMNS = {
    ("teams", "plan"): domain.PLANS,
    ("tasks", "status"): domain.STATUSES,
    ("tasks", "method"): domain.METHODS,
    ("tasks", "retry_backoff"): domain.BACKOFFS,
}

LITERAL_LIST = re.compile(r"\bIN\s*\(\s*('[^']*'(?:\s*,\s*'[^']*')*)\s*\)", re.I)
ANY_ARRAY = re.compile(r"\(?(\w+)\)?\s*=\s*ANY\s*\(\s*\(?ARRAY\[([^\]]*)\]", re.I)
STATUS_COMPARED = re.compile(r"\bstatus\s*(?:=|<>|!=)\s*'([^']*)'", re.I)
CASE_RESULT = re.compile(r"\b(?:THEN|ELSE)\s+'([^']*)'", re.I)
NOTIFY = re.compile(r"pg_notify\s*\(\s*'([^']*)'", re.I)
ADVISORY_LOCK = re.compile(
    r"pg_(?:try_)?advisory_(?:xact_)?(?:un)?lock\s*\(\s*(%\(\w+\)s|[^)]*)\)", re.I
)
PARAMETER = re.compile(r"%\(\w+\)s")


def sql_text(path: Path) -> str:
    """The file without its comments (which quote statuses in prose)."""
    return re.sub(r"--[^\n]*", "", path.read_text())


def words(listed: str) -> tuple[str, ...]:
    """`'a', 'b'` or `'a'::text, 'b'::text` -> ("a", "b")."""
    return tuple(re.findall(r"'([^']*)'", listed))


def named_set(values: tuple[str, ...]) -> str:
    """The domain name of the set `values` lists (in any order), or an assertion error."""
    kinds = [kind for kind, universe in UNIVERSE.items() if values[0] in universe]
    assert kinds, f"{values} is a list of words domain.py does not name"
    stray = set(values) - set(UNIVERSE[kinds[0]])
    assert not stray, f"{values} mixes {sorted(stray)} into the {kinds[0]} vocabulary"
    for name, members in VOCABULARIES[kinds[0]].items():
        if set(values) == set(members):
            return name
    raise AssertionError(f"{values} is none of domain's named {kinds[0]} sets")


def test_the_named_sets_are_made_of_the_statuses():
    statuses = set(domain.STATUSES)
    assert len(statuses) == len(domain.STATUSES)
    assert set(domain.ACTIVE) | set(domain.FINISHED) == statuses
    assert not set(domain.ACTIVE) & set(domain.FINISHED)
    assert set(domain.WAITING) < set(domain.ACTIVE)
    assert set(domain.OUTCOMES) < set(domain.FINISHED)
    assert domain.DEFAULT_PLAN in domain.PLANS and domain.UPGRADE_PLAN in domain.PLANS
    assert len(set(domain.LOCK_IDS)) == len(domain.LOCK_IDS)


@pytest.mark.parametrize("path", SQL_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_literal_list_in_sql_is_a_named_domain_set(path):
    for match in LITERAL_LIST.finditer(sql_text(path)):
        named_set(words(match.group(1)))


@pytest.mark.parametrize("path", SQL_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_single_status_in_sql_is_a_domain_status(path):
    text = sql_text(path)
    for found in (*STATUS_COMPARED.findall(text), *CASE_RESULT.findall(text)):
        assert found in domain.STATUSES, f"{path.name}: {found!r} is not a status"


@pytest.mark.parametrize("path", SQL_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_notify_channels_and_advisory_locks_in_sql_are_domains(path):
    text = sql_text(path)
    for channel in NOTIFY.findall(text):
        assert channel == domain.TASKS_CHANNEL, f"{path.name} notifies {channel!r}"
    for argument in ADVISORY_LOCK.findall(text):
        argument = argument.strip()
        if not PARAMETER.fullmatch(argument):  # a literal id must be one of domain's
            assert int(argument.replace("_", "")) in domain.LOCK_IDS, f"{path.name}: {argument}"


def test_the_sql_files_were_found_and_parsed():
    # The patterns above pass vacuously if they find nothing: they must find what is there.
    texts = [sql_text(p) for p in SQL_FILES]
    assert len(SQL_FILES) >= 10
    assert sum(len(LITERAL_LIST.findall(t)) for t in texts) >= 15
    assert sum(len(STATUS_COMPARED.findall(t)) for t in texts) >= 2
    assert sum(len(NOTIFY.findall(t)) for t in texts) >= 3
    assert sum(len(ADVISORY_LOCK.findall(t)) for t in texts) >= 3


def checks(conn) -> list[tuple[str, str]]:
    return [
        (row["tbl"], row["def"])
        for row in conn.execute(
            "SELECT c.conrelid::regclass::text AS tbl, pg_get_constraintdef(c.oid) AS def"
            " FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace"
            " WHERE c.contype = 'c' AND n.nspname = 'public' ORDER BY 1, 2"
        )
    ]


def test_every_check_constraint_lists_domains_values(conn):
    seen = {}
    for table, definition in checks(conn):
        match = ANY_ARRAY.search(definition)
        assert match, f"a CHECK on {table} this test does not know: {definition}"
        column, values = match.group(1), words(match.group(2))
        assert (table, column) in CHECKED_COLUMNS, f"a CHECK on {table}.{column}: {definition}"
        assert set(values) == set(CHECKED_COLUMNS[table, column]), (table, column, values)
        seen[table, column] = values
    assert seen.keys() == CHECKED_COLUMNS.keys()


def test_a_new_teams_plan_is_domains_default(conn):
    default = conn.execute(
        "SELECT column_default FROM information_schema.columns"
        " WHERE table_name = 'teams' AND column_name = 'plan'"
    ).fetchone()["column_default"]
    assert words(default) == (domain.DEFAULT_PLAN,)


def test_every_status_index_predicate_is_a_named_domain_set(conn):
    predicates = [
        (row["indexname"], row["indexdef"])
        for row in conn.execute(
            "SELECT indexname, indexdef FROM pg_indexes"
            " WHERE schemaname = 'public' AND indexdef ~* 'WHERE.*status'"
        )
    ]
    assert predicates  # tasks_due and others are partial indexes on status sets
    names = {}
    for index, definition in predicates:
        match = ANY_ARRAY.search(definition.partition(" WHERE ")[2])
        assert match and match.group(1) == "status", definition
        names[index] = named_set(words(match.group(2)))
    assert names["tasks_due"] == "ACTIVE" and names["tasks_finished_completed"] == "FINISHED"


def test_the_insert_trigger_notifies_domains_channel(conn, database_url):
    team, _ = make_team(conn)
    with psycopg.connect(database_url, autocommit=True) as listener:
        listener.execute(f"LISTEN {domain.TASKS_CHANNEL}")
        insert(conn, team["id"])
        got = list(listener.notifies(timeout=5, stop_after=1))
    assert [n.channel for n in got] == [domain.TASKS_CHANNEL]


def insert(conn, team_id) -> None:
    conn.execute(
        "INSERT INTO tasks (team_id, status, callback_url, method, max_wait_time, timeout,"
        " max_retries, retry_backoff, next_run_at)"
        " VALUES (%s, %s, 'http://x.test/', %s, 1, 1, 0, %s, now())",
        (team_id, domain.PENDING, domain.DEFAULT_METHOD, domain.DEFAULT_BACKOFF),
    )


def insert_for_key(conn, key: str, max_wait_time: float, plan_limits: dict):
    """The API's insert (task_insert_for_key): the task's row, or None when refused."""
    return conn.execute(
        db.query("task_insert_for_key"),
        {
            "key_hash": keys.hash_key(key),
            "callback_url": "http://x.test/",
            "method": domain.DEFAULT_METHOD,
            "headers": Jsonb({}),
            "body": None,
            "max_wait_time": max_wait_time,
            "timeout": 1,
            "max_retries": 0,
            "retry_backoff": domain.DEFAULT_BACKOFF,
            "on_complete_url": None,
            "delay_until": None,
            "plan_max_wait": json.dumps(plan_limits),
        },
    ).fetchone()


@pytest.mark.parametrize("plan", domain.PLANS)
def test_the_inserts_max_wait_time_bound_is_domains(conn, plan):
    """The database's guard on maxWaitTime takes each plan's bound from domain's table (the API
    checks the same table first): at the bound a task goes in, past it none does."""
    _, key = make_team(conn, f"team-{plan}", plan)
    limit = domain.PLAN_MAX_WAIT_TIME[plan]
    assert insert_for_key(conn, key, limit, domain.PLAN_MAX_WAIT_TIME)["status"] in domain.WAITING
    assert insert_for_key(conn, key, limit + 0.001, domain.PLAN_MAX_WAIT_TIME) is None
    # The bound is the table's, not a number written into the SQL.
    assert insert_for_key(conn, key, limit, {**domain.PLAN_MAX_WAIT_TIME, plan: limit / 2}) is None


def test_no_module_but_domain_spells_out_a_lock_id_or_a_status_list():
    """The code names them through domain.py; a module writing one out would drift apart."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path == PACKAGE / "domain.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            where = f"{path.relative_to(PACKAGE)}:{getattr(node, 'lineno', '?')}"
            if isinstance(node, ast.Constant) and type(node.value) is int:
                if node.value in domain.LOCK_IDS:
                    found.append(f"{where} lock id {node.value}")
            elif isinstance(node, ast.Tuple | ast.List | ast.Set) and len(node.elts) > 1:
                values = [getattr(e, "value", None) for e in node.elts]
                if all(isinstance(v, str) and v in domain.STATUSES for v in values):
                    found.append(f"{where} statuses {values}")
    assert not found, found
