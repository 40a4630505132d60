"""Continue a conversation from any checkpoint file, optionally after an intervention.

    python examples/continue_from_checkpoint.py <checkpoint.json> --rounds 10
    python examples/continue_from_checkpoint.py <checkpoint.json> --rounds 10 --edit 2 --content "Let's recompute: ..."

Sessions written by examples/mathchat_with_checkpoints.py are rebuilt with that example's own agents (its
demo model and its code executor); any other session uses ``--factory module:function`` or is rebuilt from
the checkpoint alone. The continuation goes into ``<session>/continuation_<timestamp>/``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from checkpoint_system import CheckpointError, read_checkpoint_file  # noqa: E402
from checkpoint_system.cli import add_continue_arguments, run_continue  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_continue_arguments(parser)
    args = parser.parse_args(argv)
    logging.getLogger("autogen.oai.client").setLevel(logging.WARNING)
    try:
        if args.factory is None and read_checkpoint_file(args.checkpoint).metadata.get("example") == "mathchat":
            args.factory = "mathchat_with_checkpoints:agent_factory"
        return run_continue(args)
    except CheckpointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
