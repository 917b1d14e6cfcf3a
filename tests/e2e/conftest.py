import pytest

from tests.e2e.servers import daphne, server_environment


@pytest.fixture
def daphne_env(transactional_db, tmp_path):
    (tmp_path / "var").mkdir()
    return server_environment(tmp_path)


@pytest.fixture
def daphne_server(daphne_env):
    """``(host, port)`` of a real Daphne serving the project on the test run's database."""
    with daphne(daphne_env) as address:
        yield address
