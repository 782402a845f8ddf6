"""Chat history as local models' chat templates take it.

:func:`to_chat` turns a ``Msg`` (or a role/content dict) into chat-template messages, tool
calls written as ``<tool_call>`` sections and tool results as ``tool`` messages;
:func:`with_tool_prompt` describes tools in the system message for templates that know none.
Shared by the Transformers and MLX models.
"""

from __future__ import annotations

import json
from typing import Any

from ...message import Msg, TextBlock, ThinkingBlock, ToolResultBlock, ToolUseBlock
from .._errors import UnsupportedOptionError
from ._constraints import TOOL_CALL_BEGIN, TOOL_CALL_END

__all__ = ["END_OF_GENERATION", "end_of_generation_ids", "to_chat", "with_tool_prompt"]

END_OF_GENERATION = frozenset({
    "<|endoftext|>", "<|im_end|>", "<|eot_id|>", "<|eom_id|>", "<|end_of_text|>", "<|end|>",
    "<end_of_turn>", "<|return|>", "<EOT>", "</s>",
    "<\uff5cend\u2581of\u2581sentence\uff5c>"})  # DeepSeek's, in full-width bars
"""Special tokens that end a generation wherever a tokenizer has them (as llama.cpp's
end-of-generation set does): a chat model that writes ``<|endoftext|>`` has finished, even
where its tokenizer's end-of-sequence token is ``<|im_end|>``."""


def end_of_generation_ids(tokenizer: Any, extra: Any = None) -> set[int]:
    """The token ids that end ``tokenizer``'s generations: its end-of-sequence token, those
    of ``extra`` (a generation config's ``eos_token_id``: an id or a list of them), and its
    special tokens among :data:`END_OF_GENERATION` (never an ordinary token that happens
    to read the same)."""
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    ids |= set(extra) if isinstance(extra, (list, tuple, set)) else (
        {extra} if extra is not None else set())
    added: dict[str, int] = getattr(tokenizer, "get_added_vocab", dict)()
    special = {*getattr(tokenizer, "all_special_tokens", ()), *added}
    for text in END_OF_GENERATION & special:
        token = added[text] if text in added else tokenizer.convert_tokens_to_ids(text)
        if isinstance(token, int) and token >= 0:
            ids.add(token)
    return {int(i) for i in ids}


def to_chat(message: Msg | dict[str, Any]) -> list[dict[str, Any]]:
    """One history entry as chat-template messages (tool results become ``tool`` messages)."""
    if isinstance(message, dict):
        content = message.get("content")
        if isinstance(content, list):
            parts = [p.get("text", "") for p in content if p.get("type") == "text"]
            return [{**message, "content": "\n".join(parts)}]
        return [dict(message)]
    if isinstance(message.content, str):
        return [{"role": message.role, "content": message.content}]
    out: list[dict[str, Any]] = []
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in message.content:
        if isinstance(block, TextBlock):
            texts.append(block.text)
        elif isinstance(block, ToolUseBlock):
            calls.append({"type": "function", "id": block.id,
                          "function": {"name": block.name, "arguments": block.input}})
            texts.append(f"{TOOL_CALL_BEGIN}\n"
                         f"{json.dumps({'name': block.name, 'arguments': block.input})}\n"
                         f"{TOOL_CALL_END}")
        elif isinstance(block, ToolResultBlock):
            media = [] if isinstance(block.output, str) else [
                b.type for b in block.output if not isinstance(b, TextBlock)]
            if media:
                raise UnsupportedOptionError(
                    f"the tool {block.name!r} returned {', '.join(media)} content, which "
                    "local text models cannot take", provider="transformers")
            output = block.output if isinstance(block.output, str) else "\n".join(
                b.text for b in block.output if isinstance(b, TextBlock))
            out.append({"role": "tool", "name": block.name, "tool_call_id": block.id,
                        "content": output})
        elif not isinstance(block, ThinkingBlock):
            raise UnsupportedOptionError(f"{block.type} blocks are not supported by local "
                                         "text models", provider="transformers")
    head: list[dict[str, Any]] = []
    if texts or calls:
        head = [{"role": message.role, "content": "\n".join(texts)}]
    return head + out


def with_tool_prompt(
    chat: list[dict[str, Any]], tools: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Describe ``tools`` in the system message, for templates that know no tools."""
    specs = "\n".join(json.dumps(t.get("function", t)) for t in tools)
    note = (
        "You can call these tools:\n" + specs + "\nTo call one, answer with\n"
        f'{TOOL_CALL_BEGIN}\n{{"name": <tool name>, "arguments": <arguments object>}}\n'
        f"{TOOL_CALL_END}"
    )
    if chat and chat[0].get("role") == "system":
        return [{**chat[0], "content": f"{chat[0].get('content') or ''}\n\n{note}"}, *chat[1:]]
    return [{"role": "system", "content": note}, *chat]
