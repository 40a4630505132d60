"""Seeded corruption fuzz of the SQLite store: a damaged file never loads as different data.

A real AG2 group chat (the round-robin scenario, 38 messages: 40 checkpoints) is saved into a SQLite store
and the store closed. Each mutation damages a fresh copy of that file, through the file (bytes flipped
anywhere, the file truncated, junk appended) or through SQL (rows deleted, duplicated, moved or swapped,
bytes flipped inside records and log chunks, key columns edited), and a reader then lists the session and
loads every original checkpoint id. The rules, over every mutation:

* a load returns data equal to the original or raises a ``CheckpointError`` (0 silently different loads);
* ``list_checkpoints`` lists only ids that were saved, and the newest listed (``latest_checkpoint_id``) is
  an original id or there is none;
* nothing raises anything but a ``CheckpointError``.

``CHECKPOINT_FUZZ_SEED`` picks another seed; the outcome counts per kind of mutation are printed (``-s``).
"""

from __future__ import annotations

import os
import random
import shutil
import sqlite3
import traceback
import warnings
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from scenarios import all_scenarios

from checkpoint_system import CheckpointingGroupChatManager, CheckpointManager
from checkpoint_system.errors import CheckpointError
from checkpoint_system.storage import SqliteStore

SEED = int(os.environ.get("CHECKPOINT_FUZZ_SEED", "18"))
SESSION = "fuzz"
#: the mutations per kind (at least 500 in all)
PLAN = {
    "file: byte flipped": 200,
    "file: 2-8 bytes flipped": 60,
    "file: truncated": 40,
    "file: junk appended": 30,
    "row deleted": 25,
    "row duplicated": 25,
    "row moved to the end": 15,
    "rows swapped": 40,
    "record byte flipped": 50,
    "chunk byte flipped": 50,
    "record or chunk cut short": 20,
    "column edited": 30,
}

Mutation = Callable[[random.Random, Path], None]


def _sql(path: Path, *statements: tuple[str, tuple[Any, ...]]) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA ignore_check_constraints=ON")  # what a hand edit or a bug could do
        for sql, params in statements:
            conn.execute(sql, params)
    finally:
        conn.close()


def _keys(path: Path) -> list[int]:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        return [key for (key,) in conn.execute("SELECT key FROM cs_checkpoints ORDER BY key")]
    finally:
        conn.close()


def _flip_file(rng: random.Random, path: Path, count: int = 1) -> None:
    data = bytearray(path.read_bytes())
    for _ in range(count):
        data[rng.randrange(len(data))] ^= rng.randrange(1, 256)
    path.write_bytes(bytes(data))


def _truncate(rng: random.Random, path: Path) -> None:
    with path.open("r+b") as handle:
        handle.truncate(rng.randrange(path.stat().st_size))


def _append_junk(rng: random.Random, path: Path) -> None:
    with path.open("ab") as handle:
        handle.write(rng.randbytes(rng.randrange(1, 20000)))


def _delete_row(rng: random.Random, path: Path) -> None:
    _sql(path, ("DELETE FROM cs_checkpoints WHERE key = ?", (rng.choice(_keys(path)),)))


def _duplicate_row(rng: random.Random, path: Path) -> None:
    """A copy of a row after the last one (the id must change: ids are unique within a session)."""
    keys = _keys(path)
    source, end = rng.choice(keys), keys[-1] + 1
    suffix = rng.choice(["_copy", "", "x"])
    _sql(
        path,
        (
            """INSERT INTO cs_checkpoints SELECT ?, session, seq + ? - key, step_number + ?,
               checkpoint_id || ?, context, record, chunk FROM cs_checkpoints WHERE key = ?""",
            (end, end, end - source, suffix or "_dup", source),
        ),
    )


def _move_row(rng: random.Random, path: Path) -> None:
    """A row moved, with its id, to after the last one (its seq and step follow its new key)."""
    keys = _keys(path)
    source, end = rng.choice(keys[:-1]), keys[-1] + 1
    _sql(
        path,
        (
            "UPDATE cs_checkpoints SET key = ?, seq = seq + ?, step_number = step_number + 100 WHERE key = ?",
            (end, end - source, source),
        ),
    )


def _swap_rows(rng: random.Random, path: Path) -> None:
    """Two rows exchange some of their columns (a key stays with its position in the log)."""
    first, second = rng.sample(_keys(path), 2)
    columns = rng.choice(
        [
            ("record", "chunk"),
            ("record",),
            ("chunk",),
            ("checkpoint_id", "step_number", "context", "record", "chunk"),
            ("checkpoint_id", "step_number", "context", "record", "chunk", "seq"),
        ]
    )
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA ignore_check_constraints=ON")
        select = f"SELECT {', '.join(columns)} FROM cs_checkpoints WHERE key = ?"
        one, two = conn.execute(select, (first,)).fetchone(), conn.execute(select, (second,)).fetchone()
        assignments = ", ".join(f"{column} = ?" for column in columns)
        conn.execute("BEGIN")
        conn.execute(
            "UPDATE cs_checkpoints SET checkpoint_id = checkpoint_id || '~' WHERE key IN (?, ?)",
            (first, second),
        )
        conn.execute(f"UPDATE cs_checkpoints SET {assignments} WHERE key = ?", (*two, first))
        conn.execute(f"UPDATE cs_checkpoints SET {assignments} WHERE key = ?", (*one, second))
        if "checkpoint_id" not in columns:  # the ids stay where they were
            conn.execute(
                "UPDATE cs_checkpoints SET checkpoint_id = rtrim(checkpoint_id, '~') WHERE key IN (?, ?)",
                (first, second),
            )
        conn.execute("COMMIT")
    finally:
        conn.close()


def _flip_blob(column: str) -> Mutation:
    def flip(rng: random.Random, path: Path) -> None:
        key = rng.choice(_keys(path))
        conn = sqlite3.connect(path, isolation_level=None)
        try:
            (blob,) = conn.execute(f"SELECT {column} FROM cs_checkpoints WHERE key = ?", (key,)).fetchone()
            data = bytearray(blob)
            data[rng.randrange(len(data))] ^= rng.randrange(1, 256)
            conn.execute(f"UPDATE cs_checkpoints SET {column} = ? WHERE key = ?", (bytes(data), key))
        finally:
            conn.close()

    return flip


def _cut_blob(rng: random.Random, path: Path) -> None:
    column = rng.choice(["record", "chunk"])
    key = rng.choice(_keys(path))
    _sql(
        path,
        (
            f"UPDATE cs_checkpoints SET {column} = substr({column}, 1, length({column}) - ?) WHERE key = ?",
            (rng.randrange(1, 40), key),
        ),
    )


def _edit_column(rng: random.Random, path: Path) -> None:
    key = rng.choice(_keys(path))
    sql, params = rng.choice(
        [
            (
                "UPDATE cs_checkpoints SET step_number = step_number + ? WHERE key = ?",
                (rng.randrange(1, 5), key),
            ),
            ("UPDATE cs_checkpoints SET seq = seq + ? WHERE key = ?", (rng.choice([-1, 1, 2]), key)),
            ("UPDATE cs_checkpoints SET key = key + ? WHERE key = ?", (rng.choice([40, 100, 1 << 32]), key)),
            ("UPDATE cs_checkpoints SET session = session + 1 WHERE key = ?", (key,)),
            ("UPDATE cs_checkpoints SET checkpoint_id = checkpoint_id || 'x' WHERE key = ?", (key,)),
            ("UPDATE cs_checkpoints SET record = CAST(record AS TEXT) WHERE key = ?", (key,)),
            ("UPDATE cs_checkpoints SET chunk = ? WHERE key = ?", (rng.choice([b"", 42, "text"]), key)),
            ("UPDATE cs_sessions SET id = id + 1", ()),
            ("UPDATE cs_schema_version SET version = ?", (rng.choice([0, 2, 4]),)),
        ]
    )
    _sql(path, (sql, params))


MUTATIONS: dict[str, Mutation] = {
    "file: byte flipped": _flip_file,
    "file: 2-8 bytes flipped": lambda rng, path: _flip_file(rng, path, rng.randrange(2, 9)),
    "file: truncated": _truncate,
    "file: junk appended": _append_junk,
    "row deleted": _delete_row,
    "row duplicated": _duplicate_row,
    "row moved to the end": _move_row,
    "rows swapped": _swap_rows,
    "record byte flipped": _flip_blob("record"),
    "chunk byte flipped": _flip_blob("chunk"),
    "record or chunk cut short": _cut_blob,
    "column edited": _edit_column,
}


@pytest.fixture(scope="module")
def original(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, dict[str, Any]]]:
    """The database file of a real 40-checkpoint chat, and every checkpoint as it loads."""
    path = tmp_path_factory.mktemp("fuzz") / "original.db"
    built = all_scenarios()["round_robin"]()
    built.groupchat.max_round = 38
    checkpoints = CheckpointManager(f"sqlite:///{path}", session_id=SESSION, problem_context="fuzz")
    built.run(built.make_manager(CheckpointingGroupChatManager, checkpoint_manager=checkpoints))
    checkpoints.close()
    assert checkpoints.backing_store is not None
    checkpoints.backing_store.close()  # type: ignore[attr-defined]
    store = SqliteStore(path, create=False)
    session = store.open_session(SESSION)
    ids = session.list_checkpoints()
    assert len(ids) == 40
    loaded = {checkpoint_id: session.load(checkpoint_id).model_dump() for checkpoint_id in ids}
    store.close()
    assert [Path(f"{path}{suffix}").exists() for suffix in ("-wal", "-shm")] == [False, False]
    return path, loaded


def _read(path: Path, originals: dict[str, dict[str, Any]]) -> tuple[str, list[str]]:
    """One reader's view of a damaged copy: how it went (an outcome) and the rules it broke (if any)."""
    broken: list[str] = []
    errors = 0
    store = SqliteStore(path, create=False)
    try:
        session = store.open_session(SESSION)
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                listed = session.list_checkpoints()
            skipped = len(caught)
        except CheckpointError:
            listed, skipped = [], -1
        unknown = [c for c in listed if c not in originals]
        if unknown:
            broken.append(f"listed ids that were never saved: {unknown[:3]}")
        if listed and listed[-1] not in originals:
            broken.append(f"latest checkpoint {listed[-1]!r} was never saved")
        for checkpoint_id, expected in originals.items():
            try:
                data = session.load(checkpoint_id)
            except CheckpointError:
                errors += 1
                continue
            if data.model_dump() != expected:
                broken.append(f"{checkpoint_id} loaded as different data")
    except CheckpointError:
        return "store refused", broken
    except Exception as exc:  # the rule: nothing but CheckpointError
        where = traceback.extract_tb(exc.__traceback__)[-1]
        return "other exception", [*broken, f"{type(exc).__name__}: {exc} ({where.filename}:{where.lineno})"]
    finally:
        store.close()
    if skipped == -1:
        outcome = "listing refused"
    elif errors == 0 and skipped == 0:
        outcome = "no visible damage"
    else:
        outcome = "damaged rows refused" if errors else "rows left out of the listing"
    return outcome, broken


def test_a_damaged_sqlite_store_never_loads_different_data(
    original: tuple[Path, dict[str, dict[str, Any]]], tmp_path: Path
) -> None:
    source, originals = original
    rng = random.Random(SEED)
    outcomes: Counter[tuple[str, str]] = Counter()
    problems: list[str] = []
    copy = tmp_path / "damaged.db"
    for kind, count in PLAN.items():
        for _ in range(count):
            for suffix in ("-wal", "-shm", "-journal"):
                Path(f"{copy}{suffix}").unlink(missing_ok=True)
            shutil.copyfile(source, copy)
            MUTATIONS[kind](rng, copy)
            outcome, broken = _read(copy, originals)
            outcomes[(kind, outcome)] += 1
            problems += [f"seed {SEED}, {kind}: {problem}" for problem in broken]
    total = sum(outcomes.values())
    print(f"\n{total} mutations (seed {SEED}):")
    for kind in PLAN:
        print(f"  {kind:28} " + ", ".join(f"{o} {n}" for (k, o), n in sorted(outcomes.items()) if k == kind))
    assert total >= 500
    assert problems == []
