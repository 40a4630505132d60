"""``CheckpointingGroupChatManager``: a drop-in ``GroupChatManager`` that checkpoints every message.

It does not reimplement AG2's chat loop. It hooks in at three public extension points:

* ``replace_reply_func`` swaps AG2's registered ``run_chat``/``a_run_chat`` reply functions for thin
  wrappers that call the originals and add the start, end and error checkpoints;
* ``send``/``a_send`` (the manager's own methods): once the manager has delivered the newest group chat
  message to the last recipient of its broadcast, every agent's history matches the group chat, and that
  is when the ``message_appended`` checkpoint is taken;
* ``IOStream.set_default`` observes AG2's ``TerminationEvent`` to record the exact termination reason.

Messages that no broadcast follows (AG2's async loop stops before broadcasting a termination message, a
one-agent chat broadcasts nothing) are checkpointed at the next consistent point: the next message the
manager receives, or the end of the run.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autogen import Agent, ConversableAgent, GroupChat, GroupChatManager
from autogen.io.base import IOStream

from .checkpoint_manager import CHAT_HISTORY, CheckpointManager
from .errors import CheckpointError, add_note
from .model import CheckpointData
from .rebuild import apply_agent_state


class _TerminationTap:
    """An IOStream that forwards everything to the active stream and notes AG2's termination reason."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.reason: str | None = None

    def print(self, *objects: Any, sep: str = " ", end: str = "\n", flush: bool = False) -> None:
        self._inner.print(*objects, sep=sep, end=end, flush=flush)

    def send(self, message: Any) -> None:
        reason = getattr(getattr(message, "content", None), "termination_reason", None)
        if isinstance(reason, str):
            self.reason = reason
        self._inner.send(message)

    def input(self, prompt: str = "", *, password: bool = False) -> str:
        return str(self._inner.input(prompt, password=password))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class _Run:
    """Bookkeeping for one ``run_chat`` call."""

    def __init__(self, groupchat: GroupChat, initiator: Agent | None) -> None:
        self.groupchat = groupchat
        self.initiator = initiator
        self.start_index = len(groupchat.messages)
        self.checkpointed = self.start_index
        self.delivered = True  # whether the newest message reached every agent
        self.tap = _TerminationTap(IOStream.get_default())

    @property
    def pending(self) -> bool:
        return len(self.groupchat.messages) > self.checkpointed


class _ExemptMessage:
    """A termination condition that ignores one message object (``force``: continue past a terminator)."""

    def __init__(self, condition: Callable[[dict[str, Any]], bool], exempt: dict[str, Any]) -> None:
        self.__checkpoint_original__ = condition
        self._exempt = exempt

    def __call__(self, message: dict[str, Any]) -> bool:
        return message is not self._exempt and bool(self.__checkpoint_original__(message))


def _position_of(history: list[dict[str, Any]], message: dict[str, Any]) -> int:
    """Index of the newest entry of ``history`` that holds ``message`` (introductions may follow it)."""
    for index in range(len(history) - 1, -1, -1):
        entry = history[index]
        if entry == message or (
            entry.get("content") == message.get("content")
            and entry.get("tool_calls") == message.get("tool_calls")
        ):
            return index
    raise CheckpointError("the manager's history does not hold the group chat's newest message")


@dataclass
class _Resume:
    """Where a loaded checkpoint left the loop: the message in flight, its speaker, the round budget."""

    checkpoint: CheckpointData
    speaker: Agent
    message: dict[str, Any]
    remaining_rounds: int
    appended: bool  # whether the message in flight is already in the group chat (not at a run's start)
    position: int  # where the message in flight sits in the manager's history with the speaker
    max_round: int  # the original chat's max_round, for the termination reason


class CheckpointingGroupChatManager(GroupChatManager):
    """A ``GroupChatManager`` that writes a checkpoint for every message appended to the group chat.

    Args:
        checkpoint_manager: where checkpoints go: a ``CheckpointManager``, or a session directory path.
            Defaults to a new ``logs/session_<timestamp>`` directory.
        problem_context: free text describing the task, stored in every checkpoint's metadata.
        groupchat: the ``GroupChat`` to run (it may also be passed as the first positional argument).
        **kwargs: any other ``GroupChatManager`` argument (``name``, ``llm_config``,
            ``is_termination_msg``, ...), passed through unchanged.
    """

    def __init__(
        self,
        checkpoint_manager: CheckpointManager | str | Path | None = None,
        problem_context: str = "",
        groupchat: GroupChat | None = None,
        **kwargs: Any,
    ) -> None:
        if isinstance(checkpoint_manager, GroupChat) and groupchat is None:
            groupchat, checkpoint_manager = checkpoint_manager, None
        if groupchat is None:
            raise TypeError("CheckpointingGroupChatManager needs a groupchat")
        super().__init__(groupchat=groupchat, **kwargs)
        if not isinstance(checkpoint_manager, CheckpointManager):
            checkpoint_manager = CheckpointManager(checkpoint_manager, problem_context=problem_context)
        elif problem_context and not checkpoint_manager.problem_context:
            checkpoint_manager.problem_context = problem_context
            checkpoint_manager.update_session_metadata(problem_context=problem_context)
        self.checkpoint_manager = checkpoint_manager
        self.problem_context = problem_context or checkpoint_manager.problem_context
        self.last_termination_reason: str | None = None
        self._run: _Run | None = None
        self._resume: _Resume | None = None
        self._round_report: str | None = None
        self.replace_reply_func(
            GroupChatManager.run_chat, CheckpointingGroupChatManager._run_chat_checkpointed
        )
        self.replace_reply_func(
            GroupChatManager.a_run_chat, CheckpointingGroupChatManager._a_run_chat_checkpointed
        )

    # -- the reply-function wrappers ---------------------------------------------------------------------
    def _run_chat_checkpointed(
        self,
        messages: list[dict[str, Any]] | None = None,
        sender: Agent | None = None,
        config: GroupChat | None = None,
    ) -> tuple[bool, str | None]:
        run = self._begin_run(config, sender)
        try:
            with self._observing(run):
                result = GroupChatManager.run_chat(self, messages, sender, config)
        except BaseException as exc:
            self._end_run(run, error=exc)
            raise
        self._end_run(run)
        return result

    async def _a_run_chat_checkpointed(
        self,
        messages: list[dict[str, Any]] | None = None,
        sender: Agent | None = None,
        config: GroupChat | None = None,
    ) -> tuple[bool, str | None]:
        run = self._begin_run(config, sender)
        try:
            with self._observing(run):
                result = await GroupChatManager.a_run_chat(self, messages, sender, config)
        except BaseException as exc:
            self._end_run(run, error=exc)
            raise
        self._end_run(run)
        return result  # type: ignore[no-any-return]

    @contextmanager
    def _observing(self, run: _Run) -> Iterator[None]:
        previous, self._run = self._run, run
        try:
            with IOStream.set_default(run.tap):
                yield
        finally:
            self._run = previous

    # -- consistent points ---------------------------------------------------------------------------------
    def send(
        self,
        message: dict[str, Any] | str,
        recipient: Agent,
        request_reply: bool | None = None,
        silent: bool | None = False,
    ) -> None:
        super().send(message, recipient, request_reply, silent)
        self._after_delivery(recipient)

    async def a_send(
        self,
        message: dict[str, Any] | str,
        recipient: Agent,
        request_reply: bool | None = None,
        silent: bool | None = False,
    ) -> None:
        await super().a_send(message, recipient, request_reply, silent)
        self._after_delivery(recipient)

    def receive(
        self,
        message: dict[str, Any] | str,
        sender: Agent,
        request_reply: bool | None = None,
        silent: bool | None = False,
    ) -> None:
        self._flush_undelivered()
        super().receive(message, sender, request_reply, silent)

    async def a_receive(
        self,
        message: dict[str, Any] | str,
        sender: Agent,
        request_reply: bool | None = None,
        silent: bool | None = False,
    ) -> None:
        self._flush_undelivered()
        await super().a_receive(message, sender, request_reply, silent)

    def _broadcast_targets(self, run: _Run) -> list[Agent]:
        speaker = self._last_speaker
        return [agent for agent in run.groupchat.agents if agent is not speaker]

    def _after_delivery(self, recipient: Agent) -> None:
        run = self._run
        if run is None or not run.pending:
            return
        targets = self._broadcast_targets(run)
        if targets and recipient is targets[-1]:
            self._checkpoint_pending(run, delivered=True)

    def _flush_undelivered(self) -> None:
        run = self._run
        if run is not None and run.pending and not self._broadcast_targets(run):
            self._checkpoint_pending(run, delivered=True)

    def _checkpoint_pending(self, run: _Run, *, delivered: bool) -> None:
        run.delivered = delivered
        self._checkpoint(run, "message_appended")
        run.checkpointed = len(run.groupchat.messages)

    # -- run lifecycle -------------------------------------------------------------------------------------
    def _begin_run(self, config: GroupChat | None, sender: Agent | None) -> _Run:
        run = _Run(config if config is not None else self.groupchat, sender)
        self.last_termination_reason = None
        if self.problem_context:
            self.checkpoint_manager.save_problem_statement(self.problem_context)
        self.checkpoint_manager.update_session_metadata(status="running")
        self._checkpoint(run, "conversation_start", {"initiator": getattr(sender, "name", None)})
        return run

    def _end_run(self, run: _Run, error: BaseException | None = None) -> None:
        if error is None:
            reason = run.tap.reason or self._infer_termination_reason(run)
            if self._round_report and reason.startswith("Maximum rounds"):
                reason = self._round_report  # the continuation's budget, in the original chat's terms
            self.last_termination_reason = reason
            failure: BaseException | None = None
            try:
                if run.pending:  # e.g. AG2's async loop ends on a termination message before broadcasting it
                    self._checkpoint_pending(run, delivered=False)
                self._checkpoint(run, "conversation_end", {"termination_reason": reason})
            except Exception as exc:  # recorded below, then raised: the session must not claim success
                failure = exc
            status = "completed" if failure is None else "error"
            fields = {"termination_reason": reason} if failure is None else {"error": str(failure)}
            self._record_outcome(run, status, fields, failure)
            if failure is not None:
                raise failure
            return
        # The run raised: record what we can without masking the original exception.
        status = "interrupted" if isinstance(error, (KeyboardInterrupt, SystemExit)) else "error"
        details = {"type": type(error).__name__, "message": str(error)[:4000]}
        try:
            self._checkpoint(run, "error", {"error": details, "pending_messages": run.pending})
        except Exception as secondary:
            add_note(error, f"checkpoint_system: the error checkpoint could not be saved: {secondary}")
        run.checkpointed = len(run.groupchat.messages)
        self._record_outcome(run, status, {"error": details}, error)

    def _record_outcome(
        self, run: _Run, status: str, fields: dict[str, Any], error: BaseException | None
    ) -> None:
        """Write the transcript and session metadata, each independently: one failure cannot stop the rest."""
        cm = self.checkpoint_manager
        steps: tuple[Callable[[], object], ...] = (
            lambda: cm.update_session_metadata(status=status, failed_saves=cm.failed_saves, **fields),
            lambda: cm.save_chat_history(run.groupchat.messages),
            cm.save_checkpoints_metadata,
            cm.flush,  # when the run returns, every checkpoint file of it exists
        )
        for step in steps:
            try:
                step()
            except Exception as secondary:
                if error is not None:
                    add_note(error, f"checkpoint_system: could not record the outcome: {secondary}")
                else:
                    warnings.warn(
                        f"checkpoint_system: could not record the outcome: {secondary}",
                        RuntimeWarning,
                        stacklevel=2,
                    )

    def _infer_termination_reason(self, run: _Run) -> str:
        messages = run.groupchat.messages
        if messages and self._is_termination_msg(messages[-1]):
            return f"Termination message condition on the GroupChatManager '{self.name}' met"
        if len(messages) - run.start_index >= run.groupchat.max_round:
            return f"Maximum rounds ({run.groupchat.max_round}) reached"
        return "Conversation ended"

    def _snapshot_agents(self, run: _Run | None) -> list[ConversableAgent]:
        groupchat = run.groupchat if run else self.groupchat
        agents = [agent for agent in groupchat.agents if isinstance(agent, ConversableAgent)]
        # agents outside the group chat that talk to the manager (e.g. the initiator) belong to its state
        outsiders = [run.initiator] if run else []
        outsiders += list(self._oai_messages)
        for agent in outsiders:
            if isinstance(agent, ConversableAgent) and agent is not self and agent not in agents:
                agents.append(agent)
        return agents

    def _checkpoint(
        self, run: _Run | None, context: str, metadata: dict[str, Any] | None = None
    ) -> str | None:
        groupchat = run.groupchat if run else self.groupchat
        extra = {"delivered": run.delivered if run else True, **(metadata or {})}
        return self.checkpoint_manager.take_checkpoint(
            agents=self._snapshot_agents(run),
            manager=self,
            messages=groupchat.messages,
            context=context,
            groupchat=groupchat,
            run_start_index=run.start_index if run else 0,
            metadata=extra,
            live=run is not None,
        )

    # -- restoring ------------------------------------------------------------------------------------------
    def load_checkpoint_state(self, checkpoint: CheckpointData, agents: Sequence[ConversableAgent]) -> None:
        """Load a checkpoint's histories, counters and loop position into ``agents``, this manager and
        its group chat, ready for ``continue_from_loaded_state``.

        When the run resumes, the newest message is put back "in flight" (taken out of the group chat and
        of the histories it was broadcast to) and handed to AG2's own loop, which appends and broadcasts it
        again, exactly as the uninterrupted run did before going on.
        """
        peers: dict[str, Agent] = {agent.name: agent for agent in agents}
        peers[self.name] = self
        missing: set[str] = set()
        for agent in agents:
            state = checkpoint.agent_states.get(agent.name)
            if state is not None:
                missing.update(apply_agent_state(agent, state, peers))
        if checkpoint.manager_state is None:
            raise CheckpointError("the checkpoint has no manager state to continue from")
        missing.update(apply_agent_state(self, checkpoint.manager_state, peers))
        if missing:
            raise CheckpointError(f"histories refer to agents that were not restored: {sorted(missing)}")
        groupchat = self.groupchat
        groupchat.messages[:] = [dict(m) for m in checkpoint.messages]
        gc_state = checkpoint.groupchat_state
        # At a run's start the message in flight has reached the manager but not the group chat; at any
        # later checkpoint it is the group chat's newest message, already broadcast.
        appended = checkpoint.context != "conversation_start" and bool(groupchat.messages)
        # New messages the uninterrupted run could still append (at a run's start: including the one in
        # flight, which AG2 appends as the run's first round).
        max_round = gc_state.max_round if gc_state else groupchat.max_round
        remaining = max_round - (gc_state.round_index if gc_state else len(groupchat.messages))
        if appended:
            speaker_name = checkpoint.manager_state.current_speaker or groupchat.messages[-1].get("name")
        else:
            speaker_name = checkpoint.metadata.get("initiator")
        speaker = peers.get(str(speaker_name))
        if speaker is None:
            raise CheckpointError(
                f"cannot tell who spoke the last message (speaker {speaker_name!r} not restored)"
            )
        history = self._oai_messages.get(speaker)
        if not history:
            raise CheckpointError(f"the manager holds no message from {speaker.name!r} to resume from")
        position = _position_of(history, groupchat.messages[-1]) if appended else len(history) - 1
        self._last_speaker = speaker  # type: ignore[assignment]
        self._resume = _Resume(
            checkpoint, speaker, history[position], remaining, appended, position, max_round
        )

    def _put_in_flight(self, resume: _Resume) -> None:
        """Take the newest message back out of the group chat and the histories it was broadcast to."""
        del self._oai_messages[resume.speaker][resume.position]
        groupchat = self.groupchat
        if not resume.appended:
            return
        groupchat.messages.pop()
        if resume.checkpoint.metadata.get("delivered", True):
            for agent in groupchat.agents:
                if agent is not resume.speaker and isinstance(agent, ConversableAgent):
                    for history in (agent._oai_messages.get(self), self._oai_messages.get(agent)):
                        if history:  # the receiver's copy, and the manager's record of sending it
                            history.pop()

    def _prepare_resume(
        self, max_additional_rounds: int | None, force: bool
    ) -> tuple[_Resume, GroupChat] | str:
        resume = self._resume
        if resume is None:
            raise CheckpointError(
                "no checkpoint loaded: use CheckpointRestorer or load_checkpoint_state first"
            )
        if self._is_termination_msg(resume.message) and not force and resume.appended:
            return (
                "the checkpoint's last message already meets the manager's termination condition; "
                "nothing was continued (pass force=True / --force to continue anyway)"
            )
        rounds = resume.remaining_rounds if max_additional_rounds is None else max_additional_rounds
        if rounds <= 0:
            return "the chat's round budget is used up; ask for a number of additional rounds"
        config = copy.copy(self.groupchat)
        # AG2 counts the message in flight, appended again, as a round of its own
        config.max_round = rounds + 1 if resume.appended else rounds
        if resume.appended:  # the introductions were broadcast before the first message was appended
            config.send_introductions = False
        self._resume = None
        self._put_in_flight(resume)
        self._round_report = (
            f"Maximum rounds ({resume.max_round}) reached"
            if max_additional_rounds is None
            else f"Maximum additional rounds ({max_additional_rounds}) reached"
        )
        return resume, config

    def _received_in_place(self, resume: _Resume) -> list[dict[str, Any]]:
        """Move the message received again back to where it was (introductions may follow it); return
        the history up to it, whose last item AG2's loop takes as the message to append."""
        history: list[dict[str, Any]] = self._oai_messages[resume.speaker]
        if resume.position < len(history) - 1:
            history.insert(resume.position, history.pop())
        return history[: resume.position + 1]

    @contextmanager
    def _continuing(self, resume: _Resume, force: bool) -> Iterator[None]:
        """While a continuation runs: with ``force``, the message in flight does not end the chat again."""
        original = self._is_termination_msg
        if force and resume.appended:
            exempt = self._oai_messages[resume.speaker][resume.position]
            self._is_termination_msg = _ExemptMessage(original, exempt)
        try:
            yield
        finally:
            self._is_termination_msg = original
            self._round_report = None

    def continue_from_loaded_state(
        self, max_additional_rounds: int | None = 10, *, force: bool = False
    ) -> tuple[bool, str]:
        """Run the loaded chat for at most ``max_additional_rounds`` new messages (``None``: the original
        chat's remaining budget). Returns ``(continued, termination reason or why nothing ran)``."""
        prepared = self._prepare_resume(max_additional_rounds, force)
        if isinstance(prepared, str):
            return False, prepared
        resume, config = prepared
        self.receive(resume.message, resume.speaker, request_reply=False, silent=True)
        messages = self._received_in_place(resume)
        with self._continuing(resume, force):
            self._run_chat_checkpointed(messages, resume.speaker, config)
        return True, self.last_termination_reason or ""

    async def a_continue_from_loaded_state(
        self, max_additional_rounds: int | None = 10, *, force: bool = False
    ) -> tuple[bool, str]:
        """Async ``continue_from_loaded_state`` (runs AG2's ``a_run_chat``)."""
        prepared = self._prepare_resume(max_additional_rounds, force)
        if isinstance(prepared, str):
            return False, prepared
        resume, config = prepared
        await self.a_receive(resume.message, resume.speaker, request_reply=False, silent=True)
        messages = self._received_in_place(resume)
        with self._continuing(resume, force):
            await self._a_run_chat_checkpointed(messages, resume.speaker, config)
        return True, self.last_termination_reason or ""

    # -- public API ----------------------------------------------------------------------------------------
    def save_checkpoint(self, context: str = "manual") -> str | None:
        """Checkpoint the current state now; returns the checkpoint id (None if the save failed under
        the ``"warn"`` policy)."""
        return self._checkpoint(self._run, context)

    @property
    def chat_history_path(self) -> Path:
        """Where the transcript is written when a run ends."""
        assert self.checkpoint_manager.session_dir is not None, "not a file session"
        return self.checkpoint_manager.session_dir / CHAT_HISTORY
