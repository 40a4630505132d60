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


class Confined:
    """A test's confinement: ``root`` is its temporary directory, ``cwd`` an empty working directory in it."""

    def __init__(self, root: Path, cwd: Path) -> None:
        self.root = root
        self.cwd = cwd

    def outside_entries(self) -> list[str]:
        """What appeared in the working directory (relative paths); must stay empty."""
        return sorted(str(p.relative_to(self.cwd)) for p in self.cwd.rglob("*"))


@pytest.fixture
def confined(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Confined]:
    """Run a hostile-input case from an empty working directory and check that it wrote nothing there.

    Hostile cases build their inputs under ``confined.root`` (the test's ``tmp_path``) and use relative paths
    nowhere; a library that writes into the current directory (a relative path taken from a file, a default
    ``logs/``) fails the test at teardown.
    """
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    box = Confined(tmp_path, cwd)
    yield box
    assert box.outside_entries() == [], "the case wrote into the current directory"
