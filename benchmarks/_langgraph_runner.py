"""LangGraph's ``SqliteSaver`` fed the benchmark's message stream (one message appended per step).

Optional: ``available()`` says whether ``langgraph`` and ``langgraph-checkpoint-sqlite`` import; install them
with the ``bench`` extra (``pip install -e '.[bench]'``).

Two ways to hold the messages in the graph state:

* ``list``  -- ``messages: list`` (a ``LastValue`` channel): the node returns the whole list plus the new
  message, so every checkpoint (and every pending write) holds the whole list;
* ``delta`` -- ``messages: Annotated[list, DeltaChannel(append)]`` (LangGraph 1.x's delta channel, beta):
  a step stores only its write; a full snapshot of the list is written every ``snapshot_frequency`` (100,
  LangGraph's default) updates, and the state is rebuilt by replaying the writes since the last snapshot.

The graph is one node that appends message ``len(state)`` of the stream and loops to itself until the list
holds ``n`` messages: one super-step, hence one checkpoint, per message. The node timestamps itself at its
start; the interval between two starts holds one step (the previous step's checkpoint written -- with
``durability="sync"`` before the next step starts -- plus the channel update). The same graph compiled
without a checkpointer is the baseline of each variant.
"""

from __future__ import annotations

import itertools
import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypedDict

if TYPE_CHECKING:
    from langchain_core.runnables import RunnableConfig

    _Messages = list[Any]
else:
    # LangGraph reads the state's annotations at run time: they stay the bare ``list`` the benchmark has
    # always measured (DeltaChannel even calls ``typ()`` for its empty value); to mypy it is ``list[Any]``
    _Messages = list

VARIANTS = ("list", "delta")


def available() -> str | None:
    """None when LangGraph and its SQLite saver import, else the reason they do not."""
    try:
        import langgraph.channels
        import langgraph.checkpoint.sqlite
        import langgraph.graph  # noqa: F401
    except ImportError as exc:
        return f"{exc} (pip install -e '.[bench]')"
    try:
        from langgraph.channels import DeltaChannel  # noqa: F401
    except ImportError:
        return "this LangGraph has no DeltaChannel (LangGraph >= 1.2 needed for the delta variant)"
    return None


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as package_version

    parts = []
    for name in ("langgraph", "langgraph-checkpoint", "langgraph-checkpoint-sqlite"):
        try:
            parts.append(f"{name} {package_version(name)}")
        except PackageNotFoundError:
            parts.append(f"{name} ?")
    return ", ".join(parts)


def _append_batch(state: list[Any], writes: Sequence[list[Any]]) -> list[Any]:
    """DeltaChannel reducer: ``(state, [write, ...]) -> new state``; batching-invariant (plain appends)."""
    result = list(state)
    for write in writes:
        result.extend(write)
    return result


class _ListState(TypedDict):
    messages: _Messages


def _delta_state() -> type:
    from langgraph.channels import DeltaChannel

    # built at run time (LangGraph is optional); the annotation must be a real object, not a string (so
    # not the class syntax, whose annotations ``from __future__ import annotations`` turns into strings)
    DeltaState = TypedDict(  # noqa: UP013
        "DeltaState", {"messages": Annotated[_Messages, DeltaChannel(_append_batch)]}
    )
    return DeltaState


class _Stamps:
    """Timestamps of node starts, with time spent in size probes taken out (``paused``)."""

    def __init__(self, probe: Callable[[int], None] | None, probe_every: int) -> None:
        self.stamps: list[float] = []
        self.paused = 0.0
        self.probe = probe
        self.probe_every = probe_every

    def mark(self, done: int) -> None:
        now = time.perf_counter()
        self.stamps.append(now - self.paused)
        if self.probe is not None and done and done % self.probe_every == 0:
            self.probe(done)
            self.paused += time.perf_counter() - now


def build_graph(variant: str, stream: Sequence[dict[str, Any]], stamps: _Stamps, checkpointer: Any) -> Any:
    from langgraph.graph import END, START, StateGraph

    n = len(stream)
    if variant == "list":

        def speak(state: dict[str, Any]) -> dict[str, Any]:
            messages = state["messages"]
            stamps.mark(len(messages))
            return {"messages": [*messages, stream[len(messages)]]}

        builder = StateGraph(_ListState)
    elif variant == "delta":

        def speak(state: dict[str, Any]) -> dict[str, Any]:
            done = len(state["messages"])
            stamps.mark(done)
            return {"messages": [stream[done]]}

        builder = StateGraph(_delta_state())
    else:
        raise ValueError(variant)

    def route(state: dict[str, Any]) -> str:
        return END if len(state["messages"]) >= n else "speak"

    # LangGraph types a node's input as a state class (TypedDict, dataclass, pydantic model); ours takes a
    # plain dict on purpose: LangGraph then infers no input schema from the annotation it reads at run time
    # and hands the node the graph's own state (DeltaState only exists at run time). Without LangGraph
    # installed (as in CI) the ignore has nothing to silence: hence "unused-ignore"
    builder.add_node("speak", speak)  # type: ignore[type-var, unused-ignore]
    builder.add_edge(START, "speak")
    builder.add_conditional_edges("speak", route)
    return builder.compile(checkpointer=checkpointer)


def db_files(path: Path) -> list[Path]:
    return [
        p for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm"), Path(f"{path}-journal")) if p.exists()
    ]


def db_bytes(path: Path) -> tuple[int, int]:
    apparent = allocated = 0
    for p in db_files(path):
        st = p.stat()
        apparent += st.st_size
        allocated += getattr(st, "st_blocks", 0) * 512
    return apparent, allocated


def run(
    variant: str,
    stream: Sequence[dict[str, Any]],
    workdir: Path | None,
    *,
    durability: str = "sync",
    loads: int = 5,
    probe_every: int = 0,
) -> dict[str, Any]:
    """One run of ``variant``; ``workdir=None`` runs the baseline (no checkpointer)."""
    from langgraph.checkpoint.sqlite import SqliteSaver

    n = len(stream)
    config: RunnableConfig = {"configurable": {"thread_id": "bench"}, "recursion_limit": n + 10}
    curve: list[tuple[int, int]] = []
    conn = saver = None
    db = None
    if workdir is not None:
        db = workdir / "langgraph.db"
        conn = sqlite3.connect(db, check_same_thread=False)  # what SqliteSaver.from_conn_string does
        saver = SqliteSaver(conn)
        saver.setup()

        probe_conn = sqlite3.connect(db, check_same_thread=False)

        def probe(done: int) -> None:
            # page_count * page_size as a reader sees it: the WAL file's size is not data (see _backends)
            (pages,) = probe_conn.execute("PRAGMA page_count").fetchone()
            (page_size,) = probe_conn.execute("PRAGMA page_size").fetchone()
            curve.append((done, pages * page_size))

    stamps = _Stamps(probe if (db is not None and probe_every) else None, probe_every or 1)
    graph = build_graph(variant, stream, stamps, saver)
    kwargs = {"durability": durability} if saver is not None else {}
    t0 = time.perf_counter()
    final = graph.invoke({"messages": []}, config, **kwargs)
    t1 = time.perf_counter() - stamps.paused
    if len(final["messages"]) != n:
        raise RuntimeError(f"langgraph {variant}: {len(final['messages'])} messages, expected {n}")
    edges = [t0, *stamps.stamps, t1]
    intervals = [(b - a) * 1e3 for a, b in itertools.pairwise(edges)]
    result: dict[str, Any] = {"total_ms": (t1 - t0) * 1e3, "per_message_ms": intervals[1:n]}
    if saver is None or db is None or conn is None:
        return result
    synchronous = conn.execute("PRAGMA synchronous").fetchone()[0]
    journal = conn.execute("PRAGMA journal_mode").fetchone()[0]
    checkpoint_ids = [c.config["configurable"]["checkpoint_id"] for c in saver.list(config)][::-1]
    probe_conn.close()
    conn.close()  # the last connection to close checkpoints the WAL into the database file and removes it
    apparent, allocated = db_bytes(db)
    curve.append((n, apparent))
    result.update(
        bytes=apparent,
        bytes_allocated=allocated,
        bytes_by_file={"langgraph.db": apparent},
        checkpoints=len(checkpoint_ids),
        size_curve=curve,
        sqlite_settings=f"journal_mode={journal}, synchronous={_SYNC_NAMES.get(synchronous, synchronous)}",
    )
    # Loading: a new connection and saver (as a new process would), timed get_state of the first, middle
    # and latest checkpoint (the latest without a checkpoint id, as an application resumes a thread).
    conn = sqlite3.connect(db, check_same_thread=False)
    try:
        reader = build_graph(variant, stream, _Stamps(None, 1), SqliteSaver(conn))
        chosen = [checkpoint_ids[0], checkpoint_ids[len(checkpoint_ids) // 2], None]
        load_ms = []
        for checkpoint_id in chosen:
            cfg: dict[str, Any] = {"configurable": {"thread_id": "bench"}}
            if checkpoint_id is not None:
                cfg["configurable"]["checkpoint_id"] = checkpoint_id
            samples = []
            for _ in range(max(1, loads)):
                t = time.perf_counter()
                state = reader.get_state(cfg)
                samples.append((time.perf_counter() - t) * 1e3)
            load_ms.append(sorted(samples)[len(samples) // 2])
            if checkpoint_id is None:
                result["last_checkpoint_messages"] = len(state.values.get("messages", []))
        result["load_ms"] = load_ms
    finally:
        conn.close()
    return result


_SYNC_NAMES = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}
