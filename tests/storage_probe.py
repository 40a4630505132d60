"""Child process of test_storage_links.py: one storage operation on a hostile session, bounded and measured.

    python tests/storage_probe.py read <session_dir>
    python tests/storage_probe.py read-file <checkpoint_file>
    python tests/storage_probe.py write <session_dir> <standalone checkpoint to save again>

The operation runs under an address-space limit (what the process had after its imports plus 768 MiB), so a
library that reads a device without bound fails with MemoryError here instead of exhausting the machine; the
parent kills the process on a timeout (a hang). The last line of stdout is a JSON report:
``{"outcome": "ok" | "CheckpointError" | "other", "error": ..., "rss_growth_kib": ..., "seconds": ...}`` plus
for ``read`` the listed ids and, per loaded id, "refused" or the sha256 of ``comparable(data)``.
"""

from __future__ import annotations

import hashlib
import json
import resource
import sys
import time
import traceback
import warnings
from typing import Any

import orjson

from checkpoint_system import CheckpointData, CheckpointError, CheckpointManager, read_checkpoint_file

HEADROOM = 768 << 20


def fingerprint(data: CheckpointData) -> str:
    """sha256 of the checkpoint's content without ``integrity`` (``conftest.comparable``, hashed)."""
    plain = data.model_dump(mode="json", exclude={"integrity"})
    return hashlib.sha256(orjson.dumps(plain, option=orjson.OPT_SORT_KEYS)).hexdigest()


def _read(session: str, report: dict[str, Any]) -> None:
    manager = CheckpointManager(session)
    try:
        listed = manager.list_checkpoints()
        report["listed"] = listed
        loads: dict[str, str] = {}
        for checkpoint_id in listed:
            try:
                loads[checkpoint_id] = fingerprint(manager.load_checkpoint(checkpoint_id))
            except CheckpointError:
                loads[checkpoint_id] = "refused"
        report["loads"] = loads
    finally:
        manager.close()


def _write(session: str, standalone: str, report: dict[str, Any]) -> None:
    data = read_checkpoint_file(standalone)
    manager = CheckpointManager(session)
    try:
        step = manager.next_step_number()
        update = {"step_number": step, "context": "manual", "checkpoint_id": "probe", "integrity": None}
        manager.save_checkpoint(data.model_copy(update=update))
        report["saved"] = manager.last_checkpoint_id
    finally:
        manager.close()


def main(argv: list[str]) -> None:
    operation, *paths = argv
    with open("/proc/self/status") as status:
        vm_size = next(int(line.split()[1]) for line in status if line.startswith("VmSize:")) << 10
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (vm_size + HEADROOM, hard))
    report: dict[str, Any] = {"outcome": "ok", "error": None}
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.monotonic()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if operation == "read":
                _read(paths[0], report)
            elif operation == "read-file":
                report["loads"] = {paths[0]: fingerprint(read_checkpoint_file(paths[0]))}
            elif operation == "write":
                _write(paths[0], paths[1], report)
            else:
                raise SystemExit(__doc__)
    except CheckpointError as exc:
        report.update(outcome="CheckpointError", error=f"{type(exc).__name__}: {exc}"[:2000])
    except BaseException as exc:
        report.update(outcome="other", error=f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"[:4000])
    report["seconds"] = round(time.monotonic() - started, 3)
    report["rss_growth_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
