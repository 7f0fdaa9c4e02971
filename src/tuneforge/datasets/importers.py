"""Importing logged agent conversations as chat examples in OpenAI's fine-tuning format, or
their corrected replies as preference pairs in its DPO format.

Conversations stream from the agents service in batches and are validated as they are
inserted, so an import of any size holds only one batch in memory. A preference import
reads conversations rated low (``max_rating``, 2 by default) that carry a correction, and
makes one pair per corrected assistant reply: the conversation up to that reply is the
prompt, the correction is preferred over what was logged.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Literal

from sqlalchemy.orm import Session

from tuneforge.agents import service as agents_service
from tuneforge.config import Settings
from tuneforge.datasets import repository
from tuneforge.datasets.ingest import (
    apply_report,
    ingest_examples,
    report_builder,
    revalidate_rows,
    validation_model,
)
from tuneforge.datasets.parsing import RawExample
from tuneforge.datasets.schemas import ImportFilter, ImportRequest
from tuneforge.db.scoping import get_owned
from tuneforge.db.tables.agents import Agent, Conversation, ConversationMessage
from tuneforge.db.tables.datasets import (
    DatasetFormat,
    DatasetKind,
    DatasetStatus,
    FineTuningDataset,
)
from tuneforge.errors import InvalidInput
from tuneforge.providers.catalog import DEFAULT_VALIDATION_MODEL

AssistantTurns = Literal["all", "last"]


def message_dict(message: ConversationMessage) -> dict[str, Any]:
    """A stored message as an OpenAI chat message, leaving out fields it does not use."""
    out: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.name is not None:
        out["name"] = message.name
    if message.tool_calls:
        out["tool_calls"] = message.tool_calls
    if message.tool_call_id is not None:
        out["tool_call_id"] = message.tool_call_id
    return out


def conversation_messages(
    messages: Sequence[ConversationMessage],
    *,
    system_prompt: str | None,
    assistant_turns: AssistantTurns,
) -> list[dict[str, Any]]:
    """The example's messages; ``assistant_turns="last"`` trains only on the final reply.

    Earlier assistant turns stay in the context with ``weight: 0``, OpenAI's way of keeping
    a turn out of the loss. ``system_prompt`` is prepended when the conversation has no
    system message of its own.
    """
    out = [message_dict(message) for message in messages]
    if system_prompt and not any(m["role"] == "system" for m in out):
        out.insert(0, {"role": "system", "content": system_prompt})
    if assistant_turns == "last":
        assistant_positions = [i for i, m in enumerate(out) if m["role"] == "assistant"]
        for position in assistant_positions[:-1]:
            out[position]["weight"] = 0
    return out


def _examples(
    session: Session,
    organization_id: str,
    conversations: Iterator[tuple[Conversation, list[ConversationMessage]]],
    request: ImportRequest,
    first_line: int,
) -> Iterator[tuple[RawExample, str | None]]:
    """(example, conversation id) per conversation, or per corrected reply for a preference
    import; each agent is looked up once. An agent's tools go with its conversations, so
    the calls in them train with their definitions."""
    agents: dict[str, Agent] = {}
    line_number = first_line
    for conversation, messages in conversations:
        if conversation.agent_id not in agents:
            agents[conversation.agent_id] = get_owned(
                session, Agent, conversation.agent_id, organization_id
            )
        agent = agents[conversation.agent_id]
        system_prompt = agent.system_prompt if request.include_system_prompt else None
        tools = {"tools": agent.tools} if agent.tools else {}
        if request.kind is DatasetKind.PREFERENCE:
            examples = [
                {**pair, "input": {**pair["input"], **tools}}
                for pair in preference_pairs(messages, system_prompt=system_prompt)
            ]
        else:
            chat = conversation_messages(
                messages, system_prompt=system_prompt, assistant_turns=request.assistant_turns
            )
            examples = [{"messages": chat, **tools}]
        for example in examples:
            yield RawExample(line_number, example, None, None), conversation.id
            line_number += 1


def preference_pairs(
    messages: Sequence[ConversationMessage], *, system_prompt: str | None
) -> list[dict[str, Any]]:
    """One DPO example per corrected assistant reply: the conversation before it as the
    prompt, the correction preferred, the logged reply not."""
    pairs = []
    for position, message in enumerate(messages):
        if message.role != "assistant" or message.correction is None:
            continue
        prompt = conversation_messages(
            messages[:position], system_prompt=system_prompt, assistant_turns="all"
        )
        pairs.append(
            {
                "input": {"messages": prompt},
                "preferred_output": [_reply(message.correction)],
                "non_preferred_output": [_reply(message_dict(message))],
            }
        )
    return pairs


def _reply(message: dict[str, Any]) -> dict[str, Any]:
    """An assistant reply as a DPO output: no empty content beside tool calls."""
    return {key: value for key, value in message.items() if value is not None}


def _filters(request: ImportFilter) -> dict[str, Any]:
    return {
        "agent_ids": request.agent_ids,
        "started_from": request.started_from,
        "started_to": request.started_to,
        "min_rating": request.min_rating,
        "max_rating": request.rating_ceiling,
        "tags": request.tags,
        "corrected": request.kind is DatasetKind.PREFERENCE,
    }


def preview_import(session: Session, organization_id: str, request: ImportFilter) -> int:
    return agents_service.count_conversations_for_import(
        session, organization_id, **_filters(request)
    )


def import_conversations(
    session: Session,
    organization_id: str,
    user_id: str,
    request: ImportRequest,
    settings: Settings,
) -> FineTuningDataset:
    """Append matching conversations to a new or existing dataset, then validate all of it.

    Existing rows are re-validated in the same pass, so the report covers the whole dataset.
    """
    conversations = agents_service.iter_conversations_for_import(
        session, organization_id, **_filters(request)
    )
    if request.dataset_id is not None:
        dataset = repository.get_dataset(
            session, organization_id, request.dataset_id, for_update=True
        )
        if dataset.total_examples and dataset.kind is not request.kind:
            raise InvalidInput(
                f"kind: dataset {dataset.id} holds {dataset.kind.value} examples; import "
                f"{dataset.kind.value} examples into it, or {request.kind.value} ones into a "
                "new dataset",
                field="kind",
            )
    else:
        dataset = FineTuningDataset(
            organization_id=organization_id,
            created_by=user_id,
            name=request.name,
            description=request.description,
            format=DatasetFormat.CONVERSATIONS,
            kind=request.kind,
            status=DatasetStatus.VALIDATING,
            target_model=request.model or DEFAULT_VALIDATION_MODEL,
            validation_fraction=request.validation_fraction or 0.0,
            split_seed=request.split_seed or 0,
        )
        session.add(dataset)
        session.flush()
    builder = report_builder(validation_model(dataset, request.model), settings)
    revalidate_rows(session, dataset, builder)
    first_line = repository.max_line_number(session, dataset.id) + 1
    examples = _examples(session, organization_id, conversations, request, first_line)
    if ingest_examples(session, dataset, examples, builder) == 0:
        wanted = (
            "low-rated conversations with a corrected reply"
            if request.kind is DatasetKind.PREFERENCE
            else "conversations"
        )
        raise InvalidInput(f"No {wanted} match these filters", field="filters")
    apply_report(dataset, builder)
    session.flush()
    return dataset
