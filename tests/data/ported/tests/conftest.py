import pytest


@pytest.fixture(scope="session")
def taskq_config():
    return {"broker_url": "memory://", "result_backend": "cache+memory://"}
