#!/usr/bin/env python
"""Checkpointing overhead: plain GroupChatManager vs CheckpointingGroupChatManager vs the seed design.

Every configuration runs the *same* deterministic AG2 group chat in this process: N ``ConversableAgent``s
answering through ``DeterministicModelClient`` (real ``generate_reply`` / ``OpenAIWrapper`` path, no
network), round-robin speaker selection, ``max_round=M``. Each reply is ~``--message-bytes`` of ASCII text
that differs per message. Configurations:

* ``baseline``     plain ``autogen.GroupChatManager``;
* ``ours``         ``CheckpointingGroupChatManager`` + ``CheckpointManager(tmpdir)`` (durability "crash");
* ``ours-fsync``   the same with ``durability="fsync"``;
* ``naive``        the seed's design, implemented here: after every message, ``json.dumps(indent=2)`` of all
                   messages plus every agent's (and the manager's) full ``_oai_messages`` history, written
                   to a new file per message. Its cost is quadratic, so above ``--naive-max-messages`` it is
                   *sampled* (``naive~``): a full snapshot is written at ~``--naive-samples`` evenly spaced
                   points of the final chat state (histories truncated to that point) and per-message time
                   and total bytes are interpolated.

Per-message wall time is taken the same way for every configuration: ``GroupChat.append`` is wrapped to
timestamp each message; the interval between two consecutive appends holds one full round (broadcast of the
previous message, its checkpoint, speaker selection, reply generation). Per-message *added* time is
``config[i] - baseline[i]`` at the same message index, after taking the per-index median over the repeats
(configurations are interleaved inside every repeat so drift hits all of them alike). Also reported:
``(total_config - total_baseline) / M`` (includes the start/end checkpoints and session documents), the
percentiles of the configuration's own per-message time, bytes on disk, load times of the first, middle and
last checkpoint (``CheckpointManager.load_checkpoint_file``, median of ``--loads`` loads), and the added
time in the first vs last 200 messages (flatness).

Targets (product spec, 1,000 messages of ~1 KiB, 4 agents): added time per message < 0.5 ms and no higher
at 1,000 than at 200 messages; bytes on disk < 4x raw message text; any checkpoint loads in < 15 ms. The
PASS/MISS columns are informational; the script always exits 0.

    python benchmarks/bench_checkpointing.py [--messages 200,1000] [--repeats 3] [--agents 4]
        [--message-bytes 1024] [--out DIR] [--json FILE] [--profile]
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
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
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

warnings.filterwarnings("ignore")
logging.disable(logging.INFO)  # AG2 logs an INFO line per custom model client

from autogen import ConversableAgent, GroupChat, GroupChatManager  # noqa: E402
from autogen.io.base import IOStream  # noqa: E402

from checkpoint_system import CheckpointingGroupChatManager, CheckpointManager  # noqa: E402
from checkpoint_system.testing import DeterministicModelClient, deterministic_llm_config  # noqa: E402

TARGET_ADDED_MS = 0.5
TARGET_BYTES_RATIO = 4.0
TARGET_LOAD_MS = 15.0
TARGET_AT_MESSAGES = 1000
# "no higher at 1,000 than at 200": the last-200 added time may exceed the first-200 one by this much
# (absolute ms, or relative) before it counts as growth -- the machine's noise floor.
FLAT_TOLERANCE_MS = 0.05
FLAT_TOLERANCE_REL = 0.20
WINDOW = 200

CONFIGS = ("baseline", "ours", "ours-fsync", "naive")


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
        speaker = self._last_speaker
        targets = [agent for agent in self.groupchat.agents if agent is not speaker]
        if targets and recipient is targets[-1]:
            participants = [*self.groupchat.agents, self]
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


class TimedGroupChat(GroupChat):
    """A ``GroupChat`` that timestamps every appended message.

    (AG2 registers a shallow copy of the group chat as the reply function's config, so the hook must be on
    the class; the copy shares ``messages`` and ``stamps`` with the original.)
    """

    def append(self, message: dict[str, Any], speaker: Any) -> None:
        super().append(message, speaker)
        self.stamps.append(time.perf_counter())


def build_agents(
    n_agents: int, n_messages: int, replies: _Replies
) -> tuple[list[ConversableAgent], GroupChat]:
    agents = []
    for i in range(n_agents):
        agent = ConversableAgent(
            f"agent_{i}",
            system_message=f"You are agent {i} of a benchmark group chat. Answer the last message.",
            llm_config=deterministic_llm_config(f"agent_{i}"),
            human_input_mode="NEVER",
            max_consecutive_auto_reply=10**9,
        )
        agent.register_model_client(DeterministicModelClient, policy=replies.policy)
        agents.append(agent)
    groupchat = TimedGroupChat(
        agents=agents, messages=[], max_round=n_messages, speaker_selection_method="round_robin"
    )
    groupchat.stamps = []  # type: ignore[attr-defined]
    return agents, groupchat


def build_chat(
    config: str, n_agents: int, n_messages: int, replies: _Replies, workdir: Path
) -> tuple[ConversableAgent, GroupChatManager, GroupChat, CheckpointManager | None]:
    agents, groupchat = build_agents(n_agents, n_messages, replies)
    common: dict[str, Any] = {"groupchat": groupchat, "llm_config": False, "silent": True}
    cm: CheckpointManager | None = None
    manager: GroupChatManager
    if config == "baseline":
        manager = GroupChatManager(**common)
    elif config in ("ours", "ours-fsync"):
        durability = "fsync" if config == "ours-fsync" else "crash"
        cm = CheckpointManager(workdir / "session", durability=durability)
        manager = CheckpointingGroupChatManager(cm, **common)
    elif config == "naive":
        manager = NaiveSnapshotManager(workdir / "session" / "checkpoints", **common)
    else:
        raise ValueError(config)
    return agents[0], manager, groupchat, cm


# -- measuring --------------------------------------------------------------------------------------------
def dir_bytes(path: Path) -> tuple[int, int, dict[str, int]]:
    """(apparent size, allocated size, apparent size per kind of file) of every file under ``path``."""
    apparent = allocated = 0
    kinds: dict[str, int] = {}
    for root, _dirs, files in os.walk(path):
        for name in files:
            st = os.stat(os.path.join(root, name))
            apparent += st.st_size
            allocated += getattr(st, "st_blocks", 0) * 512
            kind = "checkpoint files" if name.startswith("checkpoint_") else name
            kinds[kind] = kinds.get(kind, 0) + st.st_size
    return apparent, allocated, kinds


def time_loads(paths: list[Path], loads: int) -> list[float]:
    """Median load time in ms of each path (``CheckpointManager.load_checkpoint_file``)."""
    result = []
    for path in paths:
        samples = []
        for _ in range(loads):
            t = time.perf_counter()
            CheckpointManager.load_checkpoint_file(path)
            samples.append((time.perf_counter() - t) * 1e3)
        result.append(statistics.median(samples))
    return result


def _first_mid_last(items: list[Any]) -> list[Any]:
    return [items[0], items[len(items) // 2], items[-1]] if items else []


def run_once(
    config: str,
    args: argparse.Namespace,
    n_messages: int,
    replies: _Replies,
    base: Path,
    profiler: Any = None,
) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix=f"{config}_", dir=base))
    try:
        initiator, manager, groupchat, cm = build_chat(config, args.agents, n_messages, replies, workdir)
        stamps = groupchat.stamps
        first = replies.text(initiator.name, 0)
        gc.collect()
        with IOStream.set_default(_NullIO()):  # type: ignore[arg-type]
            if profiler is not None:
                profiler.enable()
            t0 = time.perf_counter()
            initiator.initiate_chat(manager, message=first, silent=True)
            t1 = time.perf_counter()
            if profiler is not None:
                profiler.disable()
        if cm is not None:
            cm.close()
        if len(groupchat.messages) != n_messages:
            raise RuntimeError(
                f"{config}: chat produced {len(groupchat.messages)} messages, expected {n_messages}"
            )
        edges = [t0, *stamps, t1]
        intervals = [(b - a) * 1e3 for a, b in itertools.pairwise(edges)]
        raw = sum(len(str(m.get("content") or "").encode()) for m in groupchat.messages)
        result: dict[str, Any] = {
            "total_ms": (t1 - t0) * 1e3,
            # one interval per message after the first: each holds exactly one full round
            "per_message_ms": intervals[1:n_messages],
            "raw_text_bytes": raw,
            "fingerprint": hash(tuple(m.get("content") for m in groupchat.messages)),
        }
        if config != "baseline":
            session = workdir / "session"
            result["bytes"], result["bytes_allocated"], result["bytes_by_file"] = dir_bytes(session)
            if cm is not None:
                files = [cm.checkpoint_path(i) for i in cm.list_checkpoints()]
            else:
                files = sorted((session / "checkpoints").glob("checkpoint_*.json"))
            result["checkpoints"] = len(files)
            chosen = _first_mid_last(files)
            result["load_ms"] = time_loads(chosen, args.loads) if chosen else []
            if chosen:
                last = CheckpointManager.load_checkpoint_file(chosen[-1])
                result["last_checkpoint_messages"] = len(last.messages)
        return result
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def run_naive_sampled(
    args: argparse.Namespace, n_messages: int, replies: _Replies, base: Path
) -> dict[str, Any]:
    """The naive design's cost at ``n_messages`` without writing all its snapshots (quadratic bytes).

    Runs the chat once with a plain manager, then writes the naive snapshot of the chat state as it was
    after message k (all lists truncated to their length at k) for evenly spaced k, timing each write.
    Per-message cost and total bytes are linearly interpolated between the samples.
    """
    workdir = Path(tempfile.mkdtemp(prefix="naive-sampled_", dir=base))
    try:
        agents, groupchat = build_agents(args.agents, n_messages, replies)
        manager = NaiveSnapshotManager(None, groupchat=groupchat, llm_config=False, silent=True)
        participants = [*groupchat.agents, manager]
        with IOStream.set_default(_NullIO()):  # type: ignore[arg-type]
            agents[0].initiate_chat(manager, message=replies.text(agents[0].name, 0), silent=True)
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
        total_bytes = sum(_interp(samples, sizes, k) for k in range(n_messages))
        raw = sum(len(str(m.get("content") or "").encode()) for m in groupchat.messages)
        load_ms = time_loads(_first_mid_last(paths), args.loads)
        return {
            "sampled": True,
            "samples": len(samples),
            "added_per_message_ms": per_message,  # the snapshot cost itself is the added time
            "bytes": int(total_bytes),
            "bytes_allocated": None,
            "raw_text_bytes": raw,
            "checkpoints": n_messages,
            "load_ms": load_ms,
        }
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _interp(xs: list[int], ys: list[float], x: float) -> float:
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


def summarize(n_messages: int, runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    base_runs = runs["baseline"]
    base = per_index_median([r["per_message_ms"] for r in base_runs])
    raw = base_runs[0]["raw_text_bytes"]
    window = min(WINDOW, len(base))
    rows: dict[str, Any] = {
        "baseline": {
            "runs": len(base_runs),
            "per_message_ms": {
                "mean": statistics.fmean(base),
                "p50": percentile(base, 50),
                "p99": percentile(base, 99),
            },
            "total_ms": statistics.median(r["total_ms"] for r in base_runs),
            "raw_text_bytes": raw,
        }
    }
    for config, config_runs in runs.items():
        if config == "baseline" or not config_runs:
            continue
        row: dict[str, Any] = {"runs": len(config_runs)}
        if config_runs[0].get("sampled"):
            sample = config_runs[0]
            added = sample["added_per_message_ms"]
            own = [a + b for a, b in zip(added, base, strict=True)]
            row.update(sampled=True, samples=sample["samples"], total_added_per_message_ms=None)
        else:
            own = per_index_median([r["per_message_ms"] for r in config_runs])
            added = [a - b for a, b in zip(own, base, strict=True)]
            paired = [
                (r["total_ms"] - b["total_ms"]) / n_messages
                for r, b in zip(config_runs, base_runs, strict=False)
            ]
            row["total_added_per_message_ms"] = statistics.median(paired)
        loads = [statistics.median(col) for col in zip(*(r["load_ms"] for r in config_runs), strict=True)]
        first_window = statistics.fmean(added[:window])
        last_window = statistics.fmean(added[-window:])
        nbytes = statistics.median(r["bytes"] for r in config_runs)
        allocated = [r["bytes_allocated"] for r in config_runs if r.get("bytes_allocated") is not None]
        row.update(
            added_per_message_ms={
                "mean": statistics.fmean(added),
                "p50": percentile(added, 50),
                "p99": percentile(added, 99),
            },
            per_message_ms={
                "mean": statistics.fmean(own),
                "p50": percentile(own, 50),
                "p99": percentile(own, 99),
            },
            own_minus_baseline_percentile_ms={
                "p50": percentile(own, 50) - rows["baseline"]["per_message_ms"]["p50"],
                "p99": percentile(own, 99) - rows["baseline"]["per_message_ms"]["p99"],
            },
            added_first_window_ms=first_window,
            added_last_window_ms=last_window,
            window=window,
            bytes=int(nbytes),
            bytes_allocated=int(statistics.median(allocated)) if allocated else None,
            bytes_ratio=nbytes / raw,
            checkpoints=config_runs[0]["checkpoints"],
            bytes_by_file=config_runs[0].get("bytes_by_file"),
            load_ms={"first": loads[0], "middle": loads[1], "last": loads[2]} if len(loads) == 3 else {},
        )
        if "total_ms" in config_runs[0]:
            row["total_ms"] = statistics.median(r["total_ms"] for r in config_runs)
        row["verdict"] = {
            "added": row["added_per_message_ms"]["mean"] < TARGET_ADDED_MS,
            "flat": last_window
            <= max(first_window + FLAT_TOLERANCE_MS, first_window * (1 + FLAT_TOLERANCE_REL)),
            "bytes": row["bytes_ratio"] < TARGET_BYTES_RATIO,
            "load": bool(loads) and max(loads) < TARGET_LOAD_MS,
        }
        rows[config] = row
    return {"messages": n_messages, "raw_text_bytes": raw, "rows": rows}


# -- reporting --------------------------------------------------------------------------------------------
def _mark(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def _kib(n: float) -> str:
    return f"{n / 1024:,.0f}K" if n < 100 * 1024 * 1024 else f"{n / 1024 / 1024:,.0f}M"


def print_table(summary: dict[str, Any], args: argparse.Namespace) -> None:
    n = summary["messages"]
    rows = summary["rows"]
    base = rows["baseline"]
    print()
    print(
        f"== {n} messages x ~{args.message_bytes} B, {args.agents} agents, round robin; medians over "
        f"{base['runs']} run(s); raw message text {summary['raw_text_bytes'] / 1024:,.0f} KiB =="
    )
    print(
        f"baseline (plain GroupChatManager): {base['per_message_ms']['mean']:.3f} ms/message mean, "
        f"p50 {base['per_message_ms']['p50']:.3f}, p99 {base['per_message_ms']['p99']:.3f}; "
        f"run {base['total_ms']:.0f} ms"
    )
    header = (
        f"{'config':<11} {'added ms/msg':>29} {'tot/M':>6} {'own p50/p99':>13} "
        f"{'first|last 200':>14} {'disk':>7} {'ratio':>6} {'du':>5} {'load ms f/m/l':>17}  "
        f"{'<0.5ms':>6} {'flat':>4} {'<4x':>4} {'<15ms':>5}"
    )
    print(header)
    print(f"{'':<11} {'mean    p50    p99':>29}")
    print("-" * len(header))
    for config in CONFIGS[1:]:
        row = rows.get(config)
        if row is None:
            continue
        a = row["added_per_message_ms"]
        own = row["per_message_ms"]
        name = config + ("~" if row.get("sampled") else "")
        tot = row.get("total_added_per_message_ms")
        loads = row["load_ms"]
        ratio_du = row["bytes_allocated"] / summary["raw_text_bytes"] if row.get("bytes_allocated") else None
        v = row["verdict"]
        print(
            f"{name:<11} {a['mean']:>9.3f} {a['p50']:>6.3f} {a['p99']:>12.3f} "
            f"{(f'{tot:.3f}' if tot is not None else '-'):>6} "
            f"{own['p50']:>6.2f}/{own['p99']:<6.2f} "
            f"{row['added_first_window_ms']:>6.3f}|{row['added_last_window_ms']:<7.3f} "
            f"{_kib(row['bytes']):>7} {row['bytes_ratio']:>5.2f}x "
            f"{(f'{ratio_du:.1f}x' if ratio_du else '-'):>5} "
            f"{loads.get('first', 0):>5.1f}/{loads.get('middle', 0):.1f}/{loads.get('last', 0):<6.1f} "
            f"{_mark(v['added']):>6} {_mark(v['flat']):>4} {_mark(v['bytes']):>4} {_mark(v['load']):>5}"
        )
    print(
        "added: per-index (config - baseline) per-message time, median over runs; tot/M: (total run time "
        "difference)/M incl. start/end checkpoints; own p50/p99: the config's own per-message time; "
        "first|last 200: mean added time in the first/last 200 messages; disk: apparent bytes of the "
        "session dir; ratio: disk / raw message text; du: allocated blocks / raw text; load: median "
        "load_checkpoint_file ms of the first/middle/last checkpoint."
    )
    for config in ("ours", "ours-fsync"):
        kinds = (rows.get(config) or {}).get("bytes_by_file")
        if kinds:
            raw = summary["raw_text_bytes"]
            parts = ", ".join(
                f"{name} {size / 1024:,.0f} KiB ({size / raw:.2f}x)"
                for name, size in sorted(kinds.items(), key=lambda kv: -kv[1])
                if size
            )
            print(f"{config} bytes by file: {parts}")
            break
    if any(r.get("sampled") for r in rows.values()):
        print(
            "naive~: sampled (quadratic cost); snapshot write time at evenly spaced points of the final "
            "state, interpolated per message; its added time is the snapshot cost itself."
        )


def print_verdict(summaries: list[dict[str, Any]]) -> None:
    at = [s for s in summaries if s["messages"] == TARGET_AT_MESSAGES] or summaries[-1:]
    small = [s for s in summaries if s["messages"] == WINDOW]
    if not at:
        return
    target = at[0]
    print()
    print(f"Targets at {target['messages']} messages (informational; exit status is always 0):")
    for config in ("ours", "ours-fsync"):
        row = target["rows"].get(config)
        if row is None:
            continue
        v = row["verdict"]
        cross = ""
        if small and config in small[0]["rows"]:
            at_small = small[0]["rows"][config]["added_per_message_ms"]["mean"]
            at_big = row["added_per_message_ms"]["mean"]
            cross = (
                f"; mean added at {WINDOW} msgs {at_small:.3f} ms vs {at_big:.3f} ms at {target['messages']}"
            )
        worst_load = max(row["load_ms"].values()) if row["load_ms"] else float("nan")
        print(
            f"  {config:<11} added/msg {row['added_per_message_ms']['mean']:.3f} ms {_mark(v['added'])}; "
            f"flat (last {row['window']} {row['added_last_window_ms']:.3f} vs first "
            f"{row['added_first_window_ms']:.3f} ms) {_mark(v['flat'])}{cross}; "
            f"bytes {row['bytes_ratio']:.2f}x {_mark(v['bytes'])}; "
            f"max load {worst_load:.1f} ms {_mark(v['load'])}"
        )


# -- profiling --------------------------------------------------------------------------------------------
def profile_ours(args: argparse.Namespace, n_messages: int, replies: _Replies, base: Path) -> None:
    profiler = cProfile.Profile()
    run_once("ours", args, n_messages, replies, base, profiler=profiler)
    buffer = io.StringIO()
    stats = pstats.Stats(profiler, stream=buffer)
    stats.sort_stats("cumulative").print_stats(r"checkpoint_system|orjson|posix|pydantic", 45)
    stats.sort_stats("tottime").print_stats(25)
    print(f"\n== cProfile of 'ours' at {n_messages} messages ==")
    print(buffer.getvalue())


# -- main -------------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", default="200,1000", help="comma-separated message counts (max_round)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per configuration (medians reported)")
    parser.add_argument("--agents", type=int, default=4)
    parser.add_argument("--message-bytes", type=int, default=1024)
    parser.add_argument("--configs", default=",".join(CONFIGS), help=f"subset of {','.join(CONFIGS)}")
    parser.add_argument(
        "--fsync-repeats", type=int, default=None, help="runs of ours-fsync (default: --repeats)"
    )
    parser.add_argument(
        "--naive-max-messages",
        type=int,
        default=200,
        help="run the naive design for real up to this many messages; sample it above (default 200)",
    )
    parser.add_argument(
        "--naive-repeats", type=int, default=1, help="real naive runs (default 1; it is slow)"
    )
    parser.add_argument(
        "--naive-samples", type=int, default=11, help="sample points of the sampled naive run"
    )
    parser.add_argument("--loads", type=int, default=5, help="loads per checkpoint for the load time median")
    parser.add_argument(
        "--out", default=None, help="directory for the temporary sessions (default: system tmp)"
    )
    parser.add_argument("--json", default=None, help="write all results to this JSON file")
    parser.add_argument(
        "--profile", action="store_true", help="also cProfile one 'ours' run at the largest count"
    )
    args = parser.parse_args(argv)
    args.message_counts = [int(x) for x in str(args.messages).split(",") if x.strip()]
    args.config_list = [c for c in str(args.configs).split(",") if c]
    unknown = set(args.config_list) - set(CONFIGS)
    if unknown:
        parser.error(f"unknown configs {sorted(unknown)}")
    if "baseline" not in args.config_list:
        args.config_list.insert(0, "baseline")
    if min(args.message_counts) < 3 or args.repeats < 1 or args.agents < 2:
        parser.error("need --messages >= 3, --repeats >= 1, --agents >= 2")
    return args


@contextlib.contextmanager
def _workspace(out: str | None) -> Iterator[Path]:
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix="bench_checkpointing_", dir=out))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    replies = _Replies(args.message_bytes)
    started = time.perf_counter()
    summaries = []
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"bench_checkpointing: python {platform.python_version()}, {os.cpu_count()} cpu(s), load average "
        f"{load:.2f} at start, configs {','.join(args.config_list)}, repeats {args.repeats}, "
        f"sessions under {args.out or tempfile.gettempdir()}"
    )
    with _workspace(args.out) as base:
        # warm-up: imports, first-call caches, page cache for the temp dir
        for config in args.config_list:
            if config != "naive":
                run_once(config, args, 20, replies, base)
        for n in args.message_counts:
            runs: dict[str, list[dict[str, Any]]] = {c: [] for c in args.config_list}
            repeats = {c: args.repeats for c in args.config_list}
            if args.fsync_repeats is not None and "ours-fsync" in repeats:
                repeats["ours-fsync"] = args.fsync_repeats
            naive_real = "naive" in repeats and n <= args.naive_max_messages
            if "naive" in repeats:
                repeats["naive"] = args.naive_repeats if naive_real else 0
            for r in range(max(repeats.values())):
                order = [c for c in args.config_list if r < repeats[c]]
                if r % 2:
                    order.reverse()  # alternate the order so warm-up/drift effects do not favour one config
                for config in order:
                    runs[config].append(run_once(config, args, n, replies, base))
            if "naive" in args.config_list and not naive_real:
                runs["naive"] = [run_naive_sampled(args, n, replies, base)]
            fingerprints = {r["fingerprint"] for rs in runs.values() for r in rs if "fingerprint" in r}
            if len(fingerprints) > 1:
                print("WARNING: the configurations did not produce the same chat", file=sys.stderr)
            for config, config_runs in runs.items():
                for run in config_runs:
                    if "last_checkpoint_messages" in run and run["last_checkpoint_messages"] != n:
                        print(
                            f"WARNING: {config}: the last checkpoint holds {run['last_checkpoint_messages']} "
                            f"messages, expected {n}",
                            file=sys.stderr,
                        )
            summary = summarize(n, runs)
            summaries.append(summary)
            print_table(summary, args)
            sys.stdout.flush()
        print_verdict(summaries)
        if args.profile:
            profile_ours(args, max(args.message_counts), replies, base)
    elapsed = time.perf_counter() - started
    print(f"\ntotal benchmark time {elapsed:.1f} s")
    if args.json:
        document = {
            "settings": {
                "messages": args.message_counts,
                "repeats": args.repeats,
                "agents": args.agents,
                "message_bytes": args.message_bytes,
                "configs": args.config_list,
                "naive_max_messages": args.naive_max_messages,
                "python": platform.python_version(),
                "cpus": os.cpu_count(),
                "elapsed_s": elapsed,
            },
            "targets": {
                "added_ms": TARGET_ADDED_MS,
                "bytes_ratio": TARGET_BYTES_RATIO,
                "load_ms": TARGET_LOAD_MS,
                "at_messages": TARGET_AT_MESSAGES,
            },
            "results": summaries,
        }
        Path(args.json).write_text(json.dumps(document, indent=2))
        print(f"results written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
