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

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from autogen import Agent, ConversableAgent, GroupChat, GroupChatManager
from autogen.io.base import IOStream

from .checkpoint_manager import CHAT_HISTORY, CheckpointManager


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
        self.tap = _TerminationTap(IOStream.get_default())

    @property
    def pending(self) -> bool:
        return len(self.groupchat.messages) > self.checkpointed


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
        self.replace_reply_func(GroupChatManager.run_chat, CheckpointingGroupChatManager._run_chat_checkpointed)
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
            self._checkpoint_pending(run)

    def _flush_undelivered(self) -> None:
        run = self._run
        if run is not None and run.pending and not self._broadcast_targets(run):
            self._checkpoint_pending(run)

    def _checkpoint_pending(self, run: _Run) -> None:
        self._checkpoint(run, "message_appended")
        run.checkpointed = len(run.groupchat.messages)

    # -- run lifecycle -------------------------------------------------------------------------------------
    def _begin_run(self, config: GroupChat | None, sender: Agent | None) -> _Run:
        run = _Run(config if config is not None else self.groupchat, sender)
        self.last_termination_reason = None
        if self.problem_context:
            self.checkpoint_manager.save_problem_statement(self.problem_context)
        self.checkpoint_manager.update_session_metadata(status="running")
        self._checkpoint(run, "conversation_start")
        return run

    def _end_run(self, run: _Run, error: BaseException | None = None) -> None:
        cm = self.checkpoint_manager
        if error is None:
            if run.pending:
                self._checkpoint_pending(run)
            reason = run.tap.reason or self._infer_termination_reason(run)
            self.last_termination_reason = reason
            self._checkpoint(run, "conversation_end", {"termination_reason": reason})
            cm.save_chat_history(run.groupchat.messages)
            cm.save_checkpoints_metadata()
            cm.update_session_metadata(status="completed", termination_reason=reason)
            return
        # The run raised: record what we can without masking the original exception.
        status = "interrupted" if isinstance(error, (KeyboardInterrupt, SystemExit)) else "error"
        details = {"type": type(error).__name__, "message": str(error)[:4000]}
        try:
            self._checkpoint(run, "error", {"error": details, "pending_messages": run.pending})
            run.checkpointed = len(run.groupchat.messages)
            cm.save_chat_history(run.groupchat.messages)
            cm.save_checkpoints_metadata()
            cm.update_session_metadata(status=status, error=details)
        except Exception as secondary:  # noqa: BLE001 - the original error must propagate
            error.add_note(f"checkpoint_system: the error checkpoint could not be saved: {secondary}")

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
        initiator = run.initiator if run else None
        if isinstance(initiator, ConversableAgent) and initiator not in agents and initiator is not self:
            agents.append(initiator)
        return agents

    def _checkpoint(self, run: _Run | None, context: str, metadata: dict[str, Any] | None = None) -> str | None:
        groupchat = run.groupchat if run else self.groupchat
        start = run.start_index if run else 0
        return self.checkpoint_manager.take_checkpoint(
            agents=self._snapshot_agents(run),
            manager=self,
            messages=groupchat.messages,
            context=context,
            groupchat=groupchat,
            run_start_index=start,
            metadata={"termination_reason": None, **(metadata or {})} if context == "conversation_end" else metadata,
            live=run is not None,
        )

    # -- public API ----------------------------------------------------------------------------------------
    def save_checkpoint(self, context: str = "manual") -> str | None:
        """Checkpoint the current state now; returns the checkpoint id (None if the save failed under
        the ``"warn"`` policy)."""
        return self._checkpoint(self._run, context)

    @property
    def chat_history_path(self) -> Path:
        """Where the transcript is written when a run ends."""
        return self.checkpoint_manager.session_dir / CHAT_HISTORY
