"""Command line: ``python -m checkpoint_system {continue,list,show,schema} ...``."""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .endpoints import EndpointPolicy
from .errors import CheckpointError, CheckpointNotFoundError, from_os_error
from .intervention import Intervention
from .model import checkpoint_json_schema
from .restorer import CheckpointRestorer
from .storage import FileSessionStore, SessionStore, is_store_url, load_reference, open_store


def load_factory(spec: str) -> Callable[..., Any]:
    """Import ``module:function`` (the user's own code, named on the command line)."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise SystemExit(f"--factory must look like 'package.module:function', got {spec!r}")
    sys.path.insert(0, str(Path.cwd()))
    module = importlib.import_module(module_name)
    factory = getattr(module, attribute, None)
    if not callable(factory):
        raise SystemExit(f"--factory {spec!r}: {attribute!r} is not a callable in {module_name}")
    return factory  # type: ignore[no-any-return]


def interventions_from_args(args: argparse.Namespace) -> list[Intervention]:
    """The interventions asked for with --edit/--content, --replace/--message, --remove, --append/--as."""
    changes: list[Intervention] = []
    if args.edit is not None:
        if args.content is None:
            raise SystemExit("--edit needs --content")
        changes.append(Intervention.edit(args.edit, args.content))
    if args.replace is not None:
        if args.message is None:
            raise SystemExit("--replace needs --message '<json object>'")
        try:
            message = json.loads(args.message)
        except json.JSONDecodeError as exc:
            raise SystemExit(f"--message is not valid JSON: {exc}") from exc
        changes.append(Intervention.replace(args.replace, message))
    if args.remove is not None:
        changes.append(Intervention.remove(args.remove))
    if args.append is not None:
        if not args.speaker:
            raise SystemExit("--append needs --as <agent name>")
        changes.append(Intervention.append(args.append, args.speaker))
    return changes


def _endpoint_url(value: str) -> str:
    try:
        EndpointPolicy([value])
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return value


def add_continue_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``continue`` (shared with examples/continue_from_checkpoint.py)."""
    parser.add_argument(
        "checkpoint", help="checkpoint .json file (or <store url>#<session>/<id>) to continue from"
    )
    parser.add_argument(
        "--rounds", type=int, default=None, help="at most this many new messages (default: remaining budget)"
    )
    parser.add_argument("--factory", help="build agents with your code: 'package.module:function'")
    parser.add_argument("--edit", type=int, metavar="J", help="edit message J (0-based) before continuing")
    parser.add_argument("--content", help="new content for --edit")
    parser.add_argument("--replace", type=int, metavar="J", help="replace message J by --message")
    parser.add_argument("--message", help="JSON object for --replace")
    parser.add_argument("--remove", type=int, metavar="J", help="remove message J")
    parser.add_argument("--append", metavar="TEXT", help="append a new message (spoken by --as)")
    parser.add_argument("--as", dest="speaker", metavar="AGENT", help="speaker of --append")
    parser.add_argument(
        "--allow-code-execution", action="store_true", help="re-enable saved code execution configs"
    )
    parser.add_argument(
        "--trust-endpoint",
        action="append",
        default=[],
        metavar="URL",
        type=_endpoint_url,
        help="an LLM endpoint (https://host[:port][/path]) that restored configs may send your keys to "
        "(repeatable; provider defaults and OPENAI_BASE_URL/AZURE_OPENAI_ENDPOINT are trusted already)",
    )
    parser.add_argument(
        "--trust-patterns",
        action="store_true",
        help="run the checkpoint's termination regexes with Python's re (default: RE2, linear time)",
    )
    parser.add_argument(
        "--on-mismatch", choices=("refuse", "proceed"), default="refuse", help="when factory agents differ"
    )
    parser.add_argument("--force", action="store_true", help="continue even if the last message terminates")
    parser.add_argument(
        "--async", dest="use_async", action="store_true", help="drive the chat with a_run_chat"
    )


def run_continue(args: argparse.Namespace, *, model_clients: dict[str, type] | None = None) -> int:
    """Run a continuation from parsed arguments; prints where it went and returns an exit code."""
    restorer = CheckpointRestorer(
        agent_factory=load_factory(args.factory) if args.factory else None,
        allow_code_execution=args.allow_code_execution,
        on_mismatch=args.on_mismatch,
        model_clients=model_clients,
        trusted_endpoints=args.trust_endpoint,
        trust_patterns=args.trust_patterns,
    )
    changes = interventions_from_args(args)
    if args.use_async:
        import asyncio

        result = asyncio.run(
            restorer.a_continue_from(args.checkpoint, args.rounds, interventions=changes, force=args.force)
        )
    else:
        result = restorer.continue_from(args.checkpoint, args.rounds, interventions=changes, force=args.force)
    report = result.restored.report
    for note in report.notes + report.mismatches:
        print(f"note: {note}")
    for endpoint in report.endpoints:
        print(f"endpoint: {endpoint}")
    print(f"continuation: {result.location}")
    if not result.ok:
        print(f"not continued: {result.reason}")
        return 3
    print(f"{len(result.new_messages)} new messages; ended: {result.reason}")
    return 0


def _list(args: argparse.Namespace) -> int:
    if is_store_url(args.session):
        url, _, session_id = args.session.partition("#")
        store = open_store(url, create=False)  # a reader: a missing store is not created
        if not session_id:
            for name in store.list_sessions():
                print(f"{url}#{name}")
            return 0
        session: SessionStore = store.open_session(session_id)
    else:
        try:
            is_dir = Path(args.session).is_dir()
        except OSError as exc:  # an unreadable parent directory
            raise from_os_error(exc, "cannot open the session directory", args.session) from exc
        if not is_dir:
            raise CheckpointNotFoundError("session directory does not exist", path=args.session)
        session = FileSessionStore(args.session)
    ids = session.list_checkpoints()
    if not ids:
        print(f"no checkpoints in {args.session}")
        return 1
    for checkpoint_id in ids:
        print(session.locate(checkpoint_id))
    return 0


def _show(args: argparse.Namespace) -> int:
    data = load_reference(args.checkpoint).load()
    print(f"{data.checkpoint_id}  step {data.step_number}  {data.context}  {data.timestamp}")
    print(f"parent: {data.parent_checkpoint_id}  ag2 {data.ag2_version}  format {data.format_version}")
    for index, message in enumerate(data.messages):
        calls = message.get("tool_calls")
        content = str(calls if calls else message.get("content") or "")
        print(f"  [{index}] {message.get('name', message.get('role'))}: {content[:100]!r}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m checkpoint_system", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    add_continue_arguments(sub.add_parser("continue", help="continue a chat from a checkpoint file"))
    listing = sub.add_parser(
        "list",
        help="a session's checkpoints in order (a directory or <url>#<session>), or a store's sessions",
    )
    listing.add_argument("session")
    show = sub.add_parser("show", help="print a checkpoint's transcript (file path or <url>#<session>/<id>)")
    show.add_argument("checkpoint")
    sub.add_parser("schema", help="print the JSON Schema of CheckpointData")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.getLogger("autogen.oai.client").setLevel(logging.WARNING)
    args = build_parser().parse_args(argv)
    try:
        if args.command == "continue":
            return run_continue(args)
        if args.command == "list":
            return _list(args)
        if args.command == "show":
            return _show(args)
        print(json.dumps(checkpoint_json_schema(), indent=2))
        return 0
    except CheckpointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
