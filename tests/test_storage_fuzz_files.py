"""Corruption fuzz of the file store: a damaged session never loads as different data, lists no phantom, and
raises nothing but ``CheckpointError``.

One real 40-checkpoint group chat (round robin, deterministic model) is recorded once per module and every
checkpoint is loaded right after the run. Each mutation is then applied to a fresh copy of that session
directory, seeded per mutation (``random.Random(f"{SEED}-{index}")``) so that any single case can be replayed:
byte flips, truncation, deleted / duplicated / swapped / edited lines of ``committed.jsonl`` and
``message_log.jsonl``, junk appended or inserted, deleted files, a record file holding another record's bytes,
a stray record file under a name nothing committed. Half of the copies start as a writer killed before it
created its last record files leaves a session (the commit lines are there, the files are not), the state in
which readers must rely on the commit file alone.

A reader (``CheckpointManager(path)`` or ``FileSessionStore(path)``, no writer involved) then lists and
loads: every original id loads equal to what was saved (``integrity`` aside) or raises a ``CheckpointError``;
the list holds only saved ids, in step order; ``latest_checkpoint_id()`` is a saved id or None. A warning is
fine. A second test reopens damaged copies as a writer and saves one more checkpoint: it must refuse with a
``CheckpointError`` or leave every checkpoint that loaded before still loading as saved (no repair from
damaged data). ``pytest -s`` prints the outcomes by mutation kind.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import traceback
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import orjson
import pytest
from conftest import RecordedSession, comparable, copy_tree, record_session

from checkpoint_system import CheckpointData, CheckpointError, CheckpointManager, FileSessionStore

SEED = 20261218
READER_MUTATIONS = 600
WRITER_MUTATIONS = 150
#: record files missing in a copy that starts as a killed writer leaves it (committed, not yet created)
UNPUBLISHED_TAIL = 8
LOG = "message_log.jsonl"
COMMIT = "committed.jsonl"
LINE_FILES = (COMMIT, LOG)

T = TypeVar("T")


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> RecordedSession:
    recorded = record_session(tmp_path_factory.mktemp("fuzz") / "session", max_round=38)
    assert len(recorded.ids) == 40
    return recorded


# -- mutations ----------------------------------------------------------------------------------------------


@dataclass
class Mutation:
    index: int
    base: str  # "closed" (every record file exists) or "unpublished" (the last record files are missing)
    kind: str
    target: str
    detail: str = ""

    def __str__(self) -> str:
        return f"#{self.index} [{self.base}] {self.kind} {self.target} {self.detail}".rstrip()


def _record_names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.glob("checkpoint_*.json"))


def _junk(rng: random.Random, lines: list[bytes]) -> bytes:
    """Bytes someone or something could leave in a file: noise, text, a JSON line, a copy of a real line."""
    choice = rng.randrange(5)
    if choice == 0:
        return rng.randbytes(rng.randint(1, 300))
    if choice == 1:
        return b"garbage that is not JSON at all\n"
    if choice == 2:
        return orjson.dumps({"k": {"checkpoint_id": "checkpoint_7_injected"}, "n": 12, "f": "x.json"}) + b"\n"
    if choice == 3 and lines:
        return rng.choice(lines)
    return b"\n" * rng.randint(1, 3)


def _leaves(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(value, dict):
        return [leaf for key, item in value.items() for leaf in _leaves(item, (*path, key))]
    if isinstance(value, list):
        return [leaf for i, item in enumerate(value) for leaf in _leaves(item, (*path, i))]
    return [path]


def _changed(value: Any, rng: random.Random) -> Any:
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + rng.choice([-1, 1, 7, -value - 1])
    if isinstance(value, float):
        return value * 2 + 1
    if isinstance(value, str):
        if not value:
            return "x"
        i = rng.randrange(len(value))
        return value[:i] + chr((ord(value[i]) + 1) % 0x80 or 1) + value[i + 1 :]
    return 0  # None


def _edit_line(line: bytes, rng: random.Random) -> tuple[bytes, str]:
    """The line with one value changed, still valid JSON where it was: a number in it, or one JSON leaf."""
    body = line.rstrip(b"\n")
    end = line[len(body) :]
    numbers = list(re.finditer(rb"\d+", body))
    if numbers and rng.random() < 0.5:
        match = rng.choice(numbers)
        old = int(match.group())
        new = rng.choice([old + 1, old + 80, max(old - 1, 0) if old > 1 else old + 2])
        return body[: match.start()] + str(new).encode() + body[match.end() :] + end, f"number {old}->{new}"
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        value = None
    leaves = _leaves(value) if isinstance(value, (dict, list)) else []
    if not leaves:
        if not body:
            return line + b"x", "extended an empty line"
        i = rng.randrange(len(body))
        return body[:i] + bytes([body[i] ^ 0x20]) + body[i + 1 :] + end, f"flipped byte {i}"
    path = rng.choice(leaves)
    holder = value
    for key in path[:-1]:
        holder = holder[key]
    holder[path[-1]] = _changed(holder[path[-1]], rng)
    return orjson.dumps(value) + end, "leaf " + "/".join(map(str, path))


def _line_mutation(kind: str, raw: bytes, rng: random.Random) -> tuple[bytes, str]:
    lines = raw.splitlines(keepends=True)
    if not lines:
        return raw + b"\n", "file was empty"
    i = rng.randrange(len(lines))
    if kind == "delete_line":
        del lines[i]
        return b"".join(lines), f"line {i}"
    if kind == "duplicate_line":
        at = rng.choice([i + 1, len(lines), rng.randrange(len(lines) + 1)])
        lines.insert(at, lines[i])
        return b"".join(lines), f"line {i} again at {at}"
    if kind == "swap_lines":
        if len(lines) < 2:
            return raw[::-1], "reversed (single line)"
        j = rng.choice([i - 1 if i else i + 1, rng.randrange(len(lines))])
        if j == i:
            j = (i + 1) % len(lines)
        lines[i], lines[j] = lines[j], lines[i]
        return b"".join(lines), f"lines {i}<->{j}"
    edited, how = _edit_line(lines[i], rng)
    lines[i] = edited
    return b"".join(lines), f"line {i} {how}"


KINDS = (
    "flip",
    "truncate",
    "junk_append",
    "junk_insert",
    "delete_line",
    "duplicate_line",
    "swap_lines",
    "edit_line",
    "delete_file",
    "replace_record",
    "stray_record",
)


def mutate(root: Path, index: int, rng: random.Random) -> Mutation:
    """Damage the session copy at ``root`` in one seeded way; returns what was done."""
    directory = root / "checkpoints"
    base = rng.choice(["closed", "unpublished"])
    if base == "unpublished":  # a writer killed after its commits, before it created these record files
        for name in sorted(_record_names(directory), key=lambda n: int(n.split("_")[1]))[-UNPUBLISHED_TAIL:]:
            (directory / name).unlink()
    records = _record_names(directory)
    kind = rng.choice(KINDS)
    if kind in ("delete_line", "duplicate_line", "swap_lines", "edit_line"):
        target = rng.choice(LINE_FILES)
    elif kind in ("replace_record", "stray_record"):
        target = rng.choice(records)
    else:
        target = rng.choice([*LINE_FILES, LOG, COMMIT, *rng.sample(records, k=min(4, len(records)))])
    mutation = Mutation(index, base, kind, target)
    path = directory / target
    if kind == "delete_file":
        path.unlink()
        return mutation
    if kind == "replace_record":
        donor = rng.choice([name for name in records if name != target])
        path.write_bytes((directory / donor).read_bytes())
        mutation.detail = f"with the bytes of {donor}"
        return mutation
    if kind == "stray_record":
        step = rng.randrange(60)
        name = f"checkpoint_{step}_message_appended_20261218_000000_{rng.randrange(10**6):06d}.json"
        (directory / name).write_bytes(path.read_bytes())
        mutation.target, mutation.detail = name, f"a copy of {target}, committed nowhere"
        return mutation
    raw = path.read_bytes()
    if kind == "flip":
        if not raw:
            raw = b"\0"
        i = rng.randrange(len(raw))
        raw = raw[:i] + bytes([raw[i] ^ rng.randrange(1, 256)]) + raw[i + 1 :]
        mutation.detail = f"byte {i}"
    elif kind == "truncate":
        size = rng.randrange(len(raw)) if raw else 0
        raw = raw[:size]
        mutation.detail = f"to {size} bytes"
    elif kind == "junk_append":
        junk = _junk(rng, raw.splitlines(keepends=True))
        raw += junk
        mutation.detail = f"{len(junk)} bytes"
    elif kind == "junk_insert":
        lines = raw.splitlines(keepends=True)
        junk = _junk(rng, lines)
        if lines and rng.random() < 0.5:
            at = sum(len(line) for line in lines[: rng.randrange(len(lines) + 1)])
        else:
            at = rng.randrange(len(raw) + 1)
        raw = raw[:at] + junk + raw[at:]
        mutation.detail = f"{len(junk)} bytes at {at}"
    else:
        raw, mutation.detail = _line_mutation(kind, raw, rng)
    path.write_bytes(raw)
    return mutation


# -- reading a damaged copy ---------------------------------------------------------------------------------


@dataclass
class Reading:
    """What a reader saw in one damaged copy."""

    listed: list[str] | None = None
    latest: str | None = None
    equal: set[str] = field(default_factory=set)
    refused: set[str] = field(default_factory=set)
    different: list[str] = field(default_factory=list)
    other: list[str] = field(default_factory=list)
    warned: int = 0
    list_refused: bool = False

    def guarded(self, what: str, call: Callable[[], T]) -> tuple[bool, T | None]:
        """(True, value), or (False, None) after a ``CheckpointError``; anything else is recorded."""
        try:
            return True, call()
        except CheckpointError:
            return False, None
        except Exception as exc:
            frames = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__, limit=-3))
            self.other.append(f"{what}: {type(exc).__name__}: {exc}\n{frames}")
            return False, None


def read_copy(root: Path, session: RecordedSession, *, via_manager: bool) -> Reading:
    """List and load every original checkpoint of the copy at ``root`` as a reader."""
    reading = Reading()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if via_manager:
            ok, manager = reading.guarded("CheckpointManager()", lambda: CheckpointManager(root))
            if manager is not None:
                try:
                    ok, listed = reading.guarded("list_checkpoints", manager.list_checkpoints)
                    reading.listed, reading.list_refused = listed, not ok
                    _, reading.latest = reading.guarded("latest_checkpoint_id", manager.latest_checkpoint_id)
                    load: Callable[[str], Any] = manager.load_checkpoint
                    _load_all(reading, session, load)
                finally:
                    reading.guarded("close", manager.close)
        else:
            ok, store = reading.guarded("FileSessionStore()", lambda: FileSessionStore(root))
            if store is not None:
                try:
                    ok, listed = reading.guarded("list_checkpoints", store.list_checkpoints)
                    reading.listed, reading.list_refused = listed, not ok
                    reading.latest = listed[-1] if listed else None
                    _load_all(reading, session, store.load)
                finally:
                    reading.guarded("close", store.close)
    reading.warned = len(caught)
    return reading


def _load_all(reading: Reading, session: RecordedSession, load: Callable[[str], Any]) -> None:
    for checkpoint_id in session.ids:
        ok, data = reading.guarded(f"load {checkpoint_id}", lambda cid=checkpoint_id: load(cid))
        if not ok:
            reading.refused.add(checkpoint_id)
        elif comparable(data) == session.expected(checkpoint_id):
            reading.equal.add(checkpoint_id)
        else:
            reading.different.append(checkpoint_id)


def violations(reading: Reading, session: RecordedSession, allowed: Collection[str] = ()) -> list[str]:
    """Every broken promise in what a reader saw (``allowed``: ids saved after the recording)."""
    problems = [f"exception other than CheckpointError: {text}" for text in reading.other]
    for checkpoint_id in reading.different:
        problems.append(f"{checkpoint_id} loaded different data without an error")
    order = {cid: i for i, cid in enumerate(session.ids)}
    if reading.listed is not None:
        phantoms = [cid for cid in reading.listed if cid not in order and cid not in allowed]
        if phantoms:
            problems.append(f"phantom checkpoints listed: {phantoms}")
        known = [cid for cid in reading.listed if cid in order or cid in allowed]
        ranks = [order.get(cid, len(order)) for cid in known]
        if ranks != sorted(ranks) or len(set(known)) != len(known):
            problems.append(f"not in step order (or listed twice): {reading.listed}")
    if reading.latest is not None and reading.latest not in order and reading.latest not in allowed:
        problems.append(f"latest_checkpoint_id() is {reading.latest!r}, never saved")
    return problems


def outcome(reading: Reading, problems: list[str]) -> str:
    if reading.other:
        return "OTHER EXCEPTION"
    if reading.different:
        return "SILENTLY DIFFERENT"
    if problems:
        return "PHANTOM/ORDER"
    if reading.refused or reading.list_refused:
        return "detected"
    return "warned, intact" if reading.warned else "intact"


def print_summary(title: str, counts: dict[str, Counter[str]]) -> None:
    columns = sorted({column for counter in counts.values() for column in counter})
    width = max(len(kind) for kind in counts) + 2
    print(f"\n{title}")
    print(" " * width + " | ".join(f"{c:>18}" for c in columns))
    for kind in sorted(counts):
        print(f"{kind:<{width}}" + " | ".join(f"{counts[kind][c]:>18}" for c in columns))


class Pristine:
    """The recorded session's files, kept in memory: ``reset`` turns a used copy back into an exact copy,
    rewriting only what a mutation (or the code under test) changed; creating ~45 files per mutation would
    cost more than the checks themselves on a busy disk."""

    def __init__(self, source: Path) -> None:
        self.files: dict[str, bytes] = {}
        self.dirs: set[str] = set()
        for directory, subdirs, names in os.walk(source):
            base = Path(directory)
            self.dirs.update(str((base / d).relative_to(source)) for d in subdirs)
            self.files.update({str((base / n).relative_to(source)): (base / n).read_bytes() for n in names})

    def reset(self, root: Path) -> Path:
        for directory, subdirs, names in os.walk(root, topdown=False):
            base = Path(directory)
            for name in names:
                path = base / name
                if path.is_symlink() or str(path.relative_to(root)) not in self.files:
                    path.unlink()
            for name in subdirs:
                path = base / name
                if str(path.relative_to(root)) not in self.dirs:
                    if path.is_symlink():
                        path.unlink()
                    else:
                        shutil.rmtree(path)
        for relative in sorted(self.dirs):
            (root / relative).mkdir(parents=True, exist_ok=True)
        for relative, data in self.files.items():
            path = root / relative
            try:
                same = path.read_bytes() == data
            except FileNotFoundError:
                same = False
            if not same:
                path.write_bytes(data)
        return root


@pytest.fixture(scope="module")
def pristine(session: RecordedSession) -> Pristine:
    return Pristine(session.path)


# -- the tests ----------------------------------------------------------------------------------------------


def test_an_intact_copy_reads_back_exactly(session: RecordedSession, tmp_path: Path) -> None:
    """The harness itself: unmutated copies (both starting states) load exactly what was saved."""
    for via_manager in (True, False):
        root = copy_tree(session.path, tmp_path / f"intact_{via_manager}" / session.path.name)
        reading = read_copy(root, session, via_manager=via_manager)
        assert violations(reading, session) == []
        assert reading.listed == session.ids and reading.equal == set(session.ids)
    unpublished = copy_tree(session.path, tmp_path / "unpublished" / session.path.name)
    for checkpoint_id in session.ids[-UNPUBLISHED_TAIL:]:
        session.record_path(checkpoint_id, unpublished).unlink()
    reading = read_copy(unpublished, session, via_manager=True)
    assert violations(reading, session) == []
    assert reading.listed == session.ids, "committed checkpoints whose record files are not created yet"
    assert reading.equal == set(session.ids)


def test_readers_of_damaged_sessions_never_see_wrong_data(
    session: RecordedSession, pristine: Pristine, tmp_path: Path
) -> None:
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    broken: list[str] = []
    for index in range(READER_MUTATIONS):
        rng = random.Random(f"{SEED}-{index}")
        root = pristine.reset(tmp_path / "copy" / session.path.name)
        mutation = mutate(root, index, rng)
        reading = read_copy(root, session, via_manager=index % 2 == 0)
        problems = violations(reading, session)
        counts[f"{mutation.kind} {_file_kind(mutation.target)}"][outcome(reading, problems)] += 1
        counts[f"(all, {mutation.base})"][outcome(reading, problems)] += 1
        broken += [f"{mutation}: {problem}" for problem in problems]
    print_summary(f"reader outcomes over {READER_MUTATIONS} mutations (seed {SEED})", counts)
    shown = "\n".join(broken[:20])
    assert not broken, f"{len(broken)} broken promises, the first ones:\n{shown}"


def test_a_writer_reopening_a_damaged_session_refuses_or_keeps_every_checkpoint(
    session: RecordedSession, pristine: Pristine, tmp_path: Path
) -> None:
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    broken: list[str] = []
    newest = session.checkpoints[session.ids[-1]]
    for index in range(WRITER_MUTATIONS):
        rng = random.Random(f"writer-{SEED}-{index}")
        root = pristine.reset(tmp_path / "copy" / session.path.name)
        mutation = mutate(root, index, rng)
        before = read_copy(root, session, via_manager=True)
        if before.other:
            broken += [f"{mutation}: before the writer: {text}" for text in before.other]
            continue
        attempt = Reading()
        new_id, saved = reopen_and_save(root, newest, attempt)
        if attempt.other:
            broken += [f"{mutation}: the writer: {text}" for text in attempt.other]
            counts[mutation.kind]["OTHER EXCEPTION"] += 1
            continue
        after = read_copy(root, session, via_manager=True)
        allowed = {new_id} if new_id else set()
        problems = violations(after, session, allowed)
        listed_before = set(before.listed or ())
        lost = sorted((before.equal & listed_before) - after.equal, key=session.ids.index)
        if lost:
            problems.append(f"listed and loaded as saved before the writer, no longer after it: {lost}")
        if new_id is not None:
            problems += _check_new_checkpoint(root, new_id, saved)
        label = "refused" if new_id is None else "saved"
        counts[mutation.kind][f"{label}, {'BROKEN' if problems else 'ok'}"] += 1
        broken += [f"{mutation}: {problem}" for problem in problems]
    print_summary(f"writer reopen outcomes over {WRITER_MUTATIONS} mutations (seed {SEED})", counts)
    shown = "\n".join(broken[:20])
    assert not broken, f"{len(broken)} broken promises, the first ones:\n{shown}"


def reopen_and_save(root: Path, newest: CheckpointData, attempt: Reading) -> tuple[str | None, Any]:
    """Open the copy as a writer and save one more checkpoint (the newest one's state, as a manual step).

    Returns the new id and ``comparable`` of what was saved, or (None, None) when the writer refused with a
    ``CheckpointError`` (other exceptions are recorded in ``attempt``).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, writer = attempt.guarded("CheckpointManager() as writer", lambda: CheckpointManager(root))
        if writer is None:
            return None, None
        try:
            ok, step = attempt.guarded("next_step_number", writer.next_step_number)
            if not ok or step is None:
                return None, None
            update = {
                "step_number": step,
                "context": "manual",
                "checkpoint_id": "reopened",
                "integrity": None,
            }
            data = newest.model_copy(update=update)
            ok, _ = attempt.guarded("save_checkpoint", lambda: writer.save_checkpoint(data))
            if not ok:
                return None, None
            return writer.last_checkpoint_id, comparable(data)
        finally:
            attempt.guarded("close", writer.close)


def _check_new_checkpoint(root: Path, new_id: str, saved: dict[str, Any] | None) -> list[str]:
    """The checkpoint a writer saved into a damaged session loads as it was given, or not at all."""
    reading = Reading()
    manager = CheckpointManager(root)
    try:
        ok, data = reading.guarded(f"load {new_id}", lambda: manager.load_checkpoint(new_id))
    finally:
        manager.close()
    problems = [f"exception other than CheckpointError: {text}" for text in reading.other]
    if ok and data is not None and saved is not None:
        loaded = comparable(data)
        fields = ("step_number", "context", "messages", "agent_states", "manager_state", "groupchat_state")
        changed = [name for name in fields if loaded[name] != saved[name]]
        if changed:
            problems.append(f"the writer's new checkpoint {new_id} loads with other {changed}")
    return problems


def _file_kind(name: str) -> str:
    return name if name in LINE_FILES else "(record)"
