"""Does checkpointing's added time grow with the conversation, or does AG2's own work slow down around it?

AG2 walks the replying agent's whole history on every reply (``_generate_oai_reply_from_client`` unrolls
tool responses message by message), so a plain group chat's own cost per message grows with its length. At
1,000 messages the four agents' histories are about a megabyte of dicts, more than a core's L2 cache here;
work done between two messages that touches memory may evict part of them and slow AG2's next walk by an
amount that grows with the conversation, even when that work itself takes constant time.

This script separates the two. It runs the benchmark's chat (``bench_checkpointing.py``: 4 agents, 1 KiB
deterministic replies, round robin) under these configurations, interleaved within each repeat:

* ``baseline``     plain ``GroupChatManager``;
* ``spin``         plain manager + a constant CPU-only wait of ``--work-us`` at the point where ours takes
                   its checkpoint (it touches no memory: a control for the harness itself);
* ``touch``        the same time spent writing over a 2 MiB buffer (constant work that evicts caches);
* ``ours``         ``CheckpointingGroupChatManager`` on the file store; ``ours-sqlite`` on SQLite.

For each it prints the added time (config minus the baseline of the same repeat, per message, median over
repeats) over the first and the last 200 messages, the time inside our own checkpoint call, and the baseline's
own growth. How far ``spin`` (constant, memory-free work) moves between the first and the last messages is
the harness's own noise: a rise of ours smaller than that cannot be told from the machine.

    python benchmarks/flatness_controls.py [--messages 1000] [--repeats 6] [--work-us 300]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
for _path in (str(BENCH_DIR.parent), str(BENCH_DIR)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

import _backends  # noqa: E402
import bench_checkpointing as bench  # noqa: E402
from autogen import GroupChatManager  # noqa: E402

from checkpoint_system import CheckpointingGroupChatManager, CheckpointManager  # noqa: E402

WINDOW = 200
CONFIGS = ("baseline", "spin", "touch", "ours", "ours-sqlite")
_BUFFER = bytearray(2 << 20)
_BLOCK = 64 << 10


def touch(seconds: float) -> None:
    """Spend ``seconds`` writing over a 2 MiB buffer, 64 KiB at a time (evicts the caches)."""
    end = time.perf_counter() + seconds
    offset = 0
    zeros = bytes(_BLOCK)
    while time.perf_counter() < end:
        _BUFFER[offset : offset + _BLOCK] = zeros
        offset = (offset + _BLOCK) % len(_BUFFER)


def run(config: str, n_messages: int, work_s: float, base: Path) -> tuple[list[float], list[float]]:
    """(per-message intervals, our checkpoint call's durations) of one chat under ``config``."""
    replies = bench._Replies(1024)
    agents = bench.make_agents(4, replies)
    groupchat = bench.build_groupchat(agents, n_messages)
    kwargs = bench._manager_kwargs(groupchat)
    workdir = Path(tempfile.mkdtemp(prefix=f"{config}_", dir=base))
    backend: _backends.FileBackend | _backends.SqliteBackend | None = None
    cm: CheckpointManager | None = None
    own: list[float] = []
    try:
        manager: GroupChatManager
        if config == "baseline":
            manager = GroupChatManager(**kwargs)
        elif config in ("spin", "touch"):
            action = bench.spin if config == "spin" else touch
            manager = bench.ConstantWorkManager(lambda: action(work_s), **kwargs)
        else:  # the stores exactly as the benchmark's ours / ours-sqlite rows make them
            backend_class = _backends.FileBackend if config == "ours" else _backends.SqliteBackend
            backend = backend_class(workdir, "crash")
            cm = backend.manager()
            own = bench._time_checkpoint_calls(cm)
            manager = CheckpointingGroupChatManager(cm, **kwargs)
        t0, t1 = bench._run_chat(agents[0], manager, groupchat, replies, n_messages, config)
        return bench._intervals(t0, t1, groupchat.timing["stamps"], n_messages), own
    finally:
        if backend is not None and cm is not None:
            backend.close_writer(cm)
            backend.cleanup()
        shutil.rmtree(workdir, ignore_errors=True)


def _ends(series: list[float]) -> tuple[float, float]:
    return statistics.fmean(series[:WINDOW]), statistics.fmean(series[-WINDOW:])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--work-us", type=float, default=300.0, help="duration of the spin/touch work")
    parser.add_argument("--configs", default=",".join(CONFIGS), help=f"subset of {','.join(CONFIGS)}")
    args = parser.parse_args(argv)
    configs = ["baseline", *(c for c in args.configs.split(",") if c in CONFIGS and c != "baseline")]
    if args.messages < 2 * WINDOW:
        parser.error(f"--messages must be at least {2 * WINDOW}")
    runs: dict[str, list[tuple[list[float], list[float]]]] = {c: [] for c in configs}
    with tempfile.TemporaryDirectory(prefix="flatness_controls_") as tmp:
        for config in configs:  # warm-up: imports and first-call caches
            run(config, 20, args.work_us / 1e6, Path(tmp))
        for repeat in range(args.repeats):
            order = configs if repeat % 2 == 0 else configs[::-1]
            for config in order:
                runs[config].append(run(config, args.messages, args.work_us / 1e6, Path(tmp)))
    baseline = [series for series, _ in runs["baseline"]]
    own_first, own_last = _ends(bench.per_index_median(baseline))
    print(
        f"{args.messages} messages, {args.repeats} repeats, work {args.work_us:g} us; "
        f"first|last {WINDOW} messages, ms per message"
    )
    print(f"baseline own time {own_first:.3f}|{own_last:.3f} (AG2's own work grows with the history)")
    print(f"{'config':<12} {'added first|last':>18} {'growth':>8} {'own call first|last':>20}")
    for config in configs[1:]:
        paired = zip(runs[config], baseline, strict=True)  # the same repeat: timed minutes apart at most
        added = bench.per_index_median(
            [[a - b for a, b in zip(s, base, strict=True)] for (s, _), base in paired]
        )
        first, last = _ends(added)
        owns = [own for _, own in runs[config] if own]
        own_text = "{:.3f}|{:.3f}".format(*_ends(bench.per_index_median(owns))) if owns else "-"
        print(f"{config:<12} {f'{first:.3f}|{last:.3f}':>18} {last - first:>+8.3f} {own_text:>20}")


if __name__ == "__main__":
    main()
