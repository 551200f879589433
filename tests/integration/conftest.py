import pytest

from asyncqueue.api import create_app
from asyncqueue.config import Settings
from tests.support import make_team
from tests.support.ops import pool_fixture  # noqa: F401  (the `pool` fixture)


@pytest.fixture
def app(database_url):
    app = create_app(Settings(database_url=database_url, db_pool_size=2))
    yield app
    limits = app.extensions.get("asyncqueue_create_limits")
    if limits is not None:
        limits.stop()  # its sync thread would go on against a dropped database
    app.extensions["asyncqueue"].database.close()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def team(conn):
    """(team row, API key) for a free team."""
    return make_team(conn, "acme", "free")


@pytest.fixture
def auth(team):
    return {"Authorization": f"Bearer {team[1]}"}
