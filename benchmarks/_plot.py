"""The benchmark's PNG: per-message added time and bytes on disk against conversation length, every config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

_STYLE = {
    "ours": ("tab:blue", "-"),
    "ours-fsync": ("tab:blue", "--"),
    "ours-sqlite": ("tab:green", "-"),
    "ours-sqlite-fsync": ("tab:green", "--"),
    "ours-pg": ("tab:purple", "-"),
    "ours-pg-fsync": ("tab:purple", "--"),
    "naive": ("tab:red", "-"),
    "lg-list": ("tab:orange", "-"),
    "lg-delta": ("tab:brown", "-"),
}


def _rolling_mean(values: list[float], window: int) -> list[float]:
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def write_plot(summary: dict[str, Any], path: Path, *, title: str, targets: dict[str, float]) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = summary["messages"]
    raw_per_message = summary["raw_text_bytes"] / n
    smoothing = max(25, n // 100)  # 25 messages at 1,000, 100 at 10,000
    every = 50  # the size curve's interval: read from the first curve that has two points
    fig, (ax_time, ax_bytes) = plt.subplots(1, 2, figsize=(15, 6.2))
    floor = 0.005
    for name, row in summary["rows"].items():
        if name == "baseline" or "added_series_ms" not in row:
            continue
        color, style = _STYLE.get(name.rstrip("~"), ("gray", ":"))
        label = name + ("~ (sampled)" if row.get("sampled") else "")
        series = row["added_series_ms"]
        smooth = [max(v, floor) for v in _rolling_mean(series, smoothing)]
        ax_time.plot(range(2, len(smooth) + 2), smooth, color=color, linestyle=style, label=label, lw=1.6)
        curve = row.get("size_curve") or []
        if curve:
            xs = [k for k, _ in curve]
            every = xs[1] - xs[0] if len(xs) > 1 else every
            ys = [b / 1024 / 1024 for _, b in curve]
            ax_bytes.plot(xs, ys, color=color, linestyle=style, marker=".", label=label, lw=1.6)
    ax_time.axhline(targets["added_ms"], color="black", lw=0.8, linestyle=":")
    ax_time.text(n * 0.01, targets["added_ms"] * 1.08, f"target {targets['added_ms']} ms", fontsize=8)
    ax_time.set_yscale("log")
    ax_time.set_xlabel("message index (conversation length)")
    ax_time.set_ylabel(f"added time per message, ms (vs its baseline; rolling mean of {smoothing}, log)")
    ax_time.set_title("cost of checkpointing one message")
    ax_time.grid(True, which="both", alpha=0.3)
    ax_time.legend(fontsize=8, loc="upper left")

    xs = list(range(max(1, n // 50), n + 1, max(1, n // 50)))
    ax_bytes.plot(
        xs, [x * raw_per_message / 1024 / 1024 for x in xs], color="black", lw=0.8, label="raw text"
    )
    ax_bytes.plot(
        xs,
        [x * raw_per_message * targets["bytes_ratio"] / 1024 / 1024 for x in xs],
        color="black",
        lw=0.8,
        linestyle=":",
        label=f"{targets['bytes_ratio']:g}x raw (target)",
    )
    ax_bytes.set_yscale("log")
    ax_bytes.set_xlabel("messages in the conversation")
    ax_bytes.set_ylabel(f"bytes on disk, MiB (apparent size, log; sampled every {every} messages)")
    ax_bytes.set_title("session bytes on disk")
    ax_bytes.text(
        0.99,
        0.02,
        "ours: the last point includes chat_history.json (written when the chat ends)",
        transform=ax_bytes.transAxes,
        ha="right",
        fontsize=8,
    )
    ax_bytes.grid(True, which="both", alpha=0.3)
    ax_bytes.legend(fontsize=8, loc="upper left")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
