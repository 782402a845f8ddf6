"""Provider-independent formatting helpers shared by every provider module.

Each provider module turns a history into its own wire format; what is the same everywhere
lives here: telling speakers apart in multi-agent histories, custom role conversions,
tool-choice normalisation, tool schemas, and reading media sources. (The AgentScope-compatible
formatter objects, ``OpenAIChatFormatter`` and friends, are in ``_agentscope_formatters``.)
"""

from __future__ import annotations

import base64
import binascii
import json
import mimetypes
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from ..message import (
    AudioBlock,
    Base64Source,
    Block,
    ImageBlock,
    Msg,
    TextBlock,
    ToolResultBlock,
    ToolUseBlock,
    URLSource,
    VideoBlock,
)
from ._errors import UnsupportedOptionError

__all__ = [
    "FunctionSpec",
    "NormalizedChoice",
    "function_specs",
    "label_speakers",
    "media_bytes",
    "media_data_url",
    "normalize_tool_choice",
    "convert_roles",
    "split_leading_system",
    "append_turn",
    "tool_output_parts",
    "chat_tool_call",
]


def _distinct_speakers(messages: Sequence[Msg]) -> set[str]:
    return {m.name for m in messages if m.role != "system"}


def label_speakers(messages: Sequence[Msg | dict[str, Any]]) -> list[Msg | dict[str, Any]]:
    """Prefix each message's text with ``"name: "`` when the history has several speakers.

    A history with more than two named speakers (or two speakers sharing a role) is a
    multi-agent conversation; chat APIs only know roles, so the name goes into the text.
    Two-party histories and dict messages are left unchanged.
    """
    msgs = [m for m in messages if isinstance(m, Msg)]
    speakers = _distinct_speakers(msgs)
    per_role: dict[str, set[str]] = {}
    for m in msgs:
        if m.role != "system":
            per_role.setdefault(m.role, set()).add(m.name)
    if len(speakers) <= 2 and all(len(names) <= 1 for names in per_role.values()):
        return list(messages)
    return [_labelled(m) if isinstance(m, Msg) and m.role != "system" else m for m in messages]


def _labelled(msg: Msg) -> Msg:
    blocks = msg.get_content_blocks()
    for i, block in enumerate(blocks):
        if isinstance(block, TextBlock):
            blocks[i] = TextBlock(text=f"{msg.name}: {block.text}")
            return msg.model_copy(update={"content": blocks})
    return msg


def convert_roles(
    messages: Sequence[Msg | dict[str, Any]],
    conversions: Mapping[str, str] | None,
    provider: str,
    model: str,
) -> list[Msg | dict[str, Any]]:
    """Apply ``custom_role_conversions`` to ``Msg`` items (``{"system": "user"}`` etc.).

    Only the three message roles can be targets here; a provider that knows more roles
    applies those to its formatted dicts itself.
    """
    if not conversions:
        return list(messages)
    out: list[Msg | dict[str, Any]] = []
    for m in messages:
        if isinstance(m, Msg) and m.role in conversions:
            target = conversions[m.role]
            if target not in ("user", "assistant", "system"):
                raise UnsupportedOptionError(
                    f"custom_role_conversions maps {m.role!r} to {target!r}, "
                    "which this provider has no role for",
                    provider=provider, model=model,
                )
            m = m.model_copy(update={"role": target})
        out.append(m)
    return out


NormalizedChoice = Literal["auto", "none", "required"] | tuple[Literal["tool"], str] | None


def normalize_tool_choice(
    tool_choice: str | None,
    tools: Sequence[Mapping[str, Any]] | None,
    provider: str,
    model: str,
) -> NormalizedChoice:
    """Return ``auto``/``none``/``required``, ``("tool", name)``, or ``None`` (not given).

    ``any`` is an alias of ``required``. A mode that needs tools without any, or a name
    that is not one of ``tools``, raises :class:`UnsupportedOptionError`.
    """
    if tool_choice is None:
        return None
    names = [spec.name for spec in function_specs(tools)]
    if tool_choice == "any":
        tool_choice = "required"
    if tool_choice in ("auto", "none"):
        return tool_choice  # type: ignore[return-value]
    if not names:
        raise UnsupportedOptionError(
            f"tool_choice={tool_choice!r} needs tools, but none were given",
            provider=provider, model=model,
        )
    if tool_choice == "required":
        return "required"
    if tool_choice not in names:
        raise UnsupportedOptionError(
            f"tool_choice={tool_choice!r} names no given tool (tools: {', '.join(names)})",
            provider=provider, model=model,
        )
    return ("tool", tool_choice)


@dataclass(frozen=True)
class FunctionSpec:
    """A tool as name, description and JSON-schema parameters."""

    name: str
    description: str
    parameters: dict[str, Any]


def function_specs(tools: Sequence[Mapping[str, Any]] | None) -> list[FunctionSpec]:
    """Read ``{"type": "function", "function": {...}}`` schemas (or bare function dicts)."""
    specs: list[FunctionSpec] = []
    for tool in tools or []:
        fn = tool.get("function", tool)
        if not isinstance(fn, Mapping) or not isinstance(fn.get("name"), str):
            raise ValueError(f"a tool schema needs a function name: {tool!r}")
        specs.append(
            FunctionSpec(
                name=fn["name"],
                description=str(fn.get("description", "")),
                parameters=dict(fn.get("parameters") or {"type": "object", "properties": {}}),
            )
        )
    return specs


def media_data_url(block: Block) -> str:
    """The block's media as a URL: ``http(s)`` URLs as they are, everything else as data URL."""
    source = block.source  # type: ignore[union-attr]
    if isinstance(source, URLSource) and source.url.startswith(("http://", "https://", "data:")):
        return source.url
    mime, data = media_bytes(block)
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def media_bytes(block: Block) -> tuple[str, bytes]:
    """The block's media as ``(mime type, bytes)``: base64, data URLs and ``file://`` paths.

    ``http(s)`` URLs are not fetched (no network at run time): ``ValueError``.
    """
    source = block.source  # type: ignore[union-attr]
    if isinstance(source, Base64Source):
        return source.media_type, _b64(source.data)
    url = source.url
    if url.startswith("data:"):
        header, _, payload = url.partition(",")
        mime = header[5:].split(";")[0] or "application/octet-stream"
        return mime, _b64(payload) if ";base64" in header else urllib.parse.unquote_to_bytes(
            payload
        )
    if url.startswith("file://") or "://" not in url:
        path = urllib.request.url2pathname(urllib.parse.urlparse(url).path) if "://" in url else url
        mime = mimetypes.guess_type(path)[0] or "application/octet-stream"
        with open(path, "rb") as fh:
            return mime, fh.read()
    raise ValueError(f"media at {url!r} would have to be downloaded; give it as base64 instead")


def _b64(data: str) -> bytes:
    try:
        return base64.b64decode(data, validate=True)
    except binascii.Error as exc:
        raise ValueError(f"media data is not valid base64: {exc}") from exc


def split_leading_system(
    messages: Sequence[Msg | dict[str, Any]],
) -> tuple[str | None, list[Msg | dict[str, Any]]]:
    """``(system text, the rest)``: leading system messages (without tool results) joined,
    for providers that take the system prompt apart; later ones stay in the history."""
    system: list[str] = []
    for i, msg in enumerate(messages):
        if (isinstance(msg, Msg) and msg.role == "system"
                and not msg.has_content_blocks("tool_result")):
            system.append(msg.get_text_content() or "")
            continue
        return ("\n\n".join(system) if system else None), list(messages[i:])
    return ("\n\n".join(system) if system else None), []


def append_turn(turns: list[dict[str, Any]], role: str, key: str, items: list[Any]) -> None:
    """Add ``items`` as a turn of ``role`` (under ``key``), merged into the previous turn
    when that has the same role: providers want alternating roles."""
    last = turns[-1] if turns else None
    if last is not None and last.get("role") == role and isinstance(last.get(key), list):
        last[key].extend(items)
    else:
        turns.append({"role": role, key: items})


def tool_output_parts(
    block: ToolResultBlock,
) -> tuple[str, list[ImageBlock | AudioBlock | VideoBlock]]:
    """A tool result's text (text blocks joined) and its media blocks, for providers
    whose tool messages take text only (the media follow in a user turn)."""
    if isinstance(block.output, str):
        return block.output, []
    texts = [b.text for b in block.output if isinstance(b, TextBlock)]
    media = [b for b in block.output if isinstance(b, ImageBlock | AudioBlock | VideoBlock)]
    return "\n".join(texts), media


def chat_tool_call(block: ToolUseBlock) -> dict[str, Any]:
    """A ``tool_use`` block as a chat-completions ``tool_calls`` entry."""
    arguments = block.raw_input or json.dumps(block.input, ensure_ascii=False)
    return {"id": block.id, "type": "function",
            "function": {"name": block.name, "arguments": arguments}}

