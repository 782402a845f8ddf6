"""Chat-completion responses and SSE frames shaped as OpenAI (and compatible servers) send them."""

from __future__ import annotations

import json
from typing import Any

from tests.support.provider_server import Recorded, Responder, json_response, sse


def completion(
    content: str | None = "Hello!",
    *,
    tool_calls: list[tuple[str, str, dict[str, Any] | str]] | None = None,
    reasoning: str | None = None,
    finish: str = "stop",
    usage: tuple[int, int] = (12, 5),
    model: str = "gpt-4o-mini",
) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None}
    if reasoning is not None:
        message["reasoning_content"] = reasoning
    if tool_calls:
        message["tool_calls"] = [
            {"id": cid, "type": "function",
             "function": {"name": name,
                          "arguments": args if isinstance(args, str) else json.dumps(args)}}
            for cid, name, args in tool_calls
        ]
        finish = "tool_calls"
    return {
        "id": "chatcmpl-123", "object": "chat.completion", "created": 1700000000,
        "model": model, "system_fingerprint": "fp_1",
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
        "usage": {"prompt_tokens": usage[0], "completion_tokens": usage[1],
                  "total_tokens": sum(usage)},
    }


def _chunk(delta: dict[str, Any], finish: str | None = None, model: str = "gpt-4o-mini",
           ) -> dict[str, Any]:
    return {"id": "chatcmpl-456", "object": "chat.completion.chunk", "created": 1700000000,
            "model": model, "system_fingerprint": "fp_1",
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}


def stream_frames(
    texts: list[str] = (),  # type: ignore[assignment]
    *,
    reasoning: list[str] = (),  # type: ignore[assignment]
    tool: tuple[str, str, list[str]] | None = None,
    usage: tuple[int, int] = (12, 5),
    done: bool = True,
) -> list[str]:
    """SSE frames: role chunk, reasoning/text/tool deltas, finish chunk, usage chunk, [DONE]."""
    frames = [sse(_chunk({"role": "assistant", "content": ""}))]
    frames += [sse(_chunk({"reasoning_content": r})) for r in reasoning]
    frames += [sse(_chunk({"content": t})) for t in texts]
    finish = "stop"
    if tool is not None:
        cid, name, pieces = tool
        frames.append(sse(_chunk({"tool_calls": [{"index": 0, "id": cid, "type": "function",
                                                  "function": {"name": name, "arguments": ""}}]})))
        frames += [sse(_chunk({"tool_calls": [{"index": 0, "function": {"arguments": p}}]}))
                   for p in pieces]
        finish = "tool_calls"
    if not done:
        return frames
    frames.append(sse(_chunk({}, finish)))
    frames.append(sse({"id": "chatcmpl-456", "object": "chat.completion.chunk",
                       "created": 1700000000, "model": "gpt-4o-mini", "choices": [],
                       "usage": {"prompt_tokens": usage[0], "completion_tokens": usage[1],
                                 "total_tokens": sum(usage)}}))
    frames.append(sse("[DONE]"))
    return frames


def error_body(message: str, kind: str = "server_error") -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}


def llamacpp_validation(request: Recorded) -> Responder | None:
    """What llama-cpp-python's OpenAI-compatible server refuses, with its HTTP 500: a
    message whose ``content`` is null, and a ``json_schema`` response format (it knows only
    ``json_object``)."""
    body = request.json
    for message in body.get("messages", []):
        if "content" in message and message["content"] is None:
            return json_response(error_body("1 validation error: messages.content: "
                                            "Input should be a valid string"), 500)
    if (body.get("response_format") or {}).get("type") == "json_schema":
        return json_response(error_body("response_format: 'json_schema' is not supported"),
                             500)
    return None
