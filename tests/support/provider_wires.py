"""Per-provider wire adapters for the shared test matrix.

Each :class:`Wire` knows how its provider shapes answers (JSON bodies, SSE or NDJSON
streams, error bodies) and where its requests put tool choice, schemas and images, so
that ``test_provider_matrix.py`` runs the same cases against every provider.
"""

from __future__ import annotations

import importlib.util
import json
from typing import Any, ClassVar

from agentplex.model._hosted import HostedChatModel
from tests.support import openai_wire
from tests.support.model_inputs import policy
from tests.support.provider_server import FakeServer, sse

Tool = tuple[str, str, dict[str, Any]]


class Wire:
    """The interface; see the module docstring."""

    name = "?"
    model_name = "test-model"
    streams_tool_arguments = True
    """Whether the provider streams tool arguments in pieces (else whole calls)."""
    retry_after_supported = True
    tool_choices: ClassVar[dict[str, Any]] = {}
    """Our tool_choice (with tools weather+clock) -> what the request must carry."""
    unsupported_choices: tuple[str, ...] = ()
    paths = ("", "")
    closes_abandoned_streams = True
    """Whether closing our stream early closes the HTTP response at once."""
    """The request paths of a plain and of a streamed call."""

    def make(self, server: FakeServer, *, stream: bool = False, retries: int = 0,
             **kw: Any) -> HostedChatModel:
        retry_policy, self.sleeps = policy(retries)
        return server.track(self.build(server, stream=stream, retry_policy=retry_policy, **kw))

    def build(self, server: FakeServer, **kw: Any) -> HostedChatModel:
        raise NotImplementedError

    # answers
    def text(self, server: FakeServer, text: str, usage: tuple[int, int] = (12, 5),
             thinking: str | None = None) -> None:
        raise NotImplementedError

    def stream_text(self, server: FakeServer, pieces: list[str], usage: tuple[int, int] = (12, 5),
                    thinking: list[str] = (), truncate: bool = False) -> None:  # type: ignore[assignment]
        raise NotImplementedError

    def tool_call(self, server: FakeServer, call: Tool) -> None:
        raise NotImplementedError

    def stream_tool_call(self, server: FakeServer, call: Tool) -> None:
        raise NotImplementedError

    def error(self, server: FakeServer, status: int, message: str,
              headers: dict[str, str] | None = None) -> None:
        raise NotImplementedError

    def malformed(self, server: FakeServer) -> None:
        server.raw('{"oops": [', 200)

    # request inspection
    def sent_tool_choice(self, body: dict[str, Any]) -> Any:
        raise NotImplementedError

    def sent_tool_names(self, body: dict[str, Any]) -> list[str]:
        raise NotImplementedError

    def sent_schema(self, body: dict[str, Any]) -> dict[str, Any] | None:
        """The JSON schema the request asks the answer to follow (native or forced tool)."""
        raise NotImplementedError

    def sent_image(self, body: dict[str, Any]) -> str:
        """The base64 image data (or URL) the request carries."""
        raise NotImplementedError

    def sent_texts(self, body: dict[str, Any]) -> list[tuple[str, str]]:
        """``(role, text)`` of every text the request carries, system prompt included."""
        raise NotImplementedError

    def structured(self, server: FakeServer, payload: str) -> None:
        """Answer a structured request with ``payload`` (JSON text) the provider's way."""
        self.text(server, payload)

    options: frozenset[str] = frozenset()
    """The generation arguments (our names) this wire carries."""
    option_names: ClassVar[dict[str, str]] = {}
    """Our name -> the wire's, where they differ."""

    def option_fields(self, body: dict[str, Any]) -> dict[str, Any]:
        """The part of the request body where generation arguments go."""
        return body

    def sent_options(self, body: dict[str, Any]) -> dict[str, Any]:
        """The generation arguments the request carries, under our names."""
        fields = self.option_fields(body)
        out = {}
        for ours in self.options:
            theirs = self.option_names.get(ours, ours)
            if theirs in fields:
                out[ours] = fields[theirs]
        return out


ALL_OPTIONS = frozenset({"temperature", "top_p", "top_k", "max_tokens", "stop", "seed",
                         "presence_penalty", "frequency_penalty"})


class OpenAIWire(Wire):
    name = "openai"
    options = ALL_OPTIONS - {"top_k"}
    paths = ("/v1/chat/completions", "/v1/chat/completions")
    tool_choices: ClassVar[dict[str, Any]] = {
        "auto": "auto", "none": "none", "required": "required",
        "get_time": {"type": "function", "function": {"name": "get_time"}}}

    def build(self, server: FakeServer, **kw: Any) -> HostedChatModel:
        from agentplex.model.openai import OpenAIChatModel

        return OpenAIChatModel(self.model_name, api_key="k", base_url=server.url + "/v1", **kw)

    def text(self, server: FakeServer, text: str, usage: tuple[int, int] = (12, 5),
             thinking: str | None = None) -> None:
        server.json(openai_wire.completion(text, usage=usage, reasoning=thinking))

    def stream_text(self, server: FakeServer, pieces: list[str], usage: tuple[int, int] = (12, 5),
                    thinking: list[str] = (), truncate: bool = False) -> None:  # type: ignore[assignment]
        server.stream(openai_wire.stream_frames(pieces, reasoning=list(thinking), usage=usage,
                                                done=not truncate), truncate=truncate)

    def tool_call(self, server: FakeServer, call: Tool) -> None:
        server.json(openai_wire.completion(None, tool_calls=[call]))

    def stream_tool_call(self, server: FakeServer, call: Tool) -> None:
        raw = json.dumps(call[2])
        server.stream(openai_wire.stream_frames(tool=(call[0], call[1], [raw[:5], raw[5:]])))

    def error(self, server: FakeServer, status: int, message: str,
              headers: dict[str, str] | None = None) -> None:
        server.json(openai_wire.error_body(message), status, headers)

    def sent_tool_choice(self, body: dict[str, Any]) -> Any:
        return body.get("tool_choice")

    def sent_tool_names(self, body: dict[str, Any]) -> list[str]:
        return [t["function"]["name"] for t in body.get("tools", [])]

    def sent_schema(self, body: dict[str, Any]) -> dict[str, Any] | None:
        fmt = body.get("response_format")
        return fmt["json_schema"]["schema"] if fmt else None

    def sent_image(self, body: dict[str, Any]) -> str:
        for m in body["messages"]:
            for part in m["content"] if isinstance(m["content"], list) else []:
                if part["type"] == "image_url":
                    return str(part["image_url"]["url"]).split(",")[-1]
        raise AssertionError("no image sent")

    def sent_texts(self, body: dict[str, Any]) -> list[tuple[str, str]]:
        out = []
        for m in body["messages"]:
            if isinstance(m.get("content"), str):
                out.append((m["role"], m["content"]))
            for part in m["content"] if isinstance(m.get("content"), list) else []:
                if part["type"] == "text":
                    out.append((m["role"], part["text"]))
        return out


class AnthropicWire(Wire):
    name = "anthropic"
    options = frozenset({"temperature", "top_p", "top_k", "max_tokens", "stop"})
    option_names: ClassVar[dict[str, str]] = {"stop": "stop_sequences"}
    paths = ("/v1/messages", "/v1/messages")
    tool_choices: ClassVar[dict[str, Any]] = {"auto": {"type": "auto"}, "none": {"type": "none"},
                    "required": {"type": "any"}, "get_time": {"type": "tool", "name": "get_time"}}

    def build(self, server: FakeServer, **kw: Any) -> HostedChatModel:
        from agentplex.model.anthropic import AnthropicChatModel

        return AnthropicChatModel(self.model_name, api_key="k", base_url=server.url, **kw)

    @staticmethod
    def message(content: list[dict[str, Any]], stop: str = "end_turn",
                usage: tuple[int, int] = (12, 5)) -> dict[str, Any]:
        return {"id": "msg_01", "type": "message", "role": "assistant", "model": "test-model",
                "content": content, "stop_reason": stop, "stop_sequence": None,
                "usage": {"input_tokens": usage[0], "output_tokens": usage[1]}}

    def text(self, server: FakeServer, text: str, usage: tuple[int, int] = (12, 5),
             thinking: str | None = None) -> None:
        content = [{"type": "thinking", "thinking": thinking, "signature": "sig-abc"}] \
            if thinking else []
        server.json(self.message([*content, {"type": "text", "text": text}], usage=usage))

    @staticmethod
    def events(blocks: list[tuple[dict[str, Any], list[dict[str, Any]]]],
               usage: tuple[int, int] = (12, 5), stop: str = "end_turn",
               truncate: bool = False) -> list[str]:
        frames = [sse({"type": "message_start", "message": {
            "id": "msg_02", "type": "message", "role": "assistant", "content": [],
            "model": "test-model", "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": usage[0], "output_tokens": 1}}}, "message_start")]
        for index, (start, deltas) in enumerate(blocks):
            frames.append(sse({"type": "content_block_start", "index": index,
                               "content_block": start}, "content_block_start"))
            if index == 0:
                frames.append(sse({"type": "ping"}, "ping"))
            frames += [sse({"type": "content_block_delta", "index": index, "delta": d},
                           "content_block_delta") for d in deltas]
            frames.append(sse({"type": "content_block_stop", "index": index},
                              "content_block_stop"))
        if truncate:
            return frames[:-1]
        frames.append(sse({"type": "message_delta", "delta": {"stop_reason": stop,
                                                              "stop_sequence": None},
                           "usage": {"output_tokens": usage[1]}}, "message_delta"))
        frames.append(sse({"type": "message_stop"}, "message_stop"))
        return frames

    def stream_text(self, server: FakeServer, pieces: list[str], usage: tuple[int, int] = (12, 5),
                    thinking: list[str] = (), truncate: bool = False) -> None:  # type: ignore[assignment]
        blocks = []
        if thinking:
            blocks.append(({"type": "thinking", "thinking": "", "signature": ""},
                           [{"type": "thinking_delta", "thinking": t} for t in thinking]
                           + [{"type": "signature_delta", "signature": "sig-abc"}]))
        blocks.append(({"type": "text", "text": ""},
                       [{"type": "text_delta", "text": p} for p in pieces]))
        server.stream(self.events(blocks, usage, truncate=truncate), truncate=truncate)

    def tool_call(self, server: FakeServer, call: Tool) -> None:
        server.json(self.message([{"type": "tool_use", "id": call[0], "name": call[1],
                                   "input": call[2]}], stop="tool_use"))

    def stream_tool_call(self, server: FakeServer, call: Tool) -> None:
        raw = json.dumps(call[2])
        server.stream(self.events([(
            {"type": "tool_use", "id": call[0], "name": call[1], "input": {}},
            [{"type": "input_json_delta", "partial_json": raw[:5]},
             {"type": "input_json_delta", "partial_json": raw[5:]}])], stop="tool_use"))

    def error(self, server: FakeServer, status: int, message: str,
              headers: dict[str, str] | None = None) -> None:
        kind = {429: "rate_limit_error", 401: "authentication_error"}.get(status, "api_error")
        server.json({"type": "error", "error": {"type": kind, "message": message}}, status,
                    headers)

    def sent_tool_choice(self, body: dict[str, Any]) -> Any:
        return body.get("tool_choice")

    def sent_tool_names(self, body: dict[str, Any]) -> list[str]:
        return [t["name"] for t in body.get("tools", [])]

    def sent_schema(self, body: dict[str, Any]) -> dict[str, Any] | None:
        fmt = (body.get("output_config") or {}).get("format")
        return fmt["schema"] if fmt else None

    def sent_image(self, body: dict[str, Any]) -> str:
        for m in body["messages"]:
            for part in m["content"]:
                if part["type"] == "image":
                    return str(part["source"]["data"])
        raise AssertionError("no image sent")

    def sent_texts(self, body: dict[str, Any]) -> list[tuple[str, str]]:
        out = [("system", body["system"])] if body.get("system") else []
        for m in body["messages"]:
            out += [(m["role"], p["text"]) for p in m["content"] if p["type"] == "text"]
        return out


WIRES: list[Wire] = [OpenAIWire(), AnthropicWire()]


class AzureWire(OpenAIWire):
    name = "azure_openai"
    option_names: ClassVar[dict[str, str]] = {"max_tokens": "max_completion_tokens"}
    paths = ("/openai/deployments/test-model/chat/completions",) * 2

    def build(self, server: FakeServer, **kw: Any) -> HostedChatModel:
        from agentplex.model.azure import AzureOpenAIChatModel

        return AzureOpenAIChatModel(self.model_name, api_key="k", azure_endpoint=server.url,
                                    api_version="2024-10-21", **kw)


class HuggingFaceWire(OpenAIWire):
    name = "huggingface"
    paths = ("/v1/chat/completions", "/v1/chat/completions")

    def build(self, server: FakeServer, **kw: Any) -> HostedChatModel:
        from agentplex.model.huggingface import HuggingFaceChatModel

        return HuggingFaceChatModel(self.model_name, base_url=server.url, token="hf_x", **kw)

    def sent_schema(self, body: dict[str, Any]) -> dict[str, Any] | None:
        fmt = body.get("response_format")  # TGI's grammar form, as huggingface_hub sends it
        assert fmt is None or fmt["type"] == "json_object"
        return fmt["value"] if fmt else None


WIRES += [AzureWire(), HuggingFaceWire()]


class OllamaWire(Wire):
    name = "ollama"
    options = ALL_OPTIONS
    option_names: ClassVar[dict[str, str]] = {"max_tokens": "num_predict"}

    def option_fields(self, body: dict[str, Any]) -> dict[str, Any]:
        return dict(body.get("options") or {})
    paths = ("/api/chat", "/api/chat")
    streams_tool_arguments = False
    tool_choices: ClassVar[dict[str, Any]] = {"auto": "auto", "none": "no tools sent"}
    unsupported_choices = ("required", "get_time")

    def build(self, server: FakeServer, **kw: Any) -> HostedChatModel:
        from agentplex.model.ollama import OllamaChatModel

        return OllamaChatModel(self.model_name, host=server.url, **kw)

    @staticmethod
    def part(message: dict[str, Any], done: bool = True, usage: tuple[int, int] = (12, 5),
             reason: str = "stop") -> dict[str, Any]:
        body: dict[str, Any] = {"model": "test-model", "created_at": "2025-01-01T00:00:00Z",
                                "message": {"role": "assistant", **message}, "done": done}
        if done:
            body.update(done_reason=reason, total_duration=1000, load_duration=10,
                        prompt_eval_count=usage[0], prompt_eval_duration=100,
                        eval_count=usage[1], eval_duration=500)
        return body

    def text(self, server: FakeServer, text: str, usage: tuple[int, int] = (12, 5),
             thinking: str | None = None) -> None:
        message = {"content": text, **({"thinking": thinking} if thinking else {})}
        server.json(self.part(message, usage=usage))

    def _lines(self, server: FakeServer, parts: list[dict[str, Any]], truncate: bool = False
               ) -> None:
        server.stream([json.dumps(p) + "\n" for p in parts],
                      content_type="application/x-ndjson", truncate=truncate)

    def stream_text(self, server: FakeServer, pieces: list[str], usage: tuple[int, int] = (12, 5),
                    thinking: list[str] = (), truncate: bool = False) -> None:  # type: ignore[assignment]
        parts = [self.part({"content": "", "thinking": t}, done=False) for t in thinking]
        parts += [self.part({"content": p}, done=False) for p in pieces]
        if not truncate:
            parts.append(self.part({"content": ""}, usage=usage))
        self._lines(server, parts, truncate)

    def tool_call(self, server: FakeServer, call: Tool) -> None:
        server.json(self.part({"content": "", "tool_calls": [
            {"function": {"name": call[1], "arguments": call[2]}}]}))

    def stream_tool_call(self, server: FakeServer, call: Tool) -> None:
        self._lines(server, [
            self.part({"content": "", "tool_calls": [
                {"function": {"name": call[1], "arguments": call[2]}}]}, done=False),
            self.part({"content": ""})])

    def error(self, server: FakeServer, status: int, message: str,
              headers: dict[str, str] | None = None) -> None:
        server.json({"error": message}, status, headers)

    def sent_tool_choice(self, body: dict[str, Any]) -> Any:
        assert "tool_choice" not in body
        return "auto" if body.get("tools") else None

    def sent_tool_names(self, body: dict[str, Any]) -> list[str]:
        return [t["function"]["name"] for t in body.get("tools") or []]

    def sent_schema(self, body: dict[str, Any]) -> dict[str, Any] | None:
        fmt = body.get("format")
        return fmt if isinstance(fmt, dict) else None

    def sent_image(self, body: dict[str, Any]) -> str:
        return str(next(m["images"][0] for m in body["messages"] if m.get("images")))

    def sent_texts(self, body: dict[str, Any]) -> list[tuple[str, str]]:
        return [(m["role"], m["content"]) for m in body["messages"] if m.get("content")]


WIRES.append(OllamaWire())


class GeminiWire(Wire):
    name = "gemini"
    options = ALL_OPTIONS
    option_names: ClassVar[dict[str, str]] = {
        "max_tokens": "maxOutputTokens", "stop": "stopSequences", "top_p": "topP",
        "top_k": "topK", "presence_penalty": "presencePenalty",
        "frequency_penalty": "frequencyPenalty"}

    def option_fields(self, body: dict[str, Any]) -> dict[str, Any]:
        return dict(body.get("generationConfig") or {})
    paths = ("/v1/models/test-model:generateContent", "/v1/models/test-model:streamGenerateContent")
    streams_tool_arguments = False  # Gemini sends each function call whole
    closes_abandoned_streams = False  # google-genai leaves its inner response generator open
    tool_choices: ClassVar[dict[str, Any]] = {
        "auto": {"functionCallingConfig": {"mode": "AUTO"}},
        "none": {"functionCallingConfig": {"mode": "NONE"}},
        "required": {"functionCallingConfig": {"mode": "ANY"}},
        "get_time": {"functionCallingConfig": {"mode": "ANY",
                                               "allowedFunctionNames": ["get_time"]}},
    }

    def build(self, server: FakeServer, **kw: Any) -> HostedChatModel:
        from agentplex.model.gemini import GeminiChatModel

        return GeminiChatModel(self.model_name, api_key="g-key", base_url=server.url, **kw)

    @staticmethod
    def answer(parts: list[dict[str, Any]], finish: str | None = "STOP",
               usage: tuple[int, int] | None = (12, 5)) -> dict[str, Any]:
        candidate: dict[str, Any] = {"content": {"parts": parts, "role": "model"}, "index": 0}
        if finish:
            candidate["finishReason"] = finish
        body: dict[str, Any] = {"candidates": [candidate], "modelVersion": "test-model",
                                "responseId": "resp-1"}
        if usage:
            body["usageMetadata"] = {"promptTokenCount": usage[0],
                                     "candidatesTokenCount": usage[1],
                                     "totalTokenCount": sum(usage)}
        return body

    def text(self, server: FakeServer, text: str, usage: tuple[int, int] = (12, 5),
             thinking: str | None = None) -> None:
        parts = [{"text": thinking, "thought": True, "thoughtSignature": "c2lnLWFiYw=="}] \
            if thinking else []
        server.json(self.answer([*parts, {"text": text}], usage=usage))

    @staticmethod
    def frame(body: dict[str, Any]) -> str:
        return "data: " + json.dumps(body) + "\r\n\r\n"

    def stream_text(self, server: FakeServer, pieces: list[str], usage: tuple[int, int] = (12, 5),
                    thinking: list[str] = (), truncate: bool = False) -> None:  # type: ignore[assignment]
        frames = [self.frame(self.answer([{"text": t, "thought": True}], None, None))
                  for t in thinking]
        frames += [self.frame(self.answer([{"text": p}], None, None)) for p in pieces[:-1]]
        if truncate:
            server.stream(frames, truncate=True)
            return
        frames.append(self.frame(self.answer([{"text": pieces[-1]}], "STOP", usage)))
        server.stream(frames)

    def tool_call(self, server: FakeServer, call: Tool) -> None:
        server.json(self.answer([{"functionCall": {"id": call[0], "name": call[1],
                                                   "args": call[2]}}]))

    def stream_tool_call(self, server: FakeServer, call: Tool) -> None:
        server.stream([self.frame(self.answer([{"functionCall": {"name": call[1],
                                                                 "args": call[2]}}]))])

    def error(self, server: FakeServer, status: int, message: str,
              headers: dict[str, str] | None = None) -> None:
        kind = {429: "RESOURCE_EXHAUSTED", 401: "UNAUTHENTICATED"}.get(status, "INTERNAL")
        server.json({"error": {"code": status, "message": message, "status": kind}}, status,
                    headers)

    def sent_tool_choice(self, body: dict[str, Any]) -> Any:
        return body.get("toolConfig")

    def sent_tool_names(self, body: dict[str, Any]) -> list[str]:
        return [f["name"] for t in body.get("tools", []) for f in t["functionDeclarations"]]

    def sent_schema(self, body: dict[str, Any]) -> dict[str, Any] | None:
        config = body.get("generationConfig", {})
        if "responseJsonSchema" in config:
            assert config["responseMimeType"] == "application/json"
        schema: dict[str, Any] | None = config.get("responseJsonSchema")
        return schema

    def sent_image(self, body: dict[str, Any]) -> str:
        return str(next(p["inlineData"]["data"] for c in body["contents"] for p in c["parts"]
                        if "inlineData" in p))

    def sent_texts(self, body: dict[str, Any]) -> list[tuple[str, str]]:
        out = [("system", p["text"]) for p in body.get("systemInstruction", {}).get("parts", [])]
        for c in body["contents"]:
            role = {"model": "assistant"}.get(c["role"], c["role"])
            out += [(role, p["text"]) for p in c["parts"] if "text" in p]
        return out


WIRES.append(GeminiWire())


class DashScopeWire(Wire):
    name = "dashscope"
    options = ALL_OPTIONS - {"frequency_penalty"}

    def option_fields(self, body: dict[str, Any]) -> dict[str, Any]:
        return dict(body.get("parameters") or {})
    paths = ("/api/v1/services/aigc/text-generation/generation",) * 2
    tool_choices: ClassVar[dict[str, Any]] = {"auto": "auto", "none": "none",
                    "get_time": {"type": "function", "function": {"name": "get_time"}}}
    unsupported_choices = ("required",)  # with two tools; one tool is forced instead

    def build(self, server: FakeServer, **kw: Any) -> HostedChatModel:
        from agentplex.model.dashscope import DashScopeChatModel

        return DashScopeChatModel(self.model_name, api_key="ds-key",
                                  base_http_api_url=server.url + "/api/v1", **kw)

    @staticmethod
    def answer(message: dict[str, Any], finish: str = "stop", usage: tuple[int, int] = (12, 5)
               ) -> dict[str, Any]:
        return {"output": {"choices": [{"finish_reason": finish,
                                        "message": {"role": "assistant", **message}}]},
                "usage": {"input_tokens": usage[0], "output_tokens": usage[1],
                          "total_tokens": sum(usage)},
                "request_id": "req-1"}

    def text(self, server: FakeServer, text: str, usage: tuple[int, int] = (12, 5),
             thinking: str | None = None) -> None:
        extra = {"reasoning_content": thinking} if thinking else {}
        server.json(self.answer({"content": text, **extra}, usage=usage))

    @staticmethod
    def frames(bodies: list[dict[str, Any]]) -> list[str]:
        return [f"id:{i}\nevent:result\n:HTTP_STATUS/200\ndata:{json.dumps(b)}\n\n"
                for i, b in enumerate(bodies, 1)]

    def stream_text(self, server: FakeServer, pieces: list[str], usage: tuple[int, int] = (12, 5),
                    thinking: list[str] = (), truncate: bool = False) -> None:  # type: ignore[assignment]
        bodies = [self.answer({"content": "", "reasoning_content": t}, "null", (usage[0], i))
                  for i, t in enumerate(thinking)]
        bodies += [self.answer({"content": p}, "null", (usage[0], i))
                   for i, p in enumerate(pieces)]
        if not truncate:
            bodies.append(self.answer({"content": ""}, "stop", usage))
        server.stream(self.frames(bodies), truncate=truncate)

    def tool_call(self, server: FakeServer, call: Tool) -> None:
        server.json(self.tool_answer(call[0], call[1], json.dumps(call[2])))

    def tool_answer(self, cid: str, name: str, arguments: str) -> dict[str, Any]:
        return self.answer({"content": "", "tool_calls": [
            {"index": 0, "id": cid, "type": "function",
             "function": {"name": name, "arguments": arguments}}]}, "tool_calls")

    def stream_tool_call(self, server: FakeServer, call: Tool) -> None:
        raw = json.dumps(call[2])
        head = {"content": "", "tool_calls": [{"index": 0, "id": call[0], "type": "function",
                                               "function": {"name": call[1],
                                                            "arguments": raw[:5]}}]}
        tail = {"content": "", "tool_calls": [{"index": 0, "id": "", "type": "function",
                                               "function": {"arguments": raw[5:]}}]}
        server.stream(self.frames([self.answer(head, "null"), self.answer(tail, "null"),
                                   self.answer({"content": ""}, "tool_calls")]))

    def structured(self, server: FakeServer, payload: str) -> None:
        server.json(self.tool_answer("call_s", "City", payload))

    def error(self, server: FakeServer, status: int, message: str,
              headers: dict[str, str] | None = None) -> None:
        code = {429: "Throttling.RateQuota", 401: "InvalidApiKey"}.get(status, "InternalError")
        server.json({"code": code, "message": message, "request_id": "req-e"}, status, headers)

    def sent_tool_choice(self, body: dict[str, Any]) -> Any:
        return body["parameters"].get("tool_choice")

    def sent_tool_names(self, body: dict[str, Any]) -> list[str]:
        return [t["function"]["name"] for t in body["parameters"].get("tools", [])]

    def sent_schema(self, body: dict[str, Any]) -> dict[str, Any] | None:
        tools = body["parameters"].get("tools", [])
        assert body["parameters"].get("tool_choice") == {"type": "function",
                                                         "function": {"name": "City"}}
        return next((t["function"]["parameters"] for t in tools
                     if t["function"]["name"] == "City"), None)

    def sent_image(self, body: dict[str, Any]) -> str:
        return str(next(p["image"] for m in body["input"]["messages"]
                        for p in m["content"] if "image" in p)).split(",")[-1]

    def sent_texts(self, body: dict[str, Any]) -> list[tuple[str, str]]:
        out = []
        for m in body["input"]["messages"]:
            content = m.get("content")
            if isinstance(content, str) and content:
                out.append((m["role"], content))
            elif isinstance(content, list):
                out += [(m["role"], p["text"]) for p in content if "text" in p]
        return out


WIRES.append(DashScopeWire())


class LiteLLMWire(OpenAIWire):
    """LiteLLM's ``openai/`` route to an OpenAI-compatible server (when LiteLLM is installed)."""

    name = "litellm"
    model_name = "openai/test-model"
    retry_after_supported = False  # LiteLLM's RateLimitError drops the server's Retry-After

    def build(self, server: FakeServer, **kw: Any) -> HostedChatModel:
        from agentplex.model.litellm import LiteLLMChatModel

        return LiteLLMChatModel(self.model_name, api_key="k", api_base=server.url + "/v1", **kw)


if importlib.util.find_spec("litellm") is not None:  # not imported here: it is slow
    WIRES.append(LiteLLMWire())
