"""Continue a conversation from any checkpoint file, optionally after an intervention.

    python examples/continue_from_checkpoint.py <checkpoint.json> --rounds 5
    python examples/continue_from_checkpoint.py <checkpoint.json> --rounds 5 --edit 1 --content "..."

Sessions written by examples/mathchat_with_checkpoints.py are rebuilt with that example's own agents: the
code executor runs code in the continuation's ``work/`` directory, and the LLM calls go through the
recording client, which replays the answers recorded in the session (and its parent sessions) offline, bit
for bit, as long as the requests match. A request an intervention changed goes to the demo model (for a
demo session), to the live model (for a live session with ``OPENAI_API_KEY`` or the Azure variables set),
or stops with an error naming the agent and step where the conversation left the recording.

Any other session uses ``--factory module:function`` or is rebuilt from the checkpoint alone. The
continuation goes into ``<session>/continuation_<timestamp>/``.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import mathchat_with_checkpoints as mathchat

from checkpoint_system import (
    CheckpointData,
    CheckpointError,
    CheckpointRestorer,
    read_checkpoint_file,
)
from checkpoint_system.cli import add_continue_arguments, interventions_from_args, run_continue
from checkpoint_system.recording import RECORDING_FILE
from checkpoint_system.restorer import new_continuation_dir


def session_of(checkpoint_file: Path) -> Path:
    """``<session>`` of ``<session>/checkpoints/<file>``, kept relative when given relative."""
    parent = checkpoint_file.parent
    return parent.parent if parent.name == "checkpoints" else parent


def continue_mathchat(args: argparse.Namespace, checkpoint: CheckpointData) -> int:
    """Continue a math-chat session with the example's agents, replaying its recorded LLM answers."""
    setup = mathchat.setup_for_checkpoint(checkpoint)
    changes = interventions_from_args(args)
    directory = new_continuation_dir(session_of(args.checkpoint))
    restorer = CheckpointRestorer(
        agent_factory=functools.partial(mathchat.agent_factory, continuation_dir=directory),
        on_mismatch=args.on_mismatch,
    )
    say = mathchat.Console.say
    say(f"model: {setup.label}; recorded answers are replayed from {RECORDING_FILE} along the lineage")
    say(f"continuing {args.checkpoint} (step {checkpoint.step_number}, {len(checkpoint.messages)} messages)")
    for change in changes:
        say(f"intervention: {change.to_record()}")
    say(f"continuation directory: {directory}")
    options = {"interventions": changes, "force": args.force, "continuation_dir": directory}
    with mathchat.ag2_output(False):
        if args.use_async:
            result = asyncio.run(restorer.a_continue_from(args.checkpoint, args.rounds, **options))
        else:
            result = restorer.continue_from(args.checkpoint, args.rounds, **options)
    built = mathchat.LAST_BUILD
    calls = built.calls() if built is not None else {"replayed": 0, "recorded": 0}
    for note in result.restored.report.notes + result.restored.report.mismatches:
        say(f"note: {note}")
    say("\nsummary")
    if not result.ok:
        say(f"  not continued: {result.reason}")
        return 3
    answer = mathchat.boxed_answer(result.restored.groupchat.messages)
    say(f"  new messages: {len(result.new_messages)}   ended: {result.reason}")
    say(f"  answer: {answer or 'none'}")
    new = f"{calls['recorded']} new"
    if calls["recorded"]:
        new += f" ({setup.label}; recorded in {directory / RECORDING_FILE})"
    say(f"  LLM calls: {calls['replayed']} replayed from the recording, {new}")
    say(f"  continuation directory: {directory}")
    result.restored.checkpoint_manager.update_session_metadata(
        example="mathchat", model=setup.kind, model_label=setup.label, llm_calls=calls, answer=answer
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_continue_arguments(parser)
    args = parser.parse_args(argv)
    args.checkpoint = Path(args.checkpoint)
    logging.getLogger("autogen.oai.client").setLevel(logging.WARNING)
    try:
        checkpoint = read_checkpoint_file(args.checkpoint)
        if args.factory is None and mathchat.is_example_checkpoint(checkpoint):
            return continue_mathchat(args, checkpoint)
        return run_continue(args)
    except CheckpointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
