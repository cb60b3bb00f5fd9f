"""The fault suite's plumbing: its marker, the broker parameter, its results (the table is
printed by tests/conftest.py, which the main process of a parallel run loads too)."""

from __future__ import annotations

import pytest

from tests.faults.harness import BROKERS
from tests.faults.report import Results


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "faults: the fault-injection suite (tests/faults)")


@pytest.fixture(params=BROKERS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def results(request: pytest.FixtureRequest, kind: str) -> Results:
    # The scenario's name is what its docstring starts with, e.g. "F1" from "F1: ...".
    doc = (request.function.__doc__ or request.function.__name__).strip()
    return Results(request.config, doc.split(":", 1)[0], kind)
