"""What only some providers do: signatures, provider options, multimodal routing, env vars."""

from __future__ import annotations

from typing import Any

import pytest

from agentplex.message import (
    AudioBlock,
    Base64Source,
    ImageBlock,
    Msg,
    TextBlock,
    ToolResultBlock,
    ToolUseBlock,
    URLSource,
    VideoBlock,
)
from agentplex.model import ChatModelBase, UnsupportedOptionError, init_chat_model
from tests.support.model_inputs import PNG_B64, WEATHER_TOOL, history, image_history
from tests.support.provider_server import FakeServer
from tests.support.provider_wires import AnthropicWire, DashScopeWire, GeminiWire, OllamaWire

pytestmark = pytest.mark.anyio


def tool_turns() -> list[Msg]:
    return [Msg("assistant", [ToolUseBlock(id="c1", name="get_weather", input={"city": "Oslo"})],
                "assistant"),
            Msg("user", [ToolResultBlock(id="c1", name="get_weather", output="sunny")], "user")]


async def test_anthropic_thinking_signature_survives_round_trip(server: FakeServer) -> None:
    wire = AnthropicWire()
    wire.text(server, "42", thinking="Six times seven.")
    model = wire.make(server, thinking={"type": "enabled", "budget_tokens": 1024})
    first = await model(history())
    assert server.last.json["thinking"] == {"type": "enabled", "budget_tokens": 1024}
    wire.text(server, "ok")
    await model([*history(), Msg("claude", first.content, "assistant"),  # type: ignore[union-attr]
                 Msg("user", "and?", "user")])
    assert server.last.json["messages"][1] == {"role": "assistant", "content": [
        {"type": "thinking", "thinking": "Six times seven.", "signature": "sig-abc"},
        {"type": "text", "text": "42"}]}


async def test_anthropic_streamed_signature(server: FakeServer) -> None:
    wire = AnthropicWire()
    wire.stream_text(server, ["4", "2"], thinking=["Six ", "times seven."])
    out = [c async for c in await wire.make(server, stream=True)(history())]  # type: ignore[union-attr]
    assert out[-1].content[0].signature == "sig-abc"  # type: ignore[union-attr]


async def test_anthropic_tool_turns_and_late_system_message(server: FakeServer) -> None:
    wire = AnthropicWire()
    wire.text(server, "ok")
    await wire.make(server)([*history(), *tool_turns(), Msg("system", "Wrap up.", "system")])
    assert server.last.json["system"] == "You are terse."
    assert server.last.json["messages"][1:] == [
        {"role": "assistant", "content": [{"type": "tool_use", "id": "c1", "name": "get_weather",
                                           "input": {"city": "Oslo"}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "c1", "content": "sunny", "is_error": False},
            {"type": "text", "text": "Wrap up."}]},
    ]


async def test_anthropic_refuses_forced_tools_while_thinking(server: FakeServer) -> None:
    model = AnthropicWire().make(server, thinking={"type": "enabled", "budget_tokens": 1024})
    with pytest.raises(UnsupportedOptionError, match=r"anthropic.*thinking"):
        await model(history(), tools=[WEATHER_TOOL], tool_choice="required")


async def test_gemini_thought_signature_and_tool_turns(server: FakeServer) -> None:
    wire = GeminiWire()
    wire.text(server, "42", thinking="Six times seven.")
    model = wire.make(server, thinking_config={"include_thoughts": True, "thinking_budget": 64})
    first = await model(history())
    sent = server.last.json["generationConfig"]["thinkingConfig"]
    # google-genai sends this one in snake_case; the API takes either spelling
    assert {k.replace("_", "").lower(): v for k, v in sent.items()} == {
        "includethoughts": True, "thinkingbudget": 64}
    wire.text(server, "ok")
    await model([*history(), Msg("assistant", first.content, "assistant"),  # type: ignore[union-attr]
                 *tool_turns()])
    contents = server.last.json["contents"]
    assert contents[1] == {"role": "model", "parts": [
        {"text": "Six times seven.", "thought": True, "thoughtSignature": "c2lnLWFiYw=="},
        {"text": "42"},
        {"functionCall": {"id": "c1", "name": "get_weather", "args": {"city": "Oslo"}}}]}
    assert contents[2] == {"role": "user", "parts": [{"functionResponse": {
        "id": "c1", "name": "get_weather", "response": {"output": "sunny"}}}]}


async def test_ollama_options_and_tool_turns(server: FakeServer) -> None:
    wire = OllamaWire()
    wire.text(server, "ok")
    await wire.make(server, options={"temperature": 0}, keep_alive="1m", enable_thinking=True)(
        [*history(), *tool_turns()])
    body = server.last.json
    assert (body["options"], body["keep_alive"], body["think"]) == ({"temperature": 0}, "1m", True)
    assert body["messages"][2:] == [
        {"role": "assistant",
         "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Oslo"}}}]},
        {"role": "tool", "tool_name": "get_weather", "content": "sunny"}]


async def test_ollama_refuses_remote_images(server: FakeServer) -> None:
    image = ImageBlock(source=URLSource(url="https://example.com/cat.png"))
    with pytest.raises(UnsupportedOptionError, match="inline images"):
        await OllamaWire().make(server)([Msg("user", [image], "user")])


async def test_dashscope_routes_images_to_the_multimodal_api(server: FakeServer) -> None:
    wire = DashScopeWire()
    server.json(wire.answer({"content": [{"text": "A pixel."}]}))
    response = await wire.make(server, enable_thinking=False)(image_history())
    assert response.text == "A pixel."  # type: ignore[union-attr]
    assert server.last.path == "/api/v1/services/aigc/multimodal-generation/generation"
    assert server.last.json["input"]["messages"][0]["content"] == [
        {"text": "What is this?"}, {"image": f"data:image/png;base64,{PNG_B64}"}]
    assert server.last.json["parameters"]["enable_thinking"] is False


async def test_dashscope_required_with_one_tool_forces_it(server: FakeServer) -> None:
    wire = DashScopeWire()
    wire.text(server, "ok")
    await wire.make(server)(history(), tools=[WEATHER_TOOL], tool_choice="required")
    assert server.last.json["parameters"]["tool_choice"] == {
        "type": "function", "function": {"name": "get_weather"}}


@pytest.mark.parametrize("block", [
    VideoBlock(source=URLSource(url="https://example.com/v.mp4")),
])
async def test_openai_refuses_video(server: FakeServer, block: Any) -> None:
    from tests.support.provider_wires import OpenAIWire

    with pytest.raises(UnsupportedOptionError, match="VideoBlock"):
        await OpenAIWire().make(server)([Msg("user", [TextBlock(text="see"), block], "user")])


async def test_anthropic_refuses_audio(server: FakeServer) -> None:
    audio = AudioBlock(source=Base64Source(media_type="audio/wav", data="UklGRg=="))
    with pytest.raises(UnsupportedOptionError, match="audio"):
        await AnthropicWire().make(server)([Msg("user", [audio], "user")])


@pytest.mark.parametrize(("spec", "cls", "env"), [
    ("openai:gpt-4o-mini", "OpenAIChatModel", {"OPENAI_API_KEY": "k"}),
    ("azure_openai:my-deployment", "AzureOpenAIChatModel",
     {"AZURE_OPENAI_API_KEY": "k", "AZURE_OPENAI_ENDPOINT": "https://x.openai.azure.com"}),
    ("anthropic:claude-sonnet-4-5", "AnthropicChatModel", {"ANTHROPIC_API_KEY": "k"}),
    ("gemini:gemini-2.5-flash", "GeminiChatModel", {"GEMINI_API_KEY": "k"}),
    ("dashscope:qwen-plus", "DashScopeChatModel", {"DASHSCOPE_API_KEY": "k"}),
    ("ollama:qwen3:8b", "OllamaChatModel", {}),
    ("huggingface:meta-llama/Llama-3.1-8B-Instruct", "HuggingFaceChatModel", {"HF_TOKEN": "k"}),
])
async def test_init_chat_model_knows_every_provider(
    spec: str, cls: str, env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    model = init_chat_model(spec)
    assert type(model).__name__ == cls
    assert isinstance(model, ChatModelBase)
    assert model.model_name == spec.split(":", 1)[1]
    await model.aclose()  # type: ignore[attr-defined]


async def test_azure_reads_endpoint_and_key_from_environment(
    server: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.support.openai_wire import completion

    monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", server.url)
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", "az-key")
    monkeypatch.setenv("OPENAI_API_VERSION", "2025-01-01-preview")
    model = server.track(init_chat_model("azure_openai:dep-1", max_retries=0))
    server.json(completion("hi"))
    await model(history())
    assert server.last.path == "/openai/deployments/dep-1/chat/completions"
    assert server.last.query == {"api-version": ["2025-01-01-preview"]}
    assert server.last.headers["api-key"] == "az-key"


def test_azure_without_endpoint_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from agentplex.model.azure import AzureOpenAIChatModel

    monkeypatch.delenv("AZURE_OPENAI_ENDPOINT", raising=False)
    with pytest.raises(ValueError, match="AZURE_OPENAI_ENDPOINT"):
        AzureOpenAIChatModel("dep", api_key="k")
