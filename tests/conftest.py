"""Shared fixtures. Scenario builders and run observers live in ``scenarios.py`` (also used by benchmarks)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # `import scenarios` from any test file or rootdir

from scenarios import RUN_MODES, SCENARIO_NAMES, EventRecorder, Scenario, all_scenarios


@pytest.fixture(params=SCENARIO_NAMES)
def scenario_name(request: pytest.FixtureRequest) -> str:
    """Every scenario name, one test per scenario."""
    return str(request.param)


@pytest.fixture(params=RUN_MODES)
def run_mode(request: pytest.FixtureRequest) -> str:
    """'sync' (``initiate_chat``) and 'async' (``a_initiate_chat``)."""
    return str(request.param)


@pytest.fixture
def build(scenario_name: str) -> Callable[[], Scenario]:
    """The builder of the current scenario: each call returns fresh agents and a fresh group chat."""
    return all_scenarios()[scenario_name]


@pytest.fixture
def events() -> Iterator[EventRecorder]:
    """AG2's events of the test, recorded instead of printed (install with ``events.installed()``)."""
    yield EventRecorder()
