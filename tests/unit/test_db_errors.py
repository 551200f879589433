"""Which database errors the worker waits out."""

import psycopg
import pytest
from psycopg import errors
from psycopg_pool import PoolTimeout

from asyncqueue.db.errors import CONFLICT, CONNECTION_LOST, FAILURE, classify, worth_retrying


@pytest.mark.parametrize(
    "exc, kind",
    [
        (psycopg.OperationalError("server closed the connection unexpectedly"), CONNECTION_LOST),
        (PoolTimeout("couldn't get a connection after 10.00 sec"), CONNECTION_LOST),
        (errors.ConnectionFailure("connection failure"), CONNECTION_LOST),
        (errors.AdminShutdown("terminating connection"), CONNECTION_LOST),
        (errors.CrashShutdown("crash"), CONNECTION_LOST),
        (errors.CannotConnectNow("the database system is starting up"), CONNECTION_LOST),
        (psycopg.InterfaceError("the connection is lost"), FAILURE),
        (errors.DeadlockDetected("deadlock detected"), CONFLICT),
        (errors.SerializationFailure("could not serialize"), CONFLICT),
        (errors.QueryCanceled("canceling statement due to statement timeout"), FAILURE),
        (errors.ProgramLimitExceeded("index row size exceeds maximum"), FAILURE),
        (errors.DiskFull("could not extend file"), FAILURE),
        (errors.OutOfMemory("out of memory"), FAILURE),
        (errors.LockNotAvailable("could not obtain lock"), FAILURE),
        (psycopg.DataError("invalid input"), FAILURE),
        (errors.UndefinedTable("relation does not exist"), FAILURE),
        (ValueError("a bug"), FAILURE),
    ],
)
def test_classify(exc, kind):
    assert classify(exc) == kind


@pytest.mark.parametrize(
    "exc, conflicts, retry",
    [
        (psycopg.OperationalError("closed"), 1000, True),  # for as long as it lasts
        (errors.DeadlockDetected("deadlock"), 0, True),
        (errors.DeadlockDetected("deadlock"), 2, True),
        (errors.DeadlockDetected("deadlock"), 3, False),  # a few times only
        (errors.QueryCanceled("statement timeout"), 0, False),
    ],
)
def test_worth_retrying(exc, conflicts, retry):
    assert worth_retrying(exc, conflicts) is retry
