"""The benchmark's own logic: the constant-work control runs once per message, and the verdicts read it right.

Timings are synthetic series here (the benchmark's numbers are printed by ``benchmarks/``, never asserted);
what is tested is how ``summarize`` pairs runs and judges flatness.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import bench_checkpointing as bench

N = 1000


def _chat_run(series: list[float]) -> dict[str, Any]:
    return {"per_message_ms": series, "total_ms": sum(series), "raw_text_bytes": N * 1024}


def _ours_run(series: list[float], *, loads: bool = True) -> dict[str, Any]:
    run = _chat_run(series) | {"bytes": 3 * N * 1024, "checkpoints": N, "hook_ms": [0.25] * len(series)}
    if loads:
        run["load_ms"] = [0.5, 5.0, 9.0]
    return run


def _growing(start: float, rise: float) -> list[float]:
    """N - 1 intervals rising linearly by ``rise`` ms from ``start``."""
    return [start + rise * i / (N - 2) for i in range(N - 1)]


def _runs(ours_rise: float, control_rise: float | None, repeats: int = 3) -> dict[str, list[dict[str, Any]]]:
    runs = {
        "baseline": [_chat_run(_growing(0.5, 0.2)) for _ in range(repeats)],
        "ours": [_ours_run(_growing(0.8, 0.2 + ours_rise)) for _ in range(repeats)],
    }
    if control_rise is not None:
        runs["control"] = [_chat_run(_growing(0.8, 0.2 + control_rise)) for _ in range(repeats)]
    return runs


def test_constant_work_manager_works_once_per_message() -> None:
    replies = bench._Replies(64)
    agents = bench.make_agents(3, replies)
    groupchat = bench.build_groupchat(agents, 12)
    calls: list[int] = []
    manager = bench.ConstantWorkManager(
        lambda: calls.append(len(groupchat.messages)), **bench._manager_kwargs(groupchat)
    )
    bench._run_chat(agents[0], manager, groupchat, replies, 12, "control")
    assert calls == list(range(1, 13))  # after each message's broadcast, with that message in the chat


@pytest.mark.parametrize(
    ("ours_rise", "control_rise", "flat"),
    [
        (0.10, 0.08, True),  # grows like constant work: the machine's growth, not ours
        (0.20, 0.08, False),  # 0.12 ms more than constant work
        (0.10, None, False),  # no control: judged on its own rise
        (0.00, None, True),
    ],
)
def test_flatness_is_judged_net_of_the_control(
    ours_rise: float, control_rise: float | None, flat: bool
) -> None:
    row = bench.summarize(N, _runs(ours_rise, control_rise))["rows"]["ours"]
    assert row["verdict"]["flat"] is flat
    assert row["growth_ms"] == pytest.approx(ours_rise * 0.8, abs=0.01)  # window centres 800 messages apart
    if control_rise is not None:
        assert row["net_growth_ms"] == pytest.approx((ours_rise - control_rise) * 0.8, abs=0.01)
    else:
        assert "net_growth_ms" not in row


def test_rows_pair_with_the_baseline_runs_of_the_same_repeats() -> None:
    runs = _runs(0.0, 0.0, repeats=3)
    runs["baseline"] += [_chat_run([9.0] * (N - 1)) for _ in range(4)]  # repeats that ours did not run
    row = bench.summarize(N, runs)["rows"]["ours"]
    assert row["added_per_message_ms"]["mean"] == pytest.approx(0.3)


def test_loads_come_from_the_runs_that_measured_them() -> None:
    runs = _runs(0.0, 0.0)
    runs["ours"].append(_ours_run(_growing(0.8, 0.2), loads=False))
    runs["baseline"].append(_chat_run(_growing(0.5, 0.2)))
    row = bench.summarize(N, runs)["rows"]["ours"]
    assert row["load_ms"] == {"first": 0.5, "middle": 5.0, "last": 9.0}
    assert row["runs"] == 4


def test_flatness_repeats_apply_to_the_flatness_rows_only() -> None:
    args = bench.parse_args(["--repeats", "5", "--flat-repeats", "12"])
    assert [bench._repeats_of(name, args, N) for name in ("baseline", "control", "ours", "ours-sqlite")] == [
        12
    ] * 4
    assert bench._repeats_of("ours-pg", args, N) == 5
    assert bench._repeats_of("ours-fsync", args, N) == 3
    quick = bench.parse_args(["--quick"])
    assert bench._repeats_of("ours", quick, 200) == 1


def test_the_control_joins_every_run_of_ours_unless_switched_off() -> None:
    assert bench.parse_args(["--configs", "ours-sqlite"]).config_list == [
        "baseline",
        "control",
        "ours-sqlite",
    ]
    assert bench.parse_args(["--configs", "naive"]).config_list == ["baseline", "naive"]
    assert "control" not in bench.parse_args(["--control-us", "0"]).config_list


def test_the_plot_title_names_only_the_judged_rows_that_ran() -> None:
    settings = {"date": "2026-11-22", "load_average_start": 0.2, "message_bytes": 1024, "agents": 4}
    settings |= {"repeats": 9, "flat_repeats": 24, "configs": ["baseline", "control", "ours", "naive"]}
    title = bench._plot_title({"messages": N}, settings)
    assert "medians of 9 runs (24 of baseline, control, ours);" in title
    assert "medians of 9 runs;" in bench._plot_title({"messages": N}, settings | {"flat_repeats": 9})
