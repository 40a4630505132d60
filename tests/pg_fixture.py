"""pytest fixtures for the PostgreSQL tests (import them into a test module: ``from pg_fixture import ...``).

* ``postgres_server`` (session scope): one throwaway server (``pg_server.py``) for the whole test run,
  started on first use and stopped at the end. Missing PostgreSQL binaries make the tests that need it
  *fail* with instructions; they are skipped only when ``CHECKPOINT_SYSTEM_SKIP_POSTGRES=1`` is set.
* ``postgres_url``: a fresh, empty database on that server for one test (``postgresql://`` URL, unix
  socket through the ``host=`` query parameter).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from pg_server import SKIP_ENV, PostgresServer, PostgresUnavailable, shared_server, stop_shared_server


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    if os.environ.get(SKIP_ENV) == "1":
        pytest.skip(f"{SKIP_ENV}=1: the PostgreSQL tests are skipped on request")
    problem = None
    try:
        import psycopg  # noqa: F401
    except ImportError:
        problem = (
            "psycopg 3 is not installed: pip install -e '.[test]' (or '.[postgres]'); set "
            f"{SKIP_ENV}=1 to skip the PostgreSQL tests explicitly"
        )
    if problem is None:
        try:
            server = shared_server()
        except PostgresUnavailable as exc:
            problem = str(exc)
    if problem is not None:
        pytest.fail(problem, pytrace=False)
    yield server
    stop_shared_server()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    return postgres_server.create_database()
