"""The fault suite's plumbing: its marker, the broker parameter, the results table."""

from __future__ import annotations

from typing import Any

import pytest

from tests.faults.harness import BROKERS
from tests.faults.report import Results, table


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


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    lines = table(config)
    if lines:
        terminalreporter.section("fault-injection results")
        for line in lines:
            terminalreporter.line(line)
