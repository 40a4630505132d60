"""Checkpoint ids: ``checkpoint_<step>_<context>_<YYYYMMDD_HHMMSS_ffffff>``, the same in every backend.

The step number is unique within a session (one writer per session), so ids never collide; the context and
the timestamp make them readable. A file store names each checkpoint's record file ``<id>.json``.
"""

from __future__ import annotations

import functools
import re


def new_checkpoint_id(step_number: int, context: str, timestamp: str) -> str:
    """The id of the checkpoint of ``step_number`` taken at ``timestamp`` (ISO) in ``context``."""
    return f"checkpoint_{step_number}_{_safe_context(context)}_{_file_timestamp(timestamp)}"


@functools.lru_cache(maxsize=256)
def _safe_context(context: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", context).strip("-") or "checkpoint"


def _file_timestamp(iso_timestamp: str) -> str:
    """``YYYYMMDD_HHMMSS_ffffff`` from the digits of an ISO timestamp."""
    t = iso_timestamp
    if len(t) >= 26 and t[4] == t[7] == "-" and t[10] == "T" and t[19] == ".":  # utc_timestamp()'s form
        stamp = f"{t[0:4]}{t[5:7]}{t[8:10]}_{t[11:13]}{t[14:16]}{t[17:19]}_{t[20:26]}"
        if stamp[:8].isdigit() and stamp[9:15].isdigit() and stamp[16:].isdigit():
            return stamp
    digits = re.sub(r"[^0-9]", "", iso_timestamp)[:20]
    return f"{digits[:8]}_{digits[8:14]}_{digits[14:20]}" if len(digits) >= 14 else digits or "0"
