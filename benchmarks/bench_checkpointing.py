#!/usr/bin/env python
"""What checkpointing every message costs: ours (each backend) vs plain AG2, the seed design and LangGraph.

One process runs, side by side and interleaved, the same deterministic AG2 group chat (``--agents``
``ConversableAgent``s answering through ``DeterministicModelClient``: the real ``generate_reply`` /
``OpenAIWrapper`` path, no network; replies of ``--message-bytes`` ASCII bytes that differ per message;
round-robin speakers; ``max_round = M``; the message count is asserted) under these configurations:

* ``baseline``           plain ``autogen.GroupChatManager``;
* ``control``            the plain manager plus ``--control-us`` of constant CPU-only work where ours takes
                         its checkpoint: the flatness verdict's reference (its cost cannot grow);
* ``ours``               ``CheckpointingGroupChatManager`` + ``CheckpointManager(<dir>)`` (file store,
                         durability "crash");  ``ours-fsync``: the same with ``durability="fsync"``;
* ``ours-sqlite``        ``CheckpointManager("sqlite:///<tmp>/x.db", session_id="s")`` (if
                         ``checkpoint_system.storage.sqlite`` imports); ``ours-sqlite-fsync`` on request;
* ``ours-pg``            ``CheckpointManager("postgresql://...")`` with ``--postgres-url`` or
                         ``$CHECKPOINT_BENCH_POSTGRES_URL`` (``auto``: a throwaway local server); a fresh
                         database per run; ``ours-pg-fsync`` on request;
* ``naive``              the seed's design, written by the benchmark: after every message, an indented JSON
                         snapshot of all messages plus every agent's full history, one file per message.
                         Quadratic, so above ``--naive-max-messages`` it is sampled (``naive~``);
* ``lg-list``/``lg-delta``  LangGraph's ``SqliteSaver`` fed the same messages, one per step: a plain
                         ``messages: list`` state, and the ``DeltaChannel`` (see ``_langgraph_runner.py``);
                         only if LangGraph is installed (the ``bench`` extra). Their baseline is the same
                         graph without a checkpointer.

Per-message time: a hook timestamps every message as it is appended (``GroupChat.append`` for AG2, the node's
start for LangGraph); the interval between two holds one full round, including the previous message's
checkpoint. Added time = per-index (config - its baseline) after the per-index median over ``--repeats``
runs (``--flat-repeats`` for the rows whose flatness is judged, their baseline and the control; above
``LARGE_ABOVE`` messages ``--repeats-large``, and the quadratic rows are skipped). Flatness compares the first
and the last tenth of the chat. Bytes on disk are the apparent size (what the targets use); ``du`` (allocated
blocks) is shown too. Loads: median of ``--loads`` loads of the first, middle and last checkpoint into a
``CheckpointData`` (LangGraph: ``graph.get_state``). Restore: ``CheckpointRestorer(agent_factory=...)
.restore(<last>)``, median of ``--restores``. Continue: ``CheckpointRestorer(agent_factory=...)
.continue_from(<middle>, max_rounds=1)``, median of ``--continues``, timed until the checkpoint holding the
new message is saved and until the call returns. Everything is printed as a table per message count, judged
against the targets of issue 18 at 1,000 and 10,000 messages, written to JSON, and plotted to a PNG.

    python benchmarks/bench_checkpointing.py                     # 1,000 and 10,000 messages (~15 min)
    python benchmarks/bench_checkpointing.py --postgres-url auto # + PostgreSQL (throwaway local server)
    python benchmarks/bench_checkpointing.py --quick             # 200 messages, 1 repeat: a smoke test
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import functools
import gc
import io
import itertools
import json
import logging
import os
import platform
import pstats
import random
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypedDict, cast

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
for _path in (str(REPO_ROOT), str(BENCH_DIR)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

warnings.filterwarnings("ignore")
logging.disable(logging.INFO)  # AG2 logs an INFO line per custom model client

import _backends  # noqa: E402
import _langgraph_runner  # noqa: E402
from autogen import Agent, ConversableAgent, GroupChat, GroupChatManager  # noqa: E402
from autogen.io.base import IOStream  # noqa: E402

from checkpoint_system import CheckpointingGroupChatManager, CheckpointManager, CheckpointRestorer  # noqa: E402
from checkpoint_system.storage import Durability  # noqa: E402
from checkpoint_system.testing import DeterministicModelClient, deterministic_llm_config  # noqa: E402

# The targets of issue 18 ("Storage v1"), for chats of ~1 KiB messages between 4 agents at 1,000 and
# 10,000 messages. Verdicts are printed for files and SQLite at their default durability (JUDGED_ROWS);
# PostgreSQL and the fsync rows are reported beside them without one.
TARGET_ADDED_MS = 0.5
TARGET_BYTES_RATIO = 2.5
TARGET_CONTINUE_MS = 100.0  # named at 10,000 messages; applied at every count (it only gets easier below)
TARGET_SCALES = (1000, 10000)
JUDGED_ROWS = ("ours", "ours-sqlite")
# "no higher over the last tenth of the chat than over the first": the last tenth's added time may exceed
# the first tenth's by this much (absolute ms, or relative) before it counts as growth -- the noise floor.
FLAT_TOLERANCE_MS = 0.05
FLAT_TOLERANCE_REL = 0.20
# The configurations whose flatness is a target, their baseline and the control: run --flat-repeats times.
FLATNESS_CONFIGS = ("baseline", "control", "ours", "ours-sqlite")
# Above this many messages a count is "large": every row runs --repeats-large times, the slow rows that are
# not judged (*-fsync, lg-delta) once, and the rows whose cost is quadratic in the message count (naive,
# lg-list) not at all. A plain 10,000-message chat alone takes ~20 s here (AG2 walks every history on every
# reply).
LARGE_ABOVE = 2000
QUADRATIC_CONFIGS = ("naive", "lg-list", "lg-list-base")
ONCE_AT_LARGE = ("ours-fsync", "ours-sqlite-fsync", "ours-pg-fsync", "lg-delta", "lg-delta-base")


def target_load_ms(n_messages: int) -> float:
    """Loading the last checkpoint: < 10 ms at 1,000 messages (and below), < 25 ms above (named at 10,000)."""
    return 10.0 if n_messages <= 1000 else 25.0


def tenth(n_messages: int) -> int:
    """The flatness window: a tenth of the chat (100 messages at 1,000, 1,000 at 10,000)."""
    return max(1, n_messages // 10)


def is_large(n_messages: int) -> bool:
    return n_messages > LARGE_ABOVE


UNLIMITED_AUTO_REPLY = 10**9  # AG2's default max_consecutive_auto_reply (100) would end the chat early


@dataclass(frozen=True)
class Config:
    name: str
    kind: str  # baseline | control | ours | naive | langgraph | langgraph-base
    backend: str | None = None
    durability: Durability = "crash"
    variant: str | None = None

    @property
    def baseline(self) -> str:
        return f"lg-{self.variant}-base" if self.kind == "langgraph" else "baseline"


CONFIGS: dict[str, Config] = {
    c.name: c
    for c in (
        Config("baseline", "baseline"),
        Config("control", "control"),
        Config("ours", "ours", "file"),
        Config("ours-fsync", "ours", "file", "fsync"),
        Config("ours-sqlite", "ours", "sqlite"),
        Config("ours-sqlite-fsync", "ours", "sqlite", "fsync"),
        Config("ours-pg", "ours", "postgres"),
        Config("ours-pg-fsync", "ours", "postgres", "fsync"),
        Config("naive", "naive"),
        Config("lg-list", "langgraph", variant="list"),
        Config("lg-delta", "langgraph", variant="delta"),
        Config("lg-list-base", "langgraph-base", variant="list"),
        Config("lg-delta-base", "langgraph-base", variant="delta"),
    )
}
DEFAULT_CONFIGS = (
    "baseline",
    "control",
    "ours",
    "ours-fsync",
    "ours-sqlite",
    "ours-sqlite-fsync",
    "ours-pg",
    "naive",
    "lg-list",
    "lg-delta",
)
ROW_ORDER = (
    "control",
    "ours",
    "ours-fsync",
    "ours-sqlite",
    "ours-sqlite-fsync",
    "ours-pg",
    "ours-pg-fsync",
    "naive",
    "lg-list",
    "lg-delta",
)


# -- the chat ---------------------------------------------------------------------------------------------
_WORDS = (
    "agent plan step result check value error test code data model message reply review change file "
    "function return list state config group chat round speaker history checkpoint restore fork branch "
    "input output parse format write read load save merge split filter count index limit buffer cache "
    "should could would must will then because therefore however also next first last final second "
    "the a an of to in for on with by from as at is are was be this that these it we you they"
)


def _text_pool(size: int = 1 << 20, seed: int = 20240611) -> str:
    rng = random.Random(seed)
    vocabulary = _WORDS.split()
    words: list[str] = []
    total = 0
    while total < size:
        word = rng.choice(vocabulary)
        words.append(word)
        total += len(word) + 1
    return " ".join(words)


class _Replies:
    """Deterministic replies of exactly ``size`` ASCII bytes, different for every message."""

    def __init__(self, size: int) -> None:
        self.size = max(size, 32)
        self.pool = _text_pool(max(1 << 20, self.size * 64))

    def text(self, agent_name: str, index: int) -> str:
        header = f"[{agent_name} #{index}] "
        span = self.size - len(header)
        offset = (index * 7919 + sum(map(ord, agent_name)) * 104729) % (len(self.pool) - span)
        return header + self.pool[offset : offset + span]

    def policy(self, agent_name: str, messages: list[dict[str, Any]]) -> str:
        return self.text(agent_name, len(messages))


class _NullIO:
    """An IOStream that drops everything (console printing would dominate and add noise)."""

    def print(self, *objects: Any, sep: str = " ", end: str = "\n", flush: bool = False) -> None:
        pass

    def send(self, message: Any) -> None:
        pass

    def input(self, prompt: str = "", *, password: bool = False) -> str:
        return ""


def broadcast_ends_with(manager: GroupChatManager, recipient: Any) -> bool:
    """True when ``recipient`` is the last agent the manager sends the newest message to.

    That is the point where ``CheckpointingGroupChatManager`` takes its checkpoint: every other agent has the
    message in its history.
    """
    speaker = manager._last_speaker
    targets = [agent for agent in manager.groupchat.agents if agent is not speaker]
    return bool(targets) and recipient is targets[-1]


def spin(seconds: float) -> None:
    """Wait ``seconds`` on the CPU, touching no memory beyond a few locals."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


class ConstantWorkManager(GroupChatManager):
    """A plain manager that runs ``work`` where ``CheckpointingGroupChatManager`` takes its checkpoint.

    That point is the end of the broadcast of each group chat message (its last recipient), as in
    ``NaiveSnapshotManager``. With ``work`` a constant CPU-only wait this is the ``control`` configuration:
    work whose own cost cannot grow with the conversation, so whatever growth its added time shows belongs to
    the harness and the machine (see ``summarize``).
    """

    def __init__(self, work: Callable[[], None], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.work = work

    def send(
        self, message: Any, recipient: Any, request_reply: bool | None = None, silent: bool | None = False
    ) -> None:
        super().send(message, recipient, request_reply, silent)
        if broadcast_ends_with(self, recipient):
            self.work()


class NaiveSnapshotManager(GroupChatManager):
    """The seed's design: after every message, a full indented JSON snapshot in a new file.

    The snapshot is taken at the same consistent point as ``CheckpointingGroupChatManager``'s (the manager
    has delivered the message to the last recipient of its broadcast) and uses the seed's inline format, so
    ``CheckpointManager.load_checkpoint_file`` reads it back through the seed-format migration.

    With ``snapshot_dir=None`` nothing is written: the manager only records, at each of those points, the
    length of every history (used to rebuild the state after message k for the sampled naive run).
    """

    def __init__(self, snapshot_dir: Path | None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.snapshot_dir = snapshot_dir
        if snapshot_dir is not None:
            snapshot_dir.mkdir(parents=True, exist_ok=True)
        self.recorded: list[dict[int, int]] = []
        self._snapshotted = 0
        self._step = 0

    def send(
        self, message: Any, recipient: Any, request_reply: bool | None = None, silent: bool | None = False
    ) -> None:
        super().send(message, recipient, request_reply, silent)
        messages = self.groupchat.messages
        if len(messages) <= self._snapshotted:
            return
        if broadcast_ends_with(self, recipient):
            # AG2 types GroupChat.agents as list[Agent]; the benchmark's group chats hold ConversableAgents
            participants = cast("list[ConversableAgent]", [*self.groupchat.agents, self])
            if self.snapshot_dir is None:
                self.recorded.append({id(h): len(h) for a in participants for h in a._oai_messages.values()})
            else:
                write_naive_snapshot(self.snapshot_dir, self._step, messages, participants)
            self._step += 1
            self._snapshotted = len(messages)


def _naive_agent(agent: ConversableAgent, limit: Callable[[list[Any]], list[Any]]) -> dict[str, Any]:
    return {
        "name": agent.name,
        "system_message": agent.system_message,
        "description": agent.description,
        "human_input_mode": str(agent.human_input_mode),
        "termination_pattern": "TERMINATE",
        "oai_messages": {
            getattr(peer, "name", str(peer)): limit(h) for peer, h in agent._oai_messages.items()
        },
    }


def naive_document(
    step: int,
    messages: list[dict[str, Any]],
    agents: list[ConversableAgent],
    limit: Callable[[list[Any]], list[Any]] = list,
) -> dict[str, Any]:
    manager = agents[-1]
    return {
        "checkpoint_id": f"checkpoint_{step}",
        "timestamp": datetime.now(timezone.utc).isoformat(),
        "step_number": step,
        "context": "message_appended",
        "messages": list(messages),
        "agent_states": {agent.name: _naive_agent(agent, limit) for agent in agents[:-1]},
        "manager_state": _naive_agent(manager, limit),
    }


def write_naive_snapshot(
    directory: Path,
    step: int,
    messages: list[dict[str, Any]],
    agents: list[ConversableAgent],
    limit: Callable[[list[Any]], list[Any]] = list,
) -> Path:
    path = directory / f"checkpoint_{step:06d}.json"
    document = naive_document(step, messages, agents, limit)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(json.dumps(document, indent=2, default=str))
    return path


class Timing(TypedDict):
    """``TimedGroupChat.timing``: message timestamps, time spent in size probes, and the size curve."""

    stamps: list[float]
    paused: float
    probe: Callable[[], int] | None
    every: int
    curve: list[tuple[int, int]]


class TimedGroupChat(GroupChat):
    """A ``GroupChat`` that timestamps every appended message (and samples bytes on disk, untimed).

    AG2 registers a shallow copy of the group chat as the reply function's config, so the hook must be on
    the class; the copy shares ``messages`` and ``timing`` with the original. Time spent in the size probe
    is taken out of the stamps (``paused``).
    """

    timing: Timing  # set by build_groupchat (an annotation only: not a dataclass field)

    def append(self, message: dict[str, Any], speaker: Any) -> None:
        super().append(message, speaker)
        timing = self.timing
        now = time.perf_counter()
        timing["stamps"].append(now - timing["paused"])
        probe = timing["probe"]
        if probe is not None:
            done = len(self.messages) - 1  # messages checkpointed so far (the newest is not yet broadcast)
            if done and done % timing["every"] == 0:
                timing["curve"].append((done, probe()))
                timing["paused"] += time.perf_counter() - now


def make_agents(n_agents: int, replies: _Replies) -> list[ConversableAgent]:
    agents = []
    for i in range(n_agents):
        agent = ConversableAgent(
            f"agent_{i}",
            system_message=f"You are agent {i} of a benchmark group chat. Answer the last message.",
            llm_config=deterministic_llm_config(f"agent_{i}"),
            human_input_mode="NEVER",
            max_consecutive_auto_reply=UNLIMITED_AUTO_REPLY,
        )
        # AG2 annotates model_client_cls as a ModelClient instance where it takes the class
        agent.register_model_client(DeterministicModelClient, policy=replies.policy)  # type: ignore[arg-type]
        agents.append(agent)
    return agents


def build_groupchat(agents: list[ConversableAgent], n_messages: int) -> TimedGroupChat:
    # AG2 types GroupChat.agents as list[Agent] (invariant); these are ConversableAgents
    groupchat = TimedGroupChat(
        agents=cast("list[Agent]", agents),
        messages=[],
        max_round=n_messages,
        speaker_selection_method="round_robin",
    )
    groupchat.timing = {"stamps": [], "paused": 0.0, "probe": None, "every": 50, "curve": []}
    return groupchat


def _manager_kwargs(groupchat: GroupChat) -> dict[str, Any]:
    return {
        "groupchat": groupchat,
        "llm_config": False,
        "silent": True,
        "max_consecutive_auto_reply": UNLIMITED_AUTO_REPLY,
    }


# -- one run ----------------------------------------------------------------------------------------------
def _run_chat(
    initiator: ConversableAgent,
    manager: GroupChatManager,
    groupchat: TimedGroupChat,
    replies: _Replies,
    n_messages: int,
    label: str,
    profiler: Any = None,
) -> tuple[float, float]:
    gc.collect()
    with IOStream.set_default(_NullIO()):
        if profiler is not None:
            profiler.enable()
        t0 = time.perf_counter()
        initiator.initiate_chat(manager, message=replies.text(initiator.name, 0), silent=True)
        t1 = time.perf_counter() - groupchat.timing["paused"]
        if profiler is not None:
            profiler.disable()
    if len(groupchat.messages) != n_messages:
        raise RuntimeError(f"{label}: the chat has {len(groupchat.messages)} messages, expected {n_messages}")
    return t0, t1


def _time_checkpoint_calls(cm: CheckpointManager) -> list[float]:
    """Time every per-message ``take_checkpoint`` call (snapshot + store save): our own work, alone.

    The added time (config - baseline) also holds whatever the checkpointing does to AG2's own work
    around it (caches, the other core); this is the part that runs in our code.
    """
    durations: list[float] = []
    take = cm.take_checkpoint

    def timed(**kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return take(**kwargs)
        finally:
            if kwargs.get("context") == "message_appended":
                durations.append((time.perf_counter() - start) * 1e3)

    cm.take_checkpoint = timed  # type: ignore[method-assign]
    return durations


def _intervals(t0: float, t1: float, stamps: list[float], n_messages: int) -> list[float]:
    edges = [t0, *stamps, t1]
    intervals = [(b - a) * 1e3 for a, b in itertools.pairwise(edges)]
    return intervals[1:n_messages]  # one interval per message after the first: each holds one full round


def _raw_bytes(messages: list[dict[str, Any]]) -> int:
    return sum(len(str(m.get("content") or "").encode()) for m in messages)


def _median_ms(fn: Callable[[], Any], times: int) -> float:
    samples = []
    for _ in range(max(1, times)):
        t = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t) * 1e3)
    return statistics.median(samples)


def _first_mid_last(items: list[Any]) -> list[Any]:
    return [items[0], items[len(items) // 2], items[-1]] if items else []


class Bench:
    """Holds the settings and runs single configurations."""

    def __init__(self, args: argparse.Namespace, base: Path, postgres_url: str | None) -> None:
        self.args = args
        self.base = base
        self.replies = _Replies(args.message_bytes)
        self.postgres_url = postgres_url
        self.streams: dict[int, list[dict[str, Any]]] = {}

    # the same message stream for LangGraph: the AG2 chat's own messages
    def stream(self, n_messages: int) -> list[dict[str, Any]]:
        if n_messages not in self.streams:
            agents = make_agents(self.args.agents, self.replies)
            groupchat = build_groupchat(agents, n_messages)
            manager = GroupChatManager(**_manager_kwargs(groupchat))
            _run_chat(agents[0], manager, groupchat, self.replies, n_messages, "stream")
            self.streams[n_messages] = [dict(m) for m in groupchat.messages]
        return self.streams[n_messages]

    def backend(self, config: Config, workdir: Path) -> Any:
        if config.backend == "file":
            return _backends.FileBackend(workdir, config.durability)
        if config.backend == "sqlite":
            return _backends.SqliteBackend(workdir, config.durability)
        if config.backend == "postgres":
            assert self.postgres_url is not None
            return _backends.PostgresBackend(workdir, config.durability, self.postgres_url)
        raise ValueError(config.backend)

    def run(
        self,
        name: str,
        n_messages: int,
        *,
        curve: bool = False,
        loads: bool = True,
        profiler: Any = None,
    ) -> dict[str, Any]:
        config = CONFIGS[name]
        workdir = Path(tempfile.mkdtemp(prefix=f"{name}_", dir=self.base))
        try:
            if config.kind in ("langgraph", "langgraph-base"):
                return self._run_langgraph(config, n_messages, workdir, curve)
            return self._run_ag2(config, n_messages, workdir, curve, loads, profiler)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    def _run_langgraph(self, config: Config, n_messages: int, workdir: Path, curve: bool) -> dict[str, Any]:
        stream = self.stream(n_messages)
        assert config.variant is not None
        result = _langgraph_runner.run(
            config.variant,
            stream,
            workdir if config.kind == "langgraph" else None,
            durability=self.args.lg_durability,
            loads=self.args.loads,
            probe_every=size_every(self.args, n_messages) if curve else 0,
        )
        result["raw_text_bytes"] = _raw_bytes(stream)
        if config.kind == "langgraph" and result.get("last_checkpoint_messages") != n_messages:
            raise RuntimeError(
                f"{config.name}: the latest state holds {result.get('last_checkpoint_messages')} messages"
            )
        return result

    def _run_ag2(
        self, config: Config, n_messages: int, workdir: Path, curve: bool, loads: bool, profiler: Any
    ) -> dict[str, Any]:
        """One chat under ``config``: its timings, and (for ours and naive) its bytes on disk; load and
        restore times too when ``loads`` (the extra flatness repeats skip them)."""
        args = self.args
        agents = make_agents(args.agents, self.replies)
        groupchat = build_groupchat(agents, n_messages)
        timing = groupchat.timing
        timing["every"] = size_every(args, n_messages)
        backend = None
        cm: CheckpointManager | None = None
        session = workdir / "session"
        try:
            if config.kind == "baseline":
                manager: GroupChatManager = GroupChatManager(**_manager_kwargs(groupchat))
            elif config.kind == "control":
                work = functools.partial(spin, args.control_us / 1e6)
                manager = ConstantWorkManager(work, **_manager_kwargs(groupchat))
            elif config.kind == "ours":
                backend = self.backend(config, workdir)
                cm = backend.manager()
                hook_ms = _time_checkpoint_calls(cm)
                manager = CheckpointingGroupChatManager(cm, **_manager_kwargs(groupchat))
                if curve:
                    timing["probe"] = backend.probe
            elif config.kind == "naive":
                manager = NaiveSnapshotManager(session / "checkpoints", **_manager_kwargs(groupchat))
                if curve:
                    timing["probe"] = lambda: _backends.dir_bytes(session)[0]
            else:
                raise ValueError(config.kind)
            t0, t1 = _run_chat(agents[0], manager, groupchat, self.replies, n_messages, config.name, profiler)
            result: dict[str, Any] = {
                "total_ms": (t1 - t0) * 1e3,
                "per_message_ms": _intervals(t0, t1, timing["stamps"], n_messages),
                "raw_text_bytes": _raw_bytes(groupchat.messages),
                "fingerprint": hash(tuple(m.get("content") for m in groupchat.messages)),
            }
            if config.kind == "baseline" and n_messages not in self.streams:
                self.streams[n_messages] = [dict(m) for m in groupchat.messages]  # LangGraph's input
            if config.kind in ("baseline", "control"):
                return result
            if config.kind == "naive":
                result["bytes"], result["bytes_allocated"], result["bytes_by_file"] = _backends.dir_bytes(
                    session
                )
                files = sorted((session / "checkpoints").glob("checkpoint_*.json"))
                result["checkpoints"] = len(files)
                result["load_ms"] = [
                    _median_ms(functools.partial(CheckpointManager.load_checkpoint_file, p), args.loads)
                    for p in _first_mid_last(files)
                ]
                result["size_curve"] = [*timing["curve"], (n_messages, result["bytes"])] if curve else []
                return result
            assert cm is not None and backend is not None
            result["hook_ms"] = hook_ms
            references = backend.references(cm)
            backend.close_writer(cm)
            result["bytes"], result["bytes_allocated"], result["bytes_by_file"] = backend.size()
            result["size_curve"] = [*timing["curve"], (n_messages, result["bytes"])] if curve else []
            result["checkpoints"] = len(references)
            if not loads:
                return result
            load = backend.loader()
            chosen = _first_mid_last(references)
            result["load_ms"] = [_median_ms(functools.partial(load, *c), args.loads) for c in chosen]
            last = load(*chosen[-1])
            result["last_checkpoint_messages"] = len(last.messages)
            result["cold_load_ms"] = _median_ms(lambda: backend.cold_load(chosen[-1][1]), 1)
            if args.restores:
                result.update(self._restores(chosen[-1][1], n_messages))
            if args.continues:
                middle = chosen[1]
                result.update(self._continues(middle[1], len(load(*middle).messages)))
            return result
        finally:
            if backend is not None:
                backend.cleanup()

    def _restores(self, reference: Any, n_messages: int) -> dict[str, Any]:
        """Median time of ``CheckpointRestorer(agent_factory=...).restore(<last checkpoint>)``."""

        def factory() -> list[ConversableAgent]:
            return make_agents(self.args.agents, self.replies)

        restorer = CheckpointRestorer(agent_factory=factory)
        samples = []
        for _ in range(self.args.restores):
            gc.collect()
            t = time.perf_counter()
            restored = restorer.restore(reference)
            samples.append((time.perf_counter() - t) * 1e3)
            if len(restored.groupchat.messages) != n_messages:
                raise RuntimeError(
                    f"restore: {len(restored.groupchat.messages)} messages, expected {n_messages}"
                )
            cm = restored.checkpoint_manager
            cm.close()
            if cm.backing_store is not None:
                _backends.close_store(cm.backing_store)
            with contextlib.suppress(Exception):
                _backends.close_store(restored.checkpoint_file.store)
        factory_ms = _median_ms(factory, self.args.restores)
        return {"restore_ms": statistics.median(samples), "restore_factory_ms": factory_ms}

    def _continues(self, reference: Any, held: int) -> dict[str, Any]:
        """``CheckpointRestorer(agent_factory=...).continue_from(<middle>, max_rounds=1)``, ``--continues``
        times: the median time until the checkpoint holding the first new message is saved, and of the
        whole call (which then also saves the end checkpoint and writes the transcript and metadata).

        ``held`` is the number of messages in the middle checkpoint: the first new message is the first
        ``message_appended`` checkpoint of the continuation holding more (a continuation appends the
        checkpoint's last message again before the new one).
        """

        def factory() -> list[ConversableAgent]:
            return make_agents(self.args.agents, self.replies)

        restorer = CheckpointRestorer(agent_factory=factory)
        first: list[float] = []
        whole: list[float] = []
        new_messages: list[int] = []
        for _ in range(self.args.continues):
            gc.collect()
            with _saved_messages_clock() as saved:
                start = time.perf_counter()
                continued = restorer.continue_from(reference, max_rounds=1)
                end = time.perf_counter()
            whole.append((end - start) * 1e3)
            after = [at for at, count in saved if count > held]
            if after:
                first.append((after[0] - start) * 1e3)
            new_messages.append(len(continued.new_messages))
            cm = continued.restored.checkpoint_manager
            cm.close()
            if cm.backing_store is not None:
                _backends.close_store(cm.backing_store)
            with contextlib.suppress(Exception):
                _backends.close_store(continued.restored.checkpoint_file.store)
        result: dict[str, Any] = {
            "continue_call_ms": statistics.median(whole),
            "continue_new_messages": max(new_messages),
        }
        if first:  # None seen: the library saved the new message some other way; only the call is timed
            result["continue_ms"] = statistics.median(first)
        return result


@contextlib.contextmanager
def _saved_messages_clock() -> Iterator[list[tuple[float, int]]]:
    """While open, every ``CheckpointManager.take_checkpoint(context="message_appended")`` of any manager
    (the restorer makes its own) appends (when it returned, messages it held): when each message was saved."""
    saved: list[tuple[float, int]] = []
    original = CheckpointManager.take_checkpoint

    def timed(self: CheckpointManager, *args: Any, **kwargs: Any) -> Any:
        result = original(self, *args, **kwargs)
        if kwargs.get("context") == "message_appended":
            saved.append((time.perf_counter(), len(kwargs.get("messages") or ())))
        return result

    CheckpointManager.take_checkpoint = timed  # type: ignore[method-assign]
    try:
        yield saved
    finally:
        CheckpointManager.take_checkpoint = original  # type: ignore[method-assign]


def size_every(args: argparse.Namespace, n_messages: int) -> int:
    """Messages between two bytes-on-disk samples: ``--size-every``, or 20 samples per chat."""
    every: int = args.size_every or max(1, n_messages // 20)
    return every


def run_naive_sampled(bench: Bench, n_messages: int) -> dict[str, Any]:
    """The naive design's cost at ``n_messages`` without writing all its snapshots (quadratic bytes).

    Runs the chat once with a plain manager, then writes the naive snapshot of the chat state as it was
    after message k (all lists truncated to their length at k) for evenly spaced k, timing each write.
    Per-message cost and total bytes are linearly interpolated between the samples.
    """
    args = bench.args
    workdir = Path(tempfile.mkdtemp(prefix="naive-sampled_", dir=bench.base))
    try:
        agents = make_agents(args.agents, bench.replies)
        groupchat = build_groupchat(agents, n_messages)
        manager = NaiveSnapshotManager(None, **_manager_kwargs(groupchat))
        participants = cast("list[ConversableAgent]", [*groupchat.agents, manager])
        _run_chat(agents[0], manager, groupchat, bench.replies, n_messages, "naive sampled")
        if len(manager.recorded) != n_messages:
            raise RuntimeError(
                f"naive sampled: {len(manager.recorded)} consistent points, expected {n_messages}"
            )
        out = workdir / "session" / "checkpoints"
        out.mkdir(parents=True)
        samples = sorted(
            {round(x * (n_messages - 1) / (args.naive_samples - 1)) for x in range(args.naive_samples)}
        )
        costs, sizes, paths = [], [], []
        for k in samples:  # state after message k (0-based) was broadcast

            def limit(history: list[Any], lengths: dict[int, int] = manager.recorded[k]) -> list[Any]:
                return history[: lengths.get(id(history), 0)]

            timings = []
            for _ in range(max(1, min(3, args.repeats))):
                gc.collect()
                t = time.perf_counter()
                path = write_naive_snapshot(out, k, groupchat.messages[: k + 1], participants, limit)
                timings.append((time.perf_counter() - t) * 1e3)
            costs.append(statistics.median(timings))
            sizes.append(path.stat().st_size)
            paths.append(path)
        # interval j (j >= 1) of a real run holds the snapshot taken after message j - 1
        per_message = [_interp(samples, costs, k) for k in range(n_messages - 1)]
        cumulative, total = [], 0.0
        for k in range(n_messages):
            total += _interp(samples, sizes, k)
            if (k + 1) % size_every(args, n_messages) == 0 or k + 1 == n_messages:
                cumulative.append((k + 1, int(total)))
        return {
            "sampled": True,
            "samples": len(samples),
            "added_per_message_ms": per_message,  # the snapshot cost itself is the added time
            "bytes": int(total),
            "bytes_allocated": None,
            "raw_text_bytes": _raw_bytes(groupchat.messages),
            "checkpoints": n_messages,
            "load_ms": [
                _median_ms(functools.partial(CheckpointManager.load_checkpoint_file, p), args.loads)
                for p in _first_mid_last(paths)
            ],
            "size_curve": cumulative,
        }
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _interp(xs: Sequence[int], ys: Sequence[float], x: float) -> float:
    if x <= xs[0]:
        return ys[0]
    for (x0, y0), (x1, y1) in itertools.pairwise(zip(xs, ys, strict=True)):
        if x <= x1:
            return y0 + (y1 - y0) * (x - x0) / (x1 - x0) if x1 != x0 else y1
    return ys[-1]


# -- statistics -------------------------------------------------------------------------------------------
def percentile(values: list[float], q: float) -> float:
    """Linear-interpolation percentile (q in 0..100)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def per_index_median(series: list[list[float]]) -> list[float]:
    return [statistics.median(column) for column in zip(*series, strict=True)]


def _stats(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "p50": percentile(values, 50), "p99": percentile(values, 99)}


def _flat(first: float, last: float) -> bool:
    return last <= max(first + FLAT_TOLERANCE_MS, first * (1 + FLAT_TOLERANCE_REL))


def _base_series(runs: list[dict[str, Any]], count: int) -> list[float]:
    """The baseline's per-index median over its first ``count`` runs: those of the same repeats."""
    return per_index_median([r["per_message_ms"] for r in runs[: max(1, count)]])


def summarize(n_messages: int, runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Medians over the runs of each configuration, the added time against its baseline, and the verdicts.

    A configuration is compared with its baseline's runs of the same repeats (configurations with fewer
    repeats pair with the first ones). Flatness compares the mean added time over the first and the last tenth
    of the chat; for ``ours*`` rows it is taken net of the ``control`` row's growth when it ran: constant work
    shows some growth of its own on these machines (about +0.05 ms from the first to the last 200 of 1,000
    messages; the cause is not established), and that part is not the checkpoint's cost. Verdicts are given
    to ``JUDGED_ROWS`` only.
    """
    raw = runs["baseline"][0]["raw_text_bytes"]
    own_series = {
        name: per_index_median([r["per_message_ms"] for r in rs])
        for name, rs in runs.items()
        if rs and "per_message_ms" in rs[0]
    }
    baselines = {
        name: {
            "runs": len(runs[name]),
            "per_message_ms": _stats(own_series[name]),
            "total_ms": statistics.median(r["total_ms"] for r in runs[name]),
        }
        for name in runs
        if CONFIGS[name].kind in ("baseline", "langgraph-base") and runs[name]
    }
    rows: dict[str, Any] = {"baseline": baselines["baseline"]}
    for name, config_runs in runs.items():
        config = CONFIGS[name]
        if config.kind in ("baseline", "langgraph-base") or not config_runs:
            continue
        base_name = config.baseline
        row: dict[str, Any] = {"runs": len(config_runs), "baseline": base_name}
        if config_runs[0].get("sampled"):
            base = own_series[base_name]
            sample = config_runs[0]
            added = sample["added_per_message_ms"]
            own = [a + b for a, b in zip(added, base, strict=True)]
            row.update(sampled=True, samples=sample["samples"], total_added_per_message_ms=None)
        else:
            base = _base_series(runs[base_name], len(config_runs))
            own = own_series[name]
            added = [a - b for a, b in zip(own, base, strict=True)]
            paired = [
                (r["total_ms"] - b["total_ms"]) / n_messages
                for r, b in zip(config_runs, runs[base_name], strict=False)
            ]
            row["total_added_per_message_ms"] = statistics.median(paired)
            row["total_ms"] = statistics.median(r["total_ms"] for r in config_runs)
        window = min(tenth(n_messages), len(added))
        first, last = statistics.fmean(added[:window]), statistics.fmean(added[-window:])
        row.update(
            added_per_message_ms=_stats(added),
            added_series_ms=added,
            per_message_ms=_stats(own),
            added_first_window_ms=first,
            added_last_window_ms=last,
            growth_ms=last - first,
            window=window,
        )
        if config.kind == "control":
            rows[name] = row
            continue
        measured = [r for r in config_runs if "load_ms" in r]
        loads = [statistics.median(col) for col in zip(*(r["load_ms"] for r in measured), strict=True)]
        nbytes = statistics.median(r["bytes"] for r in config_runs)
        allocated = [r["bytes_allocated"] for r in config_runs if r.get("bytes_allocated") is not None]
        row.update(
            bytes=int(nbytes),
            bytes_allocated=int(statistics.median(allocated)) if allocated else None,
            bytes_ratio=nbytes / raw,
            checkpoints=config_runs[0]["checkpoints"],
            bytes_by_file=config_runs[0].get("bytes_by_file"),
            size_curve=next((r["size_curve"] for r in config_runs if r.get("size_curve")), []),
            load_ms=dict(zip(("first", "middle", "last"), loads, strict=False)),
        )
        hooks = [r["hook_ms"] for r in config_runs if r.get("hook_ms")]
        if hooks:
            series = per_index_median([h[: min(map(len, hooks))] for h in hooks])
            hook_window = min(tenth(n_messages), len(series))
            row["hook_ms"] = {
                "mean": statistics.fmean(series),
                "first": statistics.fmean(series[:hook_window]),
                "last": statistics.fmean(series[-hook_window:]),
            }
        for key in ("restore_ms", "restore_factory_ms", "cold_load_ms", "continue_ms", "continue_call_ms"):
            values = [r[key] for r in config_runs if key in r]
            if values:
                row[key] = statistics.median(values)
        if "sqlite_settings" in config_runs[0]:
            row["sqlite_settings"] = config_runs[0]["sqlite_settings"]
        news = [r["continue_new_messages"] for r in config_runs if "continue_new_messages" in r]
        if news:
            row["continue_new_messages"] = max(news)
        row["flat"] = _flat(first, last)
        rows[name] = row
    control = rows.get("control")
    for name, row in rows.items():
        if CONFIGS[name].kind != "ours":
            continue
        if control is not None:
            net = row["added_last_window_ms"] - control["growth_ms"]
            row["net_growth_ms"] = net - row["added_first_window_ms"]
            row["flat"] = _flat(row["added_first_window_ms"], net)
        if name in JUDGED_ROWS:
            row["verdict"] = verdicts(row, n_messages)
    return {"messages": n_messages, "raw_text_bytes": raw, "rows": rows, "baselines": baselines}


# When the control's rise exceeds this many times the absolute tolerance, the flatness verdict is within the
# noise of the run (at 10,000 messages AG2's own 2-3 ms per message drifts with the VM's speed phases).
NOISY_CONTROL_FACTOR = 2


def noisy_control(control: dict[str, Any] | None) -> bool:
    return control is not None and abs(control["growth_ms"]) > NOISY_CONTROL_FACTOR * FLAT_TOLERANCE_MS


def verdicts(row: dict[str, Any], n_messages: int) -> dict[str, bool]:
    """PASS (True) / MISS (False) per target of issue 18 that the row measured."""
    verdict = {
        "added": row["added_per_message_ms"]["mean"] < TARGET_ADDED_MS,
        "flat": row["flat"],
        "bytes": row["bytes_ratio"] < TARGET_BYTES_RATIO,
    }
    if "last" in row["load_ms"]:
        verdict["load"] = row["load_ms"]["last"] < target_load_ms(n_messages)
    if "continue_ms" in row:
        verdict["continue"] = row["continue_ms"] < TARGET_CONTINUE_MS
    return verdict


# -- reporting --------------------------------------------------------------------------------------------
def _mark(ok: bool | None) -> str:
    return "-" if ok is None else ("PASS" if ok else "MISS")


def _size(n: float) -> str:
    if n < 10 * 1024 * 1024:
        return f"{n / 1024:,.0f}K"
    return f"{n / 1024 / 1024:,.1f}M" if n < 1024**3 else f"{n / 1024**3:,.2f}G"


def _ratio(x: float) -> str:
    return f"{x:.2f}x" if x < 100 else f"{x:,.0f}x"


def table_header(n_messages: int) -> str:
    marks = (
        f"<{TARGET_ADDED_MS:g}ms",
        "flat",
        f"<{TARGET_BYTES_RATIO:g}x",
        f"<{target_load_ms(n_messages):g}ms",
        f"<{TARGET_CONTINUE_MS:g}ms",
    )
    return (
        f"{'config':<18} {'added ms/msg mean':>17} {'p50':>7} {'p99':>7} {'tot/M':>7} "
        f"{'first|last 10th':>15} {'disk':>8} {'ratio':>7} {'du':>7} {'load ms f/m/l':>18} {'restore':>8} "
        f"{'cont 1st|all':>13}  " + " ".join(f"{m:>{w}}" for m, w in zip(marks, MARK_WIDTHS, strict=True))
    )


MARK_WIDTHS = (6, 4, 5, 5, 6)


def runs_text(summary: dict[str, Any]) -> str:
    """'24 of baseline, control, ours; 9 of ...': how many runs each row's medians hold."""
    rows, baselines = summary["rows"], summary["baselines"]
    counts: dict[int, list[str]] = {}
    for name in (*baselines, *ROW_ORDER):
        if name in rows or name in baselines:
            counts.setdefault((rows.get(name) or baselines[name])["runs"], []).append(name)
    return "; ".join(f"{k} of {', '.join(names)}" for k, names in sorted(counts.items(), reverse=True))


def _ms(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def table_lines(summary: dict[str, Any], args: argparse.Namespace) -> list[str]:
    n = summary["messages"]
    rows = summary["rows"]
    raw = summary["raw_text_bytes"]
    window = tenth(n)
    lines = [
        f"== {n} messages x ~{args.message_bytes} B, {args.agents} agents, round robin; raw message text "
        f"{raw / 1024:,.0f} KiB; medians over runs: {runs_text(summary)} =="
    ]
    if summary.get("scale_note"):
        lines.append(f"at {n} messages: {summary['scale_note']}")
    for name, base in summary["baselines"].items():
        what = "plain GroupChatManager" if name == "baseline" else "same graph, no checkpointer"
        s = base["per_message_ms"]
        lines.append(
            f"{name} ({what}): own {s['mean']:.3f} ms/message mean, p50 {s['p50']:.3f}, p99 {s['p99']:.3f}; "
            f"run {base['total_ms']:.0f} ms"
        )
    header = table_header(n)
    lines.append(header)
    lines.append("-" * len(header))
    for name in ROW_ORDER:
        row = rows.get(name)
        if row is None:
            continue
        a = row["added_per_message_ms"]
        tot = row.get("total_added_per_message_ms")
        loads = row.get("load_ms") or {}
        du = row["bytes_allocated"] / raw if row.get("bytes_allocated") is not None else None
        v = row.get("verdict") or {}
        load_text = "/".join(f"{loads[k]:.1f}" for k in ("first", "middle", "last") if k in loads) or "-"
        cont = row.get("continue_call_ms")
        cont_text = f"{_ms(row.get('continue_ms'))}|{_ms(cont)}" if cont is not None else "-"
        stored = "bytes" in row
        label = name + ("~" if row.get("sampled") else "")
        lines.append(
            f"{label:<18} {a['mean']:>17.3f} {a['p50']:>7.3f} {a['p99']:>7.2f} "
            f"{(f'{tot:.3f}' if tot is not None else '-'):>7} "
            f"{row['added_first_window_ms']:>7.3f}|{row['added_last_window_ms']:<7.3f} "
            f"{(_size(row['bytes']) if stored else '-'):>8} "
            f"{(_ratio(row['bytes_ratio']) if stored else '-'):>7} "
            f"{(_ratio(du) if du else '-'):>7} "
            f"{load_text:>18} {_ms(row.get('restore_ms')):>8} {cont_text:>13}  "
            + " ".join(
                f"{_mark(v.get(key)):>{w}}"
                for key, w in zip(("added", "flat", "bytes", "load", "continue"), MARK_WIDTHS, strict=True)
            )
        )
    kinds = (rows.get("ours") or {}).get("bytes_by_file")
    if kinds:
        parts = ", ".join(
            f"{k} {size / 1024:,.0f} KiB ({size / raw:.2f}x)"
            for k, size in sorted(kinds.items(), key=lambda kv: -kv[1])
            if size
        )
        lines.append(f"ours bytes by file: {parts}")
    hooks = [
        f"{name} {h['mean']:.3f} ({h['first']:.3f}|{h['last']:.3f})"
        for name in ROW_ORDER
        if (h := (rows.get(name) or {}).get("hook_ms"))
    ]
    if hooks:
        lines.append(
            f"own time in the checkpoint call per message (snapshot + save), ms mean (first|last {window}): "
            + ", ".join(hooks)
        )
    control = rows.get("control")
    if control is not None and n >= 20:  # shorter chats have overlapping tenths: nothing to compare
        nets = [
            f"{name} {row['growth_ms']:+.3f} - {control['growth_ms']:+.3f} = {row['net_growth_ms']:+.3f}"
            + (f" {_mark(row['verdict']['flat'])}" if "verdict" in row else "")
            for name in ROW_ORDER
            if "net_growth_ms" in (row := rows.get(name) or {})
        ]
        lines.append(
            f"flatness, last - first tenth ({window} messages) net of the control's ({args.control_us:g} us "
            f"of CPU-only work per message, which cannot grow): " + ", ".join(nets)
        )
        if noisy_control(control):
            lines.append(
                f"note: the control's own rise ({control['growth_ms']:+.3f} ms) is more than "
                f"{NOISY_CONTROL_FACTOR}x the {FLAT_TOLERANCE_MS:g} ms tolerance: with these runs the "
                "machine's drift moves a tenth's mean by more than the verdict can tell apart, so the flat "
                "PASS/MISS says little here; the own time in the checkpoint call (above) is the steadier sign"
            )
    extras = [f"{k} {rows[k]['cold_load_ms']:.1f}" for k in ROW_ORDER if "cold_load_ms" in rows.get(k, {})]
    if extras:
        lines.append(
            "cold load of the last checkpoint by path/reference (opens the store), ms: " + ", ".join(extras)
        )
    factories = [
        f"{k} {rows[k]['restore_factory_ms']:.1f}"
        for k in ROW_ORDER
        if "restore_factory_ms" in rows.get(k, {})
    ]
    if factories:
        lines.append(
            f"of which the agent factory alone ({args.agents} new ConversableAgents), ms: "
            + ", ".join(factories)
        )
    odd = [
        f"{k} {rows[k]['continue_new_messages']}"
        for k in ROW_ORDER
        if rows.get(k, {}).get("continue_new_messages", 1) != 1
    ]
    if odd:
        lines.append("WARNING: continue_from(max_rounds=1) added other than 1 message: " + ", ".join(odd))
    if any(r.get("sampled") for r in rows.values()):
        lines.append(
            "naive~: sampled (quadratic cost): snapshot write time at evenly spaced points of the final "
            "state, interpolated per message; its added time is the snapshot cost itself."
        )
    return lines


LEGEND = """\
columns: added ms/msg = per-index (config - its baseline) per-message time after the per-index median over
runs (mean, p50, p99); tot/M = (total run time - baseline's)/M, incl. start/end checkpoints and session
documents; first|last 10th = mean added time over the first / last tenth of the chat (flatness); disk =
apparent size of everything the session wrote (files: the session dir, chat_history.json included; sqlite:
db+wal+shm after close; postgres: cs_* relations of a fresh database; LangGraph: its db after close); ratio =
disk / raw message text; du = allocated blocks / raw text; load = median ms to load the first/middle/last
checkpoint into a CheckpointData (LangGraph: graph.get_state on a new connection; its first checkpoint is the
empty input); restore = median ms of CheckpointRestorer(agent_factory=...).restore(last checkpoint), ready to
continue; cont 1st|all = median ms of CheckpointRestorer(agent_factory=...).continue_from(middle checkpoint,
max_rounds=1) until the checkpoint holding its one new message is saved | until the call returns (it then also
saves the end checkpoint and writes chat_history.json and the metadata). lg-* rows compare with lg-*-base (the
same graph without a checkpointer); all other rows with baseline, run for run. control = a plain manager plus
a constant CPU-only wait where ours checkpoints: its cost cannot grow with the conversation, so the last -
first growth of its added time is the harness's; flat = last tenth minus that growth is at most first tenth +
0.05 ms (or + 20%). Verdicts for ours and ours-sqlite only; the other rows are reported beside them."""


def _target_text(n_messages: int) -> str:
    return (
        f"added < {TARGET_ADDED_MS:g} ms/msg; the last tenth ({tenth(n_messages)} messages) no higher than "
        f"the first, net of the control; bytes < {TARGET_BYTES_RATIO:g}x the raw text (apparent size); the "
        f"last checkpoint loads in < {target_load_ms(n_messages):g} ms; continue_from(middle, max_rounds=1) "
        f"saves its new message in < {TARGET_CONTINUE_MS:g} ms"
    )


def _row_line(name: str, rows: dict[str, Any], smaller: dict[str, Any] | None) -> str:
    row = rows[name]
    v = row.get("verdict")

    def mark(key: str) -> str:
        return f" {_mark(v.get(key))}" if v is not None else ""

    added = row["added_per_message_ms"]["mean"]
    cross = ""
    if smaller is not None and name in smaller["rows"]:
        cross = f" ({smaller['rows'][name]['added_per_message_ms']['mean']:.3f} at {smaller['messages']})"
    control = ""
    if "net_growth_ms" in row:
        noisy = " (noisy: see the note under the table)" if noisy_control(rows["control"]) else ""
        control = (
            f" ({row['growth_ms']:+.3f}; control {rows['control']['growth_ms']:+.3f}{noisy}, "
            f"net {row['net_growth_ms']:+.3f})"
        )
    hook = row.get("hook_ms")
    if hook:
        control += f", own call {hook['first']:.3f}|{hook['last']:.3f}"
    last = row["load_ms"].get("last")
    parts = [
        f"added {added:.3f} ms{cross}{mark('added')}",
        f"flat: last tenth {row['added_last_window_ms']:.3f} vs first {row['added_first_window_ms']:.3f}"
        f"{control}{mark('flat')}",
        f"bytes {row['bytes_ratio']:.2f}x{mark('bytes')}",
        f"last load {_ms(last)} ms{mark('load')}",
    ]
    if "continue_call_ms" in row:
        parts.append(
            f"continue {_ms(row.get('continue_ms'))} ms{mark('continue')} (whole call "
            f"{row['continue_call_ms']:.1f} ms)"
        )
    if "restore_ms" in row:
        parts.append(f"restore of the last {row['restore_ms']:.1f} ms")
    return f"  {name:<18} " + "; ".join(parts)


def verdict_lines(summaries: list[dict[str, Any]]) -> list[str]:
    """Per target scale that ran (1,000 and 10,000; else the largest count): each row against the targets."""
    judged = [s for s in summaries if s["messages"] in TARGET_SCALES] or summaries[-1:]
    lines: list[str] = []
    for target in judged:
        n = target["messages"]
        rows = target["rows"]
        smaller = max((s for s in summaries if s["messages"] < n), key=lambda s: s["messages"], default=None)
        lines.append(
            f"Targets of issue 18 at {n} messages (informational; exit status is always 0): {_target_text(n)}"
        )
        for name in JUDGED_ROWS:
            if name in rows:
                lines.append(_row_line(name, rows, smaller))
        beside = [name for name in ROW_ORDER if name.startswith("ours") and name not in JUDGED_ROWS]
        if any(name in rows for name in beside):
            lines.append("  reported beside them, no verdict:")
            lines.extend(_row_line(name, rows, smaller) for name in beside if name in rows)
        for fsync_name, crash_name in (
            ("ours-fsync", "ours"),
            ("ours-sqlite-fsync", "ours-sqlite"),
            ("ours-pg-fsync", "ours-pg"),
        ):
            if fsync_name in rows and crash_name in rows:
                cost = (
                    rows[fsync_name]["added_per_message_ms"]["mean"]
                    - rows[crash_name]["added_per_message_ms"]["mean"]
                )
                tot = (rows[fsync_name].get("total_added_per_message_ms") or 0) - (
                    rows[crash_name].get("total_added_per_message_ms") or 0
                )
                lines.append(
                    f"  durability: {fsync_name} costs {cost:+.3f} ms/msg "
                    f"(mean added; {tot:+.3f} by total run time) "
                    f'over {crash_name} ("crash", the default)'
                )
        peers = [
            f"{name} {rows[name]['added_per_message_ms']['mean']:.3f} ms/msg, "
            f"{_ratio(rows[name]['bytes_ratio'])} raw, "
            f"latest load {rows[name]['load_ms'].get('last', float('nan')):.1f} ms"
            for name in ("lg-list", "lg-delta")
            if name in rows
        ]
        if peers:
            settings = next((rows[lg]["sqlite_settings"] for lg in ("lg-list", "lg-delta") if lg in rows), "")
            lines.append(f"  LangGraph SqliteSaver ({settings}): " + "; ".join(peers))
        lines.append("")
    return lines[:-1]


# -- profiling --------------------------------------------------------------------------------------------
def profile_config(bench: Bench, name: str, n_messages: int) -> str:
    profiler = cProfile.Profile()
    bench.run(name, n_messages, profiler=profiler)
    buffer = io.StringIO()
    stats = pstats.Stats(profiler, stream=buffer)
    stats.sort_stats("cumulative").print_stats(r"checkpoint_system|orjson|posix|pydantic", 45)
    stats.sort_stats("tottime").print_stats(25)
    return f"\n== cProfile of '{name}' at {n_messages} messages (the chat run only) ==\n{buffer.getvalue()}"


# -- main -------------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument(
        "--messages",
        default="1000,10000",
        help="comma-separated message counts (max_round; default 1000,10000: the two scales of the targets); "
        f"counts above {LARGE_ABOVE:,} run --repeats-large times",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=9,
        help="runs per configuration (medians reported; default 9: one run's mean added time on this VM "
        "ranges over about +-0.15 ms, and with 3 runs its drift alone moved a 200-message window by 0.1 ms)",
    )
    parser.add_argument(
        "--flat-repeats",
        type=int,
        default=24,
        help=f"runs of {', '.join(FLATNESS_CONFIGS)} (default 24; at least --repeats): the flatness verdict "
        "compares two 200-message windows, which move by about 0.1 ms between runs on this VM; load and "
        "restore times are measured in the first --repeats runs only",
    )
    parser.add_argument(
        "--repeats-large",
        type=int,
        default=3,
        help=f"runs per configuration at message counts above {LARGE_ABOVE:,} (default 3: a plain "
        "10,000-message chat takes ~20 s here); there the *-fsync and lg-delta rows run once and naive and "
        "lg-list not at all (their cost is quadratic in the message count)",
    )
    parser.add_argument(
        "--control-us",
        type=float,
        default=300.0,
        help="the control's constant CPU-only work per message, us (default 300: about our own call); it "
        "runs whenever an ours* row does; 0: no control, flatness judged on each row's own rise",
    )
    parser.add_argument("--agents", type=int, default=4)
    parser.add_argument("--message-bytes", type=int, default=1024)
    parser.add_argument(
        "--configs",
        default=",".join(DEFAULT_CONFIGS),
        help=f"comma-separated subset of {','.join(c for c in CONFIGS if not c.endswith('-base'))} "
        f"(default {','.join(DEFAULT_CONFIGS)}); unavailable ones are skipped with a note",
    )
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get(_backends.POSTGRES_ENV),
        help=f"PostgreSQL server for ours-pg (default ${_backends.POSTGRES_ENV}); 'auto' starts a throwaway "
        "local one (tests/pg_server.py, fsync on)",
    )
    parser.add_argument(
        "--lg-durability",
        default="sync",
        choices=("sync", "async", "exit"),
        help="LangGraph durability mode (default sync: the checkpoint is written before the "
        "next step starts, as ours is)",
    )
    parser.add_argument(
        "--lg-list-repeats",
        type=int,
        default=3,
        help="runs of lg-list, at most --repeats (default 3; it writes ~1 GB per 1,000-message run)",
    )
    parser.add_argument(
        "--fsync-repeats", type=int, default=3, help="runs of *-fsync, at most --repeats (default 3: slow)"
    )
    parser.add_argument(
        "--naive-max-messages",
        type=int,
        default=200,
        help="run the naive design for real up to this many messages; sample it above",
    )
    parser.add_argument(
        "--naive-repeats", type=int, default=1, help="real naive runs (default 1; it is slow)"
    )
    parser.add_argument(
        "--naive-samples", type=int, default=11, help="sample points of the sampled naive run"
    )
    parser.add_argument("--loads", type=int, default=5, help="loads per checkpoint for the load time median")
    parser.add_argument(
        "--restores", type=int, default=3, help="restores of the last checkpoint per run (0: off)"
    )
    parser.add_argument(
        "--continues",
        type=int,
        default=3,
        help="continue_from(middle checkpoint, max_rounds=1) calls per run (0: off)",
    )
    parser.add_argument(
        "--size-every",
        type=int,
        default=0,
        help="bytes-on-disk sample interval in messages (default 0: a twentieth of the chat)",
    )
    parser.add_argument(
        "--out", default=None, help="directory for the temporary sessions (default: system tmp)"
    )
    parser.add_argument(
        "--json",
        default=str(BENCH_DIR / "results" / "bench_checkpointing.json"),
        help="write all results here ('' to skip)",
    )
    parser.add_argument(
        "--plot",
        default=str(BENCH_DIR / "results" / "bench_checkpointing.png"),
        help="write the PNG plot here ('' to skip)",
    )
    parser.add_argument(
        "--profile",
        default=None,
        metavar="CONFIG",
        help="also cProfile one run of CONFIG (e.g. ours) at the largest message count",
    )
    parser.add_argument(
        "--replot",
        default=None,
        metavar="JSON",
        help="only redraw --plot from a results JSON of an earlier run",
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke test: --messages 200, every row once (seconds)"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.messages, args.repeats, args.flat_repeats, args.repeats_large = "200", 1, 1, 1
    args.message_counts = [int(x) for x in str(args.messages).split(",") if x.strip()]
    args.config_list = [c.strip() for c in str(args.configs).split(",") if c.strip()]
    unknown = set(args.config_list) - set(CONFIGS)
    if unknown:
        parser.error(f"unknown configs {sorted(unknown)}")
    if "baseline" not in args.config_list:
        args.config_list.insert(0, "baseline")
    ours = any(CONFIGS[c].kind == "ours" for c in args.config_list)
    if args.control_us <= 0:  # no control: the rows are judged on their own rise
        args.config_list = [c for c in args.config_list if c != "control"]
    elif ours and "control" not in args.config_list:  # the flatness verdict's reference, like the baseline
        args.config_list.insert(1, "control")
    if min(args.message_counts) < 3 or min(args.repeats, args.repeats_large) < 1 or args.agents < 2:
        parser.error("need --messages >= 3, --repeats >= 1, --repeats-large >= 1, --agents >= 2")
    return args


def select_configs(args: argparse.Namespace) -> tuple[list[str], list[str], str | None, Any]:
    """(configs to run, notes about skipped ones, PostgreSQL URL, server handle to stop)."""
    notes: list[str] = []
    chosen: list[str] = []
    pg_url: str | None = None
    pg_server = None
    sqlite_missing = _backends.module_missing("sqlite")
    postgres_missing = _backends.module_missing("postgres")
    lg_missing = _langgraph_runner.available()
    for name in args.config_list:
        config = CONFIGS[name]
        if config.backend == "sqlite" and sqlite_missing:
            notes.append(f"skipped {name}: {sqlite_missing}")
            continue
        if config.backend == "postgres":
            if postgres_missing:
                notes.append(f"skipped {name}: {postgres_missing}")
                continue
            if not args.postgres_url:
                notes.append(
                    f"skipped {name}: no PostgreSQL server (give --postgres-url URL, --postgres-url auto, or "
                    f"${_backends.POSTGRES_ENV})"
                )
                continue
            if pg_url is None:
                try:
                    import psycopg  # noqa: F401
                except ImportError:
                    notes.append(f"skipped {name}: psycopg is not installed (pip install -e '.[postgres]')")
                    continue
                if args.postgres_url == "auto":
                    try:
                        pg_server = _backends.PostgresServerHandle()
                    except Exception as exc:  # any failure to start means: skip, and say why
                        notes.append(f"skipped {name}: could not start a local PostgreSQL server: {exc}")
                        args.postgres_url = None
                        continue
                    pg_url = pg_server.url
                else:
                    pg_url = args.postgres_url
        if config.kind == "langgraph":
            if lg_missing:
                notes.append(f"skipped {name}: LangGraph unavailable: {lg_missing}")
                continue
            chosen.append(f"lg-{config.variant}-base")
        chosen.append(name)
    return list(dict.fromkeys(chosen)), notes, pg_url, pg_server


@contextlib.contextmanager
def _workspace(out: str | None) -> Iterator[Path]:
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix="bench_checkpointing_", dir=out))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _repeats_of(name: str, args: argparse.Namespace, n: int) -> int:
    # argparse parsed these with type=int (a Namespace's attributes are Any to mypy)
    repeats_large: int = args.repeats_large
    if is_large(n):
        if name in QUADRATIC_CONFIGS:
            return 0
        return min(1, repeats_large) if name in ONCE_AT_LARGE else repeats_large
    repeats: int = args.repeats
    naive_repeats: int = args.naive_repeats
    fsync_repeats: int = args.fsync_repeats
    lg_list_repeats: int = args.lg_list_repeats
    flat_repeats: int = args.flat_repeats
    if name in FLATNESS_CONFIGS:
        return max(repeats, flat_repeats)
    if name == "naive":
        return naive_repeats if n <= args.naive_max_messages else 0
    if name.endswith("-fsync"):
        return min(fsync_repeats, repeats)
    if name in ("lg-list", "lg-list-base"):
        return min(lg_list_repeats, repeats)
    return repeats


def _loads_in(args: argparse.Namespace, n: int) -> int:
    """How many of a row's runs time loads, restores and continuations (the others only the chat)."""
    runs: int = args.repeats_large if is_large(n) else args.repeats
    return runs


def scale_note(args: argparse.Namespace, configs: list[str], n: int) -> str | None:
    """What a large message count runs differently, for the table (None at the other counts)."""
    if not is_large(n):
        return None
    skipped = [c for c in configs if c in QUADRATIC_CONFIGS and not c.endswith("-base")]
    once = [c for c in configs if c in ONCE_AT_LARGE and not c.endswith("-base")]
    parts = [f"above {LARGE_ABOVE:,} messages every row runs {args.repeats_large} times (--repeats-large)"]
    if once:
        parts.append(f"{', '.join(once)} once")
    if skipped:
        parts.append(f"{', '.join(skipped)} skipped (their cost is quadratic in the message count)")
    return "; ".join(parts)


def _plot_title(summary: dict[str, Any], settings: dict[str, Any]) -> str:
    date, load = str(settings["date"])[:10], settings["load_average_start"]
    return (
        f"{summary['messages']} messages x ~{settings['message_bytes']} B, {settings['agents']} agents; "
        f"{date}, load avg {load:.1f}\nmedians over runs: {runs_text(summary)}"
    )


def replot(args: argparse.Namespace) -> int:
    from _plot import write_plot

    document = json.loads(Path(args.replot).read_text())
    largest = max(document["results"], key=lambda s: s["messages"])
    path = write_plot(
        largest,
        Path(args.plot),
        title=_plot_title(largest, document["settings"]),
        targets={"added_ms": TARGET_ADDED_MS, "bytes_ratio": document["targets"]["bytes_ratio"]},
    )
    print(f"plot written to {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.replot:
        return replot(args)
    started = time.perf_counter()
    configs, notes, pg_url, pg_server = select_configs(args)
    load1, load5, _ = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    out: list[str] = []

    def say(line: str = "") -> None:
        print(line, flush=True)
        out.append(line)

    say(
        f"bench_checkpointing {datetime.now().strftime('%Y-%m-%d %H:%M')}: "
        f"python {platform.python_version()}, "
        f"{os.cpu_count()} cpu(s), load average {load1:.2f} (1 min) / {load5:.2f} (5 min) at start; "
        f"repeats {args.repeats} ({args.flat_repeats} of {', '.join(FLATNESS_CONFIGS)}), "
        f"{args.repeats_large} above {LARGE_ABOVE:,} messages; "
        f"sessions under {args.out or tempfile.gettempdir()}"
    )
    say(f"configs: {', '.join(c for c in configs if not c.endswith('-base'))}")
    if any(c.startswith("lg-") for c in configs):
        say(f"LangGraph: {_langgraph_runner.version()}; durability={args.lg_durability!r}")
    for note in notes:
        say(f"note: {note}")
    summaries = []
    try:
        with _workspace(args.out) as base:
            bench = Bench(args, base, pg_url)
            for name in configs:  # warm-up: imports, first-call caches, the page cache of the temp dir
                if name != "naive":
                    bench.run(name, 20)
            for n in args.message_counts:
                # the LangGraph rows take the baseline's chat as their input: it runs first in repeat 0
                runs: dict[str, list[dict[str, Any]]] = {c: [] for c in configs}
                repeats = {c: _repeats_of(c, args, n) for c in configs}
                for r in range(max(repeats.values())):
                    order = [c for c in configs if r < repeats[c]]
                    if r % 2:
                        order.reverse()  # alternate the order so warm-up/drift effects favour no config
                    for name in order:
                        runs[name].append(bench.run(name, n, curve=(r == 0), loads=r < _loads_in(args, n)))
                if "naive" in configs and not runs["naive"] and not is_large(n):
                    runs["naive"] = [run_naive_sampled(bench, n)]
                runs = {name: config_runs for name, config_runs in runs.items() if config_runs}
                fingerprints = {r["fingerprint"] for rs in runs.values() for r in rs if "fingerprint" in r}
                if len(fingerprints) > 1:
                    say("WARNING: the configurations did not produce the same chat")
                for name, config_runs in runs.items():
                    for run in config_runs:
                        got = run.get("last_checkpoint_messages")
                        if got is not None and got != n:
                            say(f"WARNING: {name}: the last checkpoint holds {got} messages, expected {n}")
                summary = summarize(n, runs)
                summary["scale_note"] = scale_note(args, configs, n)
                summaries.append(summary)
                say()
                for line in table_lines(summary, args):
                    say(line)
            say()
            for line in LEGEND.splitlines():
                say(line)
            say()
            for line in verdict_lines(summaries):
                say(line)
            if args.profile:
                say(profile_config(bench, args.profile, max(args.message_counts)))
    finally:
        if pg_server is not None:
            pg_server.stop()
    elapsed = time.perf_counter() - started
    load_end = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    say(f"\ntotal benchmark time {elapsed:.1f} s; load average {load_end:.2f} at the end")
    plot_missing = None
    if args.plot and summaries:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            plot_missing = "matplotlib is not installed (pip install -e '.[bench]'): no plot written"
            say(f"note: {plot_missing}")
    settings = {
        "messages": args.message_counts,
        "repeats": args.repeats,
        "flat_repeats": args.flat_repeats,
        "repeats_large": args.repeats_large,
        "large_above": LARGE_ABOVE,
        "control_us": args.control_us,
        "agents": args.agents,
        "message_bytes": args.message_bytes,
        "configs": configs,
        "notes": notes,
        "naive_max_messages": args.naive_max_messages,
        "lg_durability": args.lg_durability,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_average_start": load1,
        "elapsed_s": elapsed,
        "date": datetime.now().isoformat(timespec="seconds"),
    }
    if args.plot and summaries and plot_missing is None:
        from _plot import write_plot

        largest = max(summaries, key=lambda s: s["messages"])
        path = write_plot(
            largest,
            Path(args.plot),
            title=_plot_title(largest, settings),
            targets={"added_ms": TARGET_ADDED_MS, "bytes_ratio": TARGET_BYTES_RATIO},
        )
        say(f"plot written to {path}")
    if args.json:
        document = {
            "settings": settings,
            "targets": {
                "added_ms": TARGET_ADDED_MS,
                "bytes_ratio": TARGET_BYTES_RATIO,
                "last_load_ms": {str(n): target_load_ms(n) for n in args.message_counts},
                "continue_ms": TARGET_CONTINUE_MS,
                "judged_rows": list(JUDGED_ROWS),
                "at_messages": list(TARGET_SCALES),
            },
            "results": summaries,
            "printed": out,
        }
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(document, indent=1))
        say(f"results written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
