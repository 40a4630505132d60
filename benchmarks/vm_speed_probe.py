"""How steady is this machine? Times a fixed CPU loop, back to back, and prints its median per time slice.

The per-message numbers of ``bench_checkpointing.py`` are differences of two runs of ~1 s each, so a machine
whose speed changes within a second moves them. Run this before trusting a flatness verdict:

    python benchmarks/vm_speed_probe.py [--seconds 2] [--rounds 4] [--slice-ms 200]

Each round sleeps 1 s, then keeps one core busy for ``--seconds`` and prints the median time of the fixed loop
in every ``--slice-ms`` slice (microseconds; lower is faster) and the slowest/fastest slice ratio.
"""

from __future__ import annotations

import argparse
import statistics
import time

#: iterations of the timed loop (~0.5 ms on this project's VM)
LOOP = 20_000


def _timed_loop() -> float:
    """Microseconds taken by ``LOOP`` additions in the interpreter."""
    start = time.perf_counter()
    n = 0
    while n < LOOP:
        n += 1
    return (time.perf_counter() - start) * 1e6


def probe(seconds: float, slice_ms: float) -> list[float]:
    """Median loop time in each slice of ``seconds`` of continuous work."""
    slices: dict[int, list[float]] = {}
    start = time.perf_counter()
    while (now := time.perf_counter()) - start < seconds:
        slices.setdefault(int((now - start) * 1e3 // slice_ms), []).append(_timed_loop())
    return [statistics.median(times) for _, times in sorted(slices.items())]


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="busy time per round")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--slice-ms", type=float, default=200.0)
    args = parser.parse_args()
    print(f"fixed loop of {LOOP:,} additions: median us per {args.slice_ms:g} ms slice")
    for round_number in range(args.rounds):
        time.sleep(1.0)
        medians = probe(args.seconds, args.slice_ms)
        spread = max(medians) / min(medians)
        shown = " ".join(f"{m:.0f}" for m in medians)
        print(f"round {round_number}: {shown}  (slowest/fastest {spread:.2f}x)")


if __name__ == "__main__":
    main()
