"""``CheckpointRestorer``: reopen any checkpoint and continue it, optionally after an intervention.

Every continuation runs in its own ``<session>/continuation_YYYYMMDD_HHMMSS_ffffff/`` directory with its own
checkpoints and a ``continuation_metadata.json`` naming its parent, so runs form a tree and the parent
session is never written to.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from autogen import ConversableAgent, GroupChat
from autogen.agentchat.chat import ChatResult

from .checkpoint_manager import CheckpointManager
from .endpoints import EndpointPolicy, describe_endpoints
from .errors import CheckpointError, from_os_error
from .groupchat_manager import CheckpointingGroupChatManager
from .intervention import Intervention, apply_interventions
from .model import CheckpointData
from .rebuild import (
    Credentials,
    RestoreReport,
    RosterMismatchError,
    build_agent,
    build_groupchat,
    compare_roster,
    register_model_clients,
    restore_llm_config_for,
    termination_callable,
)
from .snapshot import utc_timestamp
from .storage import CheckpointReference, CheckpointStore, load_reference
from .storage.files import session_dir_of

CONTINUATION_METADATA = "continuation_metadata.json"

#: Checkpoint metadata that describes one checkpoint or its session, not the conversation: not inherited.
_PER_CHECKPOINT_METADATA = frozenset(
    {
        "session_dir",
        "delivered",
        "termination_reason",
        "error",
        "pending_messages",
        "initiator",
        "continuation_of",
        "interventions",
        "problem_context",
    }
)

#: What an agent factory may return: the agents, or a whole ``GroupChat`` (keeps custom speaker selection).
FactoryResult = Sequence[ConversableAgent] | Mapping[str, ConversableAgent] | GroupChat
AgentFactory = Callable[..., FactoryResult]


def new_continuation_dir(session_dir: Path) -> Path:
    """Create ``continuation_YYYYMMDD_HHMMSS_ffffff`` (suffixed if taken): unique even within a second."""
    stamp = datetime.now().strftime("continuation_%Y%m%d_%H%M%S_%f")
    for attempt in range(1000):
        path = session_dir / (stamp if attempt == 0 else f"{stamp}_{attempt}")
        try:
            path.mkdir(parents=True, exist_ok=False)
            return path
        except FileExistsError:
            continue
        except OSError as exc:  # a read-only or foreign session: continue elsewhere (continuation_dir=...)
            raise from_os_error(
                exc,
                "cannot create the continuation directory (pass continuation_dir= to continue elsewhere)",
                path,
                writing=True,
            ) from exc
    raise CheckpointError("could not create a unique continuation directory", path=session_dir)


def new_continuation_session_id(store: CheckpointStore, parent_session_id: str) -> str:
    """``<parent>/continuation_YYYYMMDD_HHMMSS_ffffff`` not yet used in ``store``."""
    stamp = datetime.now().strftime("continuation_%Y%m%d_%H%M%S_%f")
    existing = set(store.list_sessions())
    for attempt in range(1000):
        candidate = f"{parent_session_id}/{stamp if attempt == 0 else f'{stamp}_{attempt}'}"
        if candidate not in existing:
            return candidate
    raise CheckpointError(f"could not find a free continuation id under {parent_session_id!r}")


@dataclass
class RestoredChat:
    """A checkpoint rebuilt into live objects, ready to continue."""

    checkpoint: CheckpointData
    checkpoint_file: CheckpointReference
    agents: list[ConversableAgent]
    groupchat: GroupChat
    manager: CheckpointingGroupChatManager
    checkpoint_manager: CheckpointManager
    directory: Path | None
    report: RestoreReport
    interventions: list[Intervention] = field(default_factory=list)


@dataclass
class ContinuationResult:
    """The outcome of a continuation."""

    ok: bool
    reason: str
    directory: Path | None
    restored: RestoredChat
    chat_result: ChatResult | None
    new_messages: list[dict[str, Any]]

    def __bool__(self) -> bool:
        return self.ok

    @property
    def location(self) -> str:
        """The continuation's directory, or ``<store url>#<session id>``."""
        return self.restored.checkpoint_manager.location

    @property
    def manager(self) -> CheckpointingGroupChatManager:
        return self.restored.manager

    @property
    def agents(self) -> list[ConversableAgent]:
        return self.restored.agents


class CheckpointRestorer:
    """Rebuilds group chats from checkpoints and continues them.

    Args:
        agent_factory: optional callable building the agents from your own code (with their tools,
            replies and hooks); called with no arguments, or with the ``CheckpointData`` if it takes one.
            It may return a list of agents, a name->agent mapping, or a ``GroupChat``. Without it, agents
            are rebuilt from the checkpoint alone.
        allow_code_execution: re-enable code execution for agents rebuilt from a file (off by default: a
            file must not be able to turn on code execution by itself).
        on_mismatch: ``"refuse"`` (default) raises ``RosterMismatchError`` when the factory's agents differ
            from the checkpoint's; ``"proceed"`` records the differences in the report and goes on.
        environ, secrets, azure_ad_token_provider: where redacted secrets come from.
        trusted_endpoints: endpoint URLs (``https://host[:port][/path]``) that configs restored from a
            file may send credentials to, besides the providers' public endpoints and those set in the
            environment (``OPENAI_BASE_URL``, ``AZURE_OPENAI_ENDPOINT``, ...). A file naming any other
            endpoint for a config that would carry a credential is refused with ``UntrustedEndpointError``.
        trust_patterns: run termination regexes read from the checkpoint with Python's ``re``. By default
            they run on RE2 (linear time, with ``re``'s meaning), and a pattern RE2 cannot run that way is
            refused with ``UnsafePatternError``: a crafted pattern could otherwise hang the restore.
        model_clients: custom model client classes by name (``model_client_cls`` in the saved configs).
        groupchat_overrides, manager_overrides: keyword arguments that replace saved settings, e.g. a custom
            ``speaker_selection_method`` or the manager's ``is_termination_msg``.
    """

    def __init__(
        self,
        agent_factory: AgentFactory | None = None,
        *,
        allow_code_execution: bool = False,
        on_mismatch: Literal["refuse", "proceed"] = "refuse",
        environ: Mapping[str, str] | None = None,
        secrets: Mapping[str, Any] | None = None,
        azure_ad_token_provider: Callable[[], str] | None = None,
        model_clients: Mapping[str, type] | None = None,
        groupchat_overrides: Mapping[str, Any] | None = None,
        manager_overrides: Mapping[str, Any] | None = None,
        trusted_endpoints: Iterable[str] = (),
        trust_patterns: bool = False,
    ) -> None:
        if on_mismatch not in ("refuse", "proceed"):
            raise ValueError("on_mismatch must be 'refuse' or 'proceed'")
        self.agent_factory = agent_factory
        self.allow_code_execution = allow_code_execution
        self.trust_patterns = trust_patterns
        self.on_mismatch = on_mismatch
        self.credentials = Credentials(
            environ, secrets, azure_ad_token_provider, EndpointPolicy(trusted_endpoints, environ)
        )
        self.model_clients = dict(model_clients or {})
        self.groupchat_overrides = dict(groupchat_overrides or {})
        self.manager_overrides = dict(manager_overrides or {})

    # -- the seed's API ----------------------------------------------------------------------------------
    def recreate_agents_from_checkpoint(
        self,
        agent_states: Mapping[str, Any] | Iterable[Any],
        report: RestoreReport | None = None,
        work_dir: Path | None = None,
    ) -> list[ConversableAgent]:
        """Fresh agents built from saved states alone (credentials from the environment).

        Code execution, if allowed, runs in ``work_dir`` (default: a new temporary directory).
        """
        from .model import AgentState

        states = agent_states.values() if isinstance(agent_states, Mapping) else agent_states
        report = report if report is not None else RestoreReport()
        return [
            build_agent(
                state if isinstance(state, AgentState) else AgentState.model_validate(state),
                credentials=self.credentials,
                allow_code_execution=self.allow_code_execution,
                model_clients=self.model_clients,
                report=report,
                work_dir=functools.partial(_work_dir, work_dir),
                trust_patterns=self.trust_patterns,
            )
            for state in states
        ]

    def restore_agent_message_histories(
        self,
        agents: Sequence[ConversableAgent],
        chat_manager: CheckpointingGroupChatManager,
        checkpoint: CheckpointData | None = None,
    ) -> None:
        """Load the checkpoint's histories and counters into ``agents`` and ``chat_manager``."""
        data = checkpoint or getattr(chat_manager, "_loaded_checkpoint", None)
        if data is None:
            raise CheckpointError("no checkpoint given to restore histories from")
        chat_manager.load_checkpoint_state(data, agents)

    def continue_conversation_from_checkpoint(
        self, checkpoint_file: str | Path, max_rounds: int | None = 10
    ) -> ContinuationResult:
        """Continue from a checkpoint file for at most ``max_rounds`` new messages; truthy on success."""
        return self.continue_from(checkpoint_file, max_rounds=max_rounds)

    # -- the full API --------------------------------------------------------------------------------------
    def load(self, checkpoint_file: str | Path, store: CheckpointStore | str | None = None) -> CheckpointData:
        """Load and validate a checkpoint (a file path, a store reference, or an id within ``store``)."""
        return load_reference(checkpoint_file, store).load()

    def restore(
        self,
        checkpoint_file: str | Path,
        *,
        interventions: Iterable[Intervention] = (),
        continuation_dir: str | Path | None = None,
        force: bool = False,
        store: CheckpointStore | str | None = None,
    ) -> RestoredChat:
        """Rebuild agents, group chat and manager from a checkpoint into a new continuation session.

        ``checkpoint_file`` is a checkpoint file path, a ``<store url>#<session>/<id>`` reference, or (with
        ``store``) a checkpoint id. File checkpoints continue into ``<session>/continuation_<ts>/``; store
        checkpoints into the session ``<session>/continuation_<ts>`` of the same store.
        """
        reference = load_reference(checkpoint_file, store)
        original = reference.load()
        where = str(reference)
        if original.context == "error" and original.metadata.get("pending_messages") and not force:
            raise CheckpointError(
                "this error checkpoint was taken mid-broadcast; continue from the checkpoint before it "
                "(or pass force=True)",
                path=where,
            )
        changes = list(interventions)
        checkpoint = apply_interventions(original, changes)
        report = RestoreReport()
        directory: Path | None = None
        target: dict[str, Any]
        if reference.path is not None:
            if continuation_dir:
                directory = Path(continuation_dir)
                try:
                    directory.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    raise from_os_error(
                        exc, "cannot create the continuation directory", directory, writing=True
                    ) from exc
            else:
                directory = new_continuation_dir(session_dir_of(reference.path))
        created: CheckpointManager | None = None
        try:
            agents, factory_groupchat = self._agents_for(checkpoint, report, directory)
            if reference.path is not None:
                assert directory is not None
                parent_ref = os.path.relpath(reference.path.resolve(), directory.resolve())
                target = {"session_dir": directory}
                nested = directory.parent.resolve() == session_dir_of(reference.path).resolve()
            else:
                session_id = new_continuation_session_id(reference.store, reference.session_id)
                parent_ref = where
                target = {"store": reference.store, "session_id": session_id}
                nested = True
            lineage = {
                "parent_checkpoint_id": original.checkpoint_id,
                "parent_checkpoint_path": parent_ref,
                "parent_session_id": reference.session_id,
            }
            checkpoint_manager = created = CheckpointManager(
                **target,
                # nested in the parent's session: store only what is new, refer to the parent checkpoint
                start_from=original.checkpoint_id if nested else None,
                parent_checkpoint_id=original.checkpoint_id,
                problem_context=str(checkpoint.metadata.get("problem_context") or ""),
                metadata={"continuation_of": lineage},
                checkpoint_metadata={
                    # the parent's own metadata (e.g. which example made it) carries over to the branch
                    **{k: v for k, v in original.metadata.items() if k not in _PER_CHECKPOINT_METADATA},
                    "continuation_of": lineage,
                    **({"interventions": [c.to_record() for c in changes]} if changes else {}),
                },
            )
            groupchat = self._groupchat_for(checkpoint, agents, factory_groupchat)
            manager = self._manager_for(checkpoint, checkpoint_manager, groupchat, report)
            all_agents = list(agents)
            manager.load_checkpoint_state(checkpoint, all_agents)
        except BaseException:
            # A refused restore leaves no branch behind: the directory (or store session) is ours, made above.
            if created is not None:
                with contextlib.suppress(Exception):
                    created.close()
            if directory is not None and not continuation_dir:
                shutil.rmtree(directory, ignore_errors=True)
            elif created is not None and reference.path is None:
                with contextlib.suppress(CheckpointError):
                    reference.store.delete_session(created.session_id)
            raise
        restored = RestoredChat(
            checkpoint,
            reference,
            all_agents,
            groupchat,
            manager,
            checkpoint_manager,
            directory,
            report,
            changes,
        )
        self._write_metadata(restored, status="restored", lineage=lineage)
        return restored

    def continue_from(
        self,
        checkpoint_file: str | Path,
        max_rounds: int | None = None,
        *,
        interventions: Iterable[Intervention] = (),
        force: bool = False,
        continuation_dir: str | Path | None = None,
        store: CheckpointStore | str | None = None,
    ) -> ContinuationResult:
        """Restore and run at most ``max_rounds`` new messages (``None``: the original remaining budget)."""
        restored, start = self._start(
            checkpoint_file, max_rounds, interventions, force, continuation_dir, store
        )
        try:
            ok, reason = restored.manager.continue_from_loaded_state(max_rounds, force=force)
        except BaseException as exc:
            self._write_metadata(restored, status="error", error=f"{type(exc).__name__}: {exc}")
            raise
        return self._finish(restored, ok, reason, start, max_rounds)

    async def a_continue_from(
        self,
        checkpoint_file: str | Path,
        max_rounds: int | None = None,
        *,
        interventions: Iterable[Intervention] = (),
        force: bool = False,
        continuation_dir: str | Path | None = None,
        store: CheckpointStore | str | None = None,
    ) -> ContinuationResult:
        """Async ``continue_from`` (AG2's ``a_run_chat`` drives the chat)."""
        restored, start = self._start(
            checkpoint_file, max_rounds, interventions, force, continuation_dir, store
        )
        try:
            ok, reason = await restored.manager.a_continue_from_loaded_state(max_rounds, force=force)
        except BaseException as exc:
            self._write_metadata(restored, status="error", error=f"{type(exc).__name__}: {exc}")
            raise
        return self._finish(restored, ok, reason, start, max_rounds)

    def _start(
        self,
        checkpoint_file: str | Path,
        max_rounds: int | None,
        interventions: Iterable[Intervention],
        force: bool,
        continuation_dir: str | Path | None,
        store: CheckpointStore | str | None,
    ) -> tuple[RestoredChat, int]:
        """Restore and mark the continuation as running; returns it and the transcript length."""
        restored = self.restore(
            checkpoint_file,
            interventions=interventions,
            continuation_dir=continuation_dir,
            force=force,
            store=store,
        )
        self._write_metadata(restored, status="running", rounds_requested=max_rounds)
        return restored, len(restored.groupchat.messages)

    # -- internals -----------------------------------------------------------------------------------------
    def _finish(
        self, restored: RestoredChat, ok: bool, reason: str, start: int, max_rounds: int | None
    ) -> ContinuationResult:
        messages = restored.groupchat.messages
        # The message in flight was taken out and appended again, so new messages start at ``start``.
        new_messages = list(messages[start:]) if ok else []
        result = None
        if ok:
            result = ChatResult(
                chat_history=list(messages),
                summary=str(messages[-1].get("content") or "") if messages else "",
                human_input=[],
            )
        else:
            restored.checkpoint_manager.update_session_metadata(status="not_continued", reason=reason)
        self._write_metadata(
            restored,
            status="completed" if ok else "not_continued",
            outcome="continued" if ok else "not_continued",
            termination_reason=reason if ok else None,
            reason=None if ok else reason,
            rounds_requested=max_rounds,
            new_messages=len(new_messages),
            ended_at=utc_timestamp(),
        )
        return ContinuationResult(ok, reason, restored.directory, restored, result, new_messages)

    def _write_metadata(self, restored: RestoredChat, **fields: Any) -> None:
        checkpoints = restored.checkpoint_manager
        current = checkpoints.read_document(CONTINUATION_METADATA) or {
            "parent_checkpoint_file": str(restored.checkpoint_file),
            "parent_checkpoint_step": restored.checkpoint.step_number,
            "parent_context": restored.checkpoint.context,
            "started_at": utc_timestamp(),
            "agent_source": "factory" if self.agent_factory else "checkpoint",
            "interventions": [c.to_record() for c in restored.interventions],
            "restore_report": restored.report.as_dict(),
        }
        current.update(
            {k: v for k, v in fields.items() if v is not None or k in ("reason", "rounds_requested")}
        )
        current["updated_at"] = utc_timestamp()
        checkpoints.write_document(CONTINUATION_METADATA, current)

    def _call_factory(self, checkpoint: CheckpointData) -> FactoryResult:
        assert self.agent_factory is not None
        try:
            parameters = inspect.signature(self.agent_factory).parameters
        except (TypeError, ValueError):
            parameters = {}  # type: ignore[assignment]
        return self.agent_factory(checkpoint) if parameters else self.agent_factory()

    def _agents_for(
        self, checkpoint: CheckpointData, report: RestoreReport, directory: Path | None
    ) -> tuple[list[ConversableAgent], GroupChat | None]:
        work_dir = directory / "work" if directory is not None else None
        if self.agent_factory is None:
            return self.recreate_agents_from_checkpoint(checkpoint.agent_states, report, work_dir), None
        produced = self._call_factory(checkpoint)
        groupchat = produced if isinstance(produced, GroupChat) else None
        if groupchat is not None:
            agents = [a for a in groupchat.agents if isinstance(a, ConversableAgent)]
        elif isinstance(produced, Mapping):
            agents = list(produced.values())
        else:
            agents = list(produced)  # type: ignore[arg-type]
        # Agents the checkpoint has but the factory did not build (e.g. an initiator outside the group chat).
        built = {agent.name for agent in agents}
        extra = {
            n: s
            for n, s in checkpoint.agent_states.items()
            if n not in built and n not in _gc_names(checkpoint)
        }
        for agent in agents:
            owner = f"agent {agent.name!r}"
            report.endpoints += describe_endpoints(owner, agent.llm_config, "from your agent_factory")
        agents += self.recreate_agents_from_checkpoint(extra, report, work_dir)
        problems = compare_roster(checkpoint, agents)
        if problems:
            report.mismatches.extend(problems)
            if self.on_mismatch == "refuse":
                raise RosterMismatchError(
                    "the agents from agent_factory differ from the checkpoint:\n  - "
                    + "\n  - ".join(problems)
                    + "\n(pass on_mismatch='proceed' / --on-mismatch proceed to continue anyway)"
                )
        return agents, groupchat

    def _groupchat_for(
        self, checkpoint: CheckpointData, agents: list[ConversableAgent], factory_groupchat: GroupChat | None
    ) -> GroupChat:
        messages = [dict(m) for m in checkpoint.messages]
        if factory_groupchat is not None:
            factory_groupchat.messages[:] = messages
            for key, value in self.groupchat_overrides.items():
                setattr(factory_groupchat, key, value)
            return factory_groupchat
        if checkpoint.groupchat_state is None:
            raise CheckpointError("the checkpoint holds no group chat settings")
        members = [a for a in agents if a.name in _gc_names(checkpoint)]
        return build_groupchat(
            checkpoint.groupchat_state, members, messages, overrides=self.groupchat_overrides
        )

    def _manager_for(
        self,
        checkpoint: CheckpointData,
        checkpoint_manager: CheckpointManager,
        groupchat: GroupChat,
        report: RestoreReport,
    ) -> CheckpointingGroupChatManager:
        state = checkpoint.manager_state
        if state is None:
            raise CheckpointError("the checkpoint holds no manager state")
        llm_config = restore_llm_config_for(
            f"manager {state.name!r}", state.llm_config, self.credentials, report
        )
        kwargs: dict[str, Any] = {
            "name": state.name,
            "system_message": state.system_message
            if state.system_message is not None
            else "Group chat manager.",
            "llm_config": llm_config if llm_config is not None else False,
            "human_input_mode": state.human_input_mode,
            "silent": state.silent,
        }
        if state.max_consecutive_auto_reply is not None:
            kwargs["max_consecutive_auto_reply"] = state.max_consecutive_auto_reply
        if "is_termination_msg" not in self.manager_overrides:
            kwargs["is_termination_msg"] = termination_callable(
                f"manager {state.name!r}",
                state.termination_pattern,
                report,
                trust_patterns=self.trust_patterns,
            )
        kwargs.update(self.manager_overrides)
        manager = CheckpointingGroupChatManager(
            checkpoint_manager=checkpoint_manager,
            groupchat=groupchat,
            problem_context=str(checkpoint.metadata.get("problem_context") or ""),
            **kwargs,
        )
        register_model_clients(manager, llm_config, self.model_clients, report)
        return manager


def _work_dir(work_dir: Path | None) -> Path:
    """``work_dir`` (created), or a new temporary directory: where restored code execution runs."""
    if work_dir is None:
        return Path(tempfile.mkdtemp(prefix="checkpoint_system_work_"))
    work_dir.mkdir(parents=True, exist_ok=True)
    return work_dir.resolve()


def _gc_names(checkpoint: CheckpointData) -> list[str]:
    state = checkpoint.groupchat_state
    return list(state.agent_names) if state else list(checkpoint.agent_states)
