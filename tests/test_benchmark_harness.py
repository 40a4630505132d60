"""The benchmark's own logic: the constant-work control runs once per message, and the verdicts read it right.

Timings are synthetic series here (the benchmark's numbers are printed by ``benchmarks/``, never asserted);
what is tested is how ``summarize`` pairs runs and judges flatness over the first and the last tenth of a
chat, which rows are judged against which target at 1,000 and 10,000 messages, how many runs each row gets
at each scale, and (on small real chats) that loads, restores and continuations are measured.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import bench_checkpointing as bench

N = 1000


def _chat_run(series: list[float], n: int = N) -> dict[str, Any]:
    return {"per_message_ms": series, "total_ms": sum(series), "raw_text_bytes": n * 1024}


def _ours_run(series: list[float], *, loads: bool = True, n: int = N) -> dict[str, Any]:
    run = _chat_run(series, n) | {"bytes": 3 * n * 1024, "checkpoints": n, "hook_ms": [0.25] * len(series)}
    if loads:
        run |= {"load_ms": [0.5, 5.0, 9.0], "continue_ms": 40.0, "continue_call_ms": 55.0}
        run["continue_new_messages"] = 1
    return run


def _growing(start: float, rise: float, n: int = N) -> list[float]:
    """n - 1 intervals rising linearly by ``rise`` ms from ``start``."""
    return [start + rise * i / (n - 2) for i in range(n - 1)]


def _runs(
    ours_rise: float, control_rise: float | None, repeats: int = 3, n: int = N
) -> dict[str, list[dict[str, Any]]]:
    runs = {
        "baseline": [_chat_run(_growing(0.5, 0.2, n), n) for _ in range(repeats)],
        "ours": [_ours_run(_growing(0.8, 0.2 + ours_rise, n), n=n) for _ in range(repeats)],
    }
    if control_rise is not None:
        runs["control"] = [_chat_run(_growing(0.8, 0.2 + control_rise, n), n) for _ in range(repeats)]
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
    assert row["window"] == 100  # a tenth of the chat
    assert row["verdict"]["flat"] is flat
    assert row["growth_ms"] == pytest.approx(ours_rise * 0.9, abs=0.01)  # tenths' centres 900 messages apart
    if control_rise is not None:
        assert row["net_growth_ms"] == pytest.approx((ours_rise - control_rise) * 0.9, abs=0.01)
    else:
        assert "net_growth_ms" not in row


def test_flatness_windows_are_a_tenth_of_a_large_chat() -> None:
    n = 10_000
    summary = bench.summarize(n, _runs(0.5, 0.45, repeats=1, n=n))
    row = summary["rows"]["ours"]
    assert row["window"] == 1000
    assert row["added_first_window_ms"] == pytest.approx(0.3 + 0.5 * 0.05, abs=0.002)
    assert row["net_growth_ms"] == pytest.approx(0.05 * 0.9, abs=0.002)
    assert row["verdict"]["flat"] is True


def test_targets_per_scale() -> None:
    assert (bench.target_load_ms(200), bench.target_load_ms(1000), bench.target_load_ms(10_000)) == (
        10.0,
        10.0,
        25.0,
    )
    loads = {"first": 0.5, "middle": 9.0, "last": 12.0}  # the last checkpoint's load is what is judged
    row = {"added_per_message_ms": {"mean": 0.4}, "flat": True, "bytes_ratio": 2.4, "load_ms": loads}
    row |= {"continue_ms": 99.0}
    assert bench.verdicts(row, 1000) == {
        "added": True,
        "flat": True,
        "bytes": True,
        "load": False,
        "continue": True,
    }
    assert bench.verdicts(row | {"bytes_ratio": 2.5, "continue_ms": 100.0}, 10_000) == {
        "added": True,
        "flat": True,
        "bytes": False,
        "load": True,
        "continue": False,
    }


def test_only_files_and_sqlite_get_verdicts() -> None:
    runs = _runs(0.0, 0.0)
    for name in ("ours-sqlite", "ours-pg", "ours-fsync"):
        runs[name] = [_ours_run(_growing(0.9, 0.2)) for _ in range(3)]
    rows = bench.summarize(N, runs)["rows"]
    assert {name for name, row in rows.items() if "verdict" in row} == {"ours", "ours-sqlite"}
    assert rows["ours-pg"]["net_growth_ms"] == pytest.approx(0.0, abs=0.01)  # still reported
    assert rows["ours"]["continue_ms"] == 40.0 and rows["ours"]["continue_call_ms"] == 55.0


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


def test_repeats_per_row_and_scale() -> None:
    args = bench.parse_args(["--repeats", "5", "--flat-repeats", "12", "--repeats-large", "2"])
    assert [bench._repeats_of(name, args, N) for name in ("baseline", "control", "ours", "ours-sqlite")] == [
        12
    ] * 4
    assert bench._repeats_of("ours-pg", args, N) == 5
    assert bench._repeats_of("ours-fsync", args, N) == 3
    assert bench._repeats_of("naive", args, 200) == 1
    large = {name: bench._repeats_of(name, args, 10_000) for name in bench.CONFIGS}
    assert large["baseline"] == large["control"] == large["ours"] == large["ours-sqlite"] == 2
    assert large["ours-pg"] == 2
    assert {large[name] for name in ("ours-fsync", "ours-sqlite-fsync", "lg-delta", "lg-delta-base")} == {1}
    assert large["naive"] == large["lg-list"] == large["lg-list-base"] == 0  # quadratic: skipped
    assert bench._loads_in(args, N) == 5 and bench._loads_in(args, 10_000) == 2
    ran = ["baseline", "ours", "ours-fsync", "naive", "lg-list-base", "lg-list"]
    note = bench.scale_note(args, ran, 10_000)
    assert note is not None and "naive, lg-list skipped" in note and "ours-fsync once" in note
    assert bench.scale_note(args, ["baseline", "naive"], N) is None
    quick = bench.parse_args(["--quick"])
    assert quick.message_counts == [200]
    assert bench._repeats_of("ours", quick, 200) == 1 and bench._repeats_of("ours", quick, 10_000) == 1


def test_the_default_run_measures_both_scales() -> None:
    assert bench.parse_args([]).message_counts == [1000, 10_000]


def test_the_control_joins_every_run_of_ours_unless_switched_off() -> None:
    assert bench.parse_args(["--configs", "ours-sqlite"]).config_list == [
        "baseline",
        "control",
        "ours-sqlite",
    ]
    assert bench.parse_args(["--configs", "naive"]).config_list == ["baseline", "naive"]
    assert "control" not in bench.parse_args(["--control-us", "0"]).config_list


def test_tables_and_verdicts_at_both_scales() -> None:
    args = bench.parse_args([])
    summaries = []
    for n in (N, 10_000):
        runs = _runs(0.0, 0.0, repeats=1, n=n)
        runs["ours-pg"] = [_ours_run(_growing(0.9, 0.2, n), n=n)]
        summary = bench.summarize(n, runs)
        summary["scale_note"] = bench.scale_note(args, ["baseline", "control", "ours", "ours-pg"], n)
        summaries.append(summary)
    large = bench.table_lines(summaries[1], args)
    assert large[1].startswith("at 10000 messages: above 2,000 messages every row runs 3 times")
    assert "<25ms" in "\n".join(large) and "<10ms" in "\n".join(bench.table_lines(summaries[0], args))
    text = "\n".join(bench.verdict_lines(summaries))
    assert "Targets of issue 18 at 1000 messages" in text and "Targets of issue 18 at 10000 messages" in text
    assert "added 0.300 ms (0.300 at 1000) PASS" in text  # the 10,000 row names its 1,000 number
    assert "continue 40.0 ms PASS (whole call 55.0 ms)" in text
    assert "reported beside them, no verdict:\n  ours-pg" in text


@pytest.mark.parametrize(("control_rise", "noisy"), [(0.08, False), (0.15, True), (-0.15, True)])
def test_a_control_rising_beyond_the_noise_floor_is_pointed_out(control_rise: float, noisy: bool) -> None:
    summary = bench.summarize(N, _runs(0.0, control_rise))
    text = "\n".join(bench.table_lines(summary, bench.parse_args([])) + bench.verdict_lines([summary]))
    assert ("note: the control's own rise" in text) is noisy
    assert ("(noisy: see the note under the table)" in text) is noisy
    assert "own call 0.250|0.250" in text


def test_the_plot_title_counts_the_runs_of_each_row() -> None:
    settings = {"date": "2026-11-22", "load_average_start": 0.2, "message_bytes": 1024, "agents": 4}
    summary = bench.summarize(N, _runs(0.0, 0.0, repeats=3))
    assert bench._plot_title(summary, settings).endswith("medians over runs: 3 of baseline, control, ours")


@pytest.mark.parametrize("name", ["ours", "ours-sqlite"])
def test_a_small_real_run_times_loads_restores_and_a_continuation(name: str, tmp_path: Path) -> None:
    args = bench.parse_args(["--quick", "--restores", "1", "--continues", "1", "--loads", "1"])
    result = bench.Bench(args, tmp_path, None).run(name, 24, curve=True)
    assert result["last_checkpoint_messages"] == 24
    assert len(result["per_message_ms"]) == 23 and len(result["hook_ms"]) == 24
    assert result["continue_new_messages"] == 1  # max_rounds=1: the first new message is the only one
    assert 0 < result["continue_ms"] <= result["continue_call_ms"]
    assert result["restore_ms"] > 0 and len(result["load_ms"]) == 3
    assert [k for k, _ in result["size_curve"]] == list(range(1, 25))  # every twentieth: every message here


def test_the_sampled_naive_run_on_a_small_chat(tmp_path: Path) -> None:
    args = bench.parse_args(["--quick", "--naive-samples", "3", "--loads", "1"])
    result = bench.run_naive_sampled(bench.Bench(args, tmp_path, None), 40)
    assert result["samples"] == 3 and len(result["added_per_message_ms"]) == 39
    assert [k for k, _ in result["size_curve"]] == list(range(2, 41, 2))  # 20 samples of the chat


def test_the_clock_is_put_back() -> None:
    original = bench.CheckpointManager.take_checkpoint
    with bench._saved_messages_clock() as saved:
        assert bench.CheckpointManager.take_checkpoint is not original
    assert bench.CheckpointManager.take_checkpoint is original and saved == []
